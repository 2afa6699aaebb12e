package harness

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
)

// Setup is what the bench and the fault suite do before their first
// daemon: check the binary, make the scratch directory (kept and named
// when keep is set), and print the machine and the command line. cleanup
// removes the scratch directory unless it is kept.
func Setup(bridge, name string, args []string, keep bool, out io.Writer) (m Machine, scratch string, cleanup func(), err error) {
	if _, err := os.Stat(bridge); err != nil {
		return m, "", nil, fmt.Errorf("bridge binary: %w (run make build first)", err)
	}
	scratch, err = os.MkdirTemp("", "pibridge-"+name+"-")
	if err != nil {
		return m, "", nil, err
	}
	cleanup = func() { os.RemoveAll(scratch) }
	if keep {
		fmt.Fprintln(out, "scratch:", scratch)
		cleanup = func() {}
	}
	m = DescribeMachine()
	fmt.Fprintf(out, "machine: %s, %d CPUs (nproc), %s %s/%s\n", m.CPU, m.NCPU, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(out, "command: %s %s\n", name, strings.Join(args, " "))
	return m, scratch, cleanup, nil
}

// Main is the main of the bench, the fault suite and the fleet run: run
// under a context that SIGINT or SIGTERM ends, its error on stderr after
// the command's name, and exit status 1 then.
func Main(name string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

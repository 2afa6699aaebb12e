// Command bridge runs pibridge: GPIO and sensors in, MQTT and a WebSocket
// panel out, commands back. With no -config it runs the built-in demo.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
)

// version is stamped by the Makefile from git describe.
var version = "dev"

// exitCode lets run say "bad config" (2) apart from a runtime failure (1).
type exitCode int

func main() {
	tuneGC(os.Getenv)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitStatus(err, os.Stderr))
}

func exitStatus(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ce *configError
	if errors.As(err, &ce) {
		for _, line := range strings.Split(ce.err.Error(), "\n") {
			fmt.Fprintf(stderr, "config: %s\n", line)
		}
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var usage usageError
	if errors.As(err, &usage) {
		return 2
	}
	fmt.Fprintf(stderr, "bridge: %v\n", err)
	return 1
}

// configError marks problems in the configuration: exit status 2.
type configError struct{ err error }

func (e *configError) Error() string { return "config: " + e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

type usageError struct{ error }

type options struct {
	configPath string
	check      bool
	safeState  bool
	version    bool
	logLevel   string
	logFormat  string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bridge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.configPath, "config", "", "configuration `file` (YAML); none runs the built-in demo")
	fs.BoolVar(&o.check, "check", false, "validate the configuration, print the signal/pin table and exit")
	fs.BoolVar(&o.safeState, "safe-state", false, "drive every configured output and pwm to its safe state and exit (no broker, no HTTP); systemd runs it after every stop")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, usageError{err}
	}
	if o.check && o.safeState {
		fmt.Fprintln(stderr, "bridge: -check and -safe-state do not go together")
		return o, usageError{errors.New("-check and -safe-state do not go together")}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bridge: unexpected argument %q\n", fs.Arg(0))
		return o, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return o, nil
}

func newLogger(o options, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, usageError{fmt.Errorf("-log-level %q: want debug, info, warn or error", o.logLevel)}
	}
	hopts := &slog.HandlerOptions{Level: level}
	switch o.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	}
	return nil, usageError{fmt.Errorf("-log-format %q: want text or json", o.logFormat)}
}

func versionString() string {
	return fmt.Sprintf("bridge %s (%s %s/%s)", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

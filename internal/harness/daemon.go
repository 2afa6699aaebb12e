// Package harness runs the real bridge binary as a child process on
// loopback for the benchmarks and the fault suite: free ports, a fresh
// state directory, taskset pinning, and /proc figures (memory, CPU).
package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"pibridge/internal/testkit"
)

type Machine struct {
	CPU  string
	NCPU int
}

func DescribeMachine() Machine {
	m := Machine{CPU: "unknown CPU", NCPU: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// pinning puts the daemon and the load generator on disjoint cores with
// taskset, so neither steals the other's CPU time. With too few cores the
// daemon gets fewer cores than GOMAXPROCS, and describe says so.
type Pinning struct {
	Taskset string // path, "" when unavailable
	Daemon  string // cpu list for taskset -c
	Load    string
	Note    string
}

func PlanPinning(procs, ncpu int) Pinning {
	p := Pinning{}
	path, err := exec.LookPath("taskset")
	switch {
	case err != nil:
		p.Note = "taskset not found: daemon and load generator NOT pinned"
		return p
	case ncpu < 2:
		p.Note = "one CPU: daemon and load generator NOT pinned"
		return p
	}
	p.Taskset = path
	n := min(procs, ncpu-1)
	p.Daemon = cpuRange(0, n)
	p.Load = cpuRange(n, ncpu)
	if n < procs {
		p.Note = fmt.Sprintf("only %d CPUs: the daemon runs GOMAXPROCS=%d on %d core(s)", ncpu, procs, n)
	}
	return p
}

func cpuRange(from, to int) string {
	if to-from == 1 {
		return strconv.Itoa(from)
	}
	return fmt.Sprintf("%d-%d", from, to-1)
}

func (p Pinning) Describe() string {
	if p.Taskset == "" {
		return p.Note
	}
	s := fmt.Sprintf("taskset: daemon on CPU %s, load generator on CPU %s", p.Daemon, p.Load)
	if p.Note != "" {
		s += " (" + p.Note + ")"
	}
	return s
}

// pinSelf moves every thread of this process onto the load generator's
// cores; threads started later inherit the mask.
func (p Pinning) PinSelf() error {
	if p.Taskset == "" {
		return nil
	}
	out, err := exec.Command(p.Taskset, "-a", "-cp", p.Load, strconv.Itoa(os.Getpid())).CombinedOutput()
	if err != nil {
		return fmt.Errorf("taskset: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// DaemonSpec says how to start bridges: which binary, GOMAXPROCS, the
// cores, and the directory that holds each run's config, state and log.
type DaemonSpec struct {
	Bin     string
	Procs   int
	Pin     Pinning
	Scratch string
	// Env is added to every daemon's environment (KEY=value).
	Env []string
}

// Daemon is one running bridge.
type Daemon struct {
	Cmd      *exec.Cmd
	PID      int
	Dir      string // config, state and log of this run
	HTTPAddr string
	MQTTAddr string // the embedded broker's listener
	HTTPURL  string
	WSURL    string
	Ready    time.Duration // spawn → first /healthz 200
	LogPath  string
	done     chan struct{} // closed when the process has exited
	exitErr  error
}

// FreePort returns a loopback address nobody listens on right now.
var FreePort = testkit.FreePort

// start runs the bridge with config (YAML; "" for the built-in demo) on
// free loopback ports and a fresh state directory, and returns once
// /healthz answers 200.
func (d DaemonSpec) Start(ctx context.Context, name, config string) (*Daemon, error) {
	dir, err := os.MkdirTemp(d.Scratch, name+"-")
	if err != nil {
		return nil, err
	}
	httpAddr, err := FreePort()
	if err != nil {
		return nil, err
	}
	mqttAddr, err := FreePort()
	if err != nil {
		return nil, err
	}
	bin, err := filepath.Abs(d.Bin)
	if err != nil {
		return nil, err
	}
	var argv []string
	if d.Pin.Taskset != "" {
		// taskset execs the bridge: the pid stays the bridge's.
		argv = append(argv, d.Pin.Taskset, "-c", d.Pin.Daemon)
	}
	argv = append(argv, bin)
	if config != "" {
		path := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
			return nil, err
		}
		argv = append(argv, "-config", path)
	}
	logPath := filepath.Join(dir, "bridge.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(),
		"GOMAXPROCS="+strconv.Itoa(d.Procs),
		"PIBRIDGE_HTTP_LISTEN="+httpAddr,
		"PIBRIDGE_MQTT_EMBEDDED_LISTEN="+mqttAddr,
		"PIBRIDGE_STATE_DIR="+filepath.Join(dir, "state"),
	)
	cmd.Env = append(cmd.Env, d.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	dm := &Daemon{Cmd: cmd, Dir: dir, HTTPAddr: httpAddr, MQTTAddr: mqttAddr, HTTPURL: "http://" + httpAddr, WSURL: "ws://" + httpAddr + "/ws", LogPath: logPath, done: make(chan struct{})}
	if err := dm.spawn(ctx, logf); err != nil {
		return nil, err
	}
	return dm, nil
}

// Stop sends SIGTERM and waits for the exit, SIGKILL after 10 s. It
// returns the exit error (nil for a clean exit 0); calling it again is
// harmless.
func (dm *Daemon) Stop() error {
	_ = dm.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-dm.done:
	case <-time.After(10 * time.Second):
		_ = dm.Cmd.Process.Kill()
		<-dm.done
	}
	return dm.exitErr
}

// Kill sends SIGKILL and waits until the process is gone.
func (dm *Daemon) Kill() {
	_ = dm.Cmd.Process.Kill()
	<-dm.done
}

// Done is closed once the process has exited.
func (dm *Daemon) Done() <-chan struct{} { return dm.done }

func Tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// memory is /proc/<pid>/smaps_rollup in bytes.
type Memory struct {
	RSS, PSS, Private int64
}

func ReadMemory(pid int) (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return Memory{}, err
	}
	defer f.Close()
	var m Memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[2] != "kB" {
			continue
		}
		kb, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			continue
		}
		switch fields[0] {
		case "Rss:":
			m.RSS = kb << 10
		case "Pss:":
			m.PSS = kb << 10
		case "Private_Clean:", "Private_Dirty:":
			m.Private += kb << 10
		}
	}
	if m.RSS == 0 {
		return m, errors.New("smaps_rollup: no Rss line")
	}
	return m, sc.Err()
}

// clockTick is USER_HZ: utime and stime in /proc/<pid>/stat count these.
// It is 100 on every Linux ABI Go supports.
const ClockTick = 10 * time.Millisecond

// Syscalls returns the read and write system calls pid has made so far
// (syscr and syscw of /proc/<pid>/io: read, readv, recvmsg and the like;
// write, writev, sendmsg and the like).
func Syscalls(pid int) (reads, writes int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0, err
	}
	seen := 0
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		switch k {
		case "syscr":
			reads, err = strconv.ParseInt(v, 10, 64)
			seen++
		case "syscw":
			writes, err = strconv.ParseInt(v, 10, 64)
			seen++
		}
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/io %s: %w", pid, k, err)
		}
	}
	if seen != 2 {
		return 0, 0, fmt.Errorf("/proc/%d/io: no syscr/syscw", pid)
	}
	return reads, writes, nil
}

// CPUTime is utime+stime from /proc/<pid>/stat.
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: fields count
	// from the last ')'. utime and stime are fields 14 and 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, errors.New("stat: no ')'")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("stat: too few fields")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(u+s) * ClockTick, nil
}

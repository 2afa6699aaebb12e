package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type machine struct {
	cpu  string
	ncpu int
}

func describeMachine() machine {
	m := machine{cpu: "unknown CPU", ncpu: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// pinning puts the daemon and the load generator on disjoint cores with
// taskset, so neither steals the other's CPU time. With too few cores the
// daemon gets fewer cores than GOMAXPROCS, and describe says so.
type pinning struct {
	taskset string // path, "" when unavailable
	daemon  string // cpu list for taskset -c
	load    string
	note    string
}

func planPinning(procs, ncpu int) pinning {
	p := pinning{}
	path, err := exec.LookPath("taskset")
	switch {
	case err != nil:
		p.note = "taskset not found: daemon and load generator NOT pinned"
		return p
	case ncpu < 2:
		p.note = "one CPU: daemon and load generator NOT pinned"
		return p
	}
	p.taskset = path
	n := min(procs, ncpu-1)
	p.daemon = cpuRange(0, n)
	p.load = cpuRange(n, ncpu)
	if n < procs {
		p.note = fmt.Sprintf("only %d CPUs: the daemon runs GOMAXPROCS=%d on %d core(s)", ncpu, procs, n)
	}
	return p
}

func cpuRange(from, to int) string {
	if to-from == 1 {
		return strconv.Itoa(from)
	}
	return fmt.Sprintf("%d-%d", from, to-1)
}

func (p pinning) describe() string {
	if p.taskset == "" {
		return p.note
	}
	s := fmt.Sprintf("taskset: daemon on CPU %s, load generator on CPU %s", p.daemon, p.load)
	if p.note != "" {
		s += " (" + p.note + ")"
	}
	return s
}

// pinSelf moves every thread of this process onto the load generator's
// cores; threads started later inherit the mask.
func (p pinning) pinSelf() error {
	if p.taskset == "" {
		return nil
	}
	out, err := exec.Command(p.taskset, "-a", "-cp", p.load, strconv.Itoa(os.Getpid())).CombinedOutput()
	if err != nil {
		return fmt.Errorf("taskset: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

type daemonSpec struct {
	bin     string
	procs   int
	pin     pinning
	scratch string
}

// daemon is one running bridge.
type daemon struct {
	cmd     *exec.Cmd
	pid     int
	httpURL string
	wsURL   string
	ready   time.Duration // spawn → first /healthz 200
	logPath string
	done    chan error
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// start runs the bridge with config (YAML; "" for the built-in demo) on
// free loopback ports and a fresh state directory, and returns once
// /healthz answers 200.
func (d daemonSpec) start(ctx context.Context, name, config string) (*daemon, error) {
	dir, err := os.MkdirTemp(d.scratch, name+"-")
	if err != nil {
		return nil, err
	}
	httpAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	mqttAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	bin, err := filepath.Abs(d.bin)
	if err != nil {
		return nil, err
	}
	var argv []string
	if d.pin.taskset != "" {
		// taskset execs the bridge: the pid stays the bridge's.
		argv = append(argv, d.pin.taskset, "-c", d.pin.daemon)
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
		"GOMAXPROCS="+strconv.Itoa(d.procs),
		"PIBRIDGE_HTTP_LISTEN="+httpAddr,
		"PIBRIDGE_MQTT_EMBEDDED_LISTEN="+mqttAddr,
		"PIBRIDGE_STATE_DIR="+filepath.Join(dir, "state"),
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	dm := &daemon{cmd: cmd, httpURL: "http://" + httpAddr, wsURL: "ws://" + httpAddr + "/ws", logPath: logPath, done: make(chan error, 1)}

	client := &http.Client{Timeout: 200 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	dm.pid = cmd.Process.Pid
	go func() { dm.done <- cmd.Wait(); logf.Close() }()
	deadline := t0.Add(15 * time.Second)
	for {
		resp, err := client.Get(dm.httpURL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				dm.ready = time.Since(t0)
				return dm, nil
			}
		}
		select {
		case err := <-dm.done:
			return nil, fmt.Errorf("bridge exited before ready (%v); log: %s", err, tail(logPath))
		case <-ctx.Done():
			dm.stop()
			return nil, ctx.Err()
		case <-time.After(500 * time.Microsecond):
		}
		if time.Now().After(deadline) {
			dm.stop()
			return nil, fmt.Errorf("not ready after 15s; log: %s", tail(logPath))
		}
	}
}

// stop sends SIGTERM and waits for a clean exit, SIGKILL after 10 s.
func (dm *daemon) stop() {
	_ = dm.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-dm.done:
	case <-time.After(10 * time.Second):
		_ = dm.cmd.Process.Kill()
		<-dm.done
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// memory is /proc/<pid>/smaps_rollup in bytes.
type memory struct {
	rss, pss, private int64
}

func readMemory(pid int) (memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return memory{}, err
	}
	defer f.Close()
	var m memory
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
			m.rss = kb << 10
		case "Pss:":
			m.pss = kb << 10
		case "Private_Clean:", "Private_Dirty:":
			m.private += kb << 10
		}
	}
	if m.rss == 0 {
		return m, errors.New("smaps_rollup: no Rss line")
	}
	return m, sc.Err()
}

// clockTick is USER_HZ: utime and stime in /proc/<pid>/stat count these.
// It is 100 on every Linux ABI Go supports.
const clockTick = 10 * time.Millisecond

// cpuTime is utime+stime from /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
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
	return time.Duration(u+s) * clockTick, nil
}

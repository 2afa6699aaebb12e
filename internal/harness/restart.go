package harness

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"time"
)

// Restart starts the same bridge again, after it has exited (a SIGKILL in
// the fault suite): the same argv and environment, so the same config,
// state directory and ports. The log goes on in the same file. It returns
// the new process once /healthz answers 200; Ready is spawn → that.
func (dm *Daemon) Restart(ctx context.Context) (*Daemon, error) {
	select {
	case <-dm.done:
	default:
		return nil, fmt.Errorf("restart: pid %d is still running", dm.PID)
	}
	logf, err := os.OpenFile(dm.LogPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(dm.Cmd.Path, dm.Cmd.Args[1:]...)
	cmd.Env = dm.Cmd.Env
	cmd.Stdout, cmd.Stderr = logf, logf
	nd := &Daemon{Cmd: cmd, Dir: dm.Dir, HTTPAddr: dm.HTTPAddr, MQTTAddr: dm.MQTTAddr, HTTPURL: dm.HTTPURL,
		WSURL: dm.WSURL, LogPath: dm.LogPath, done: make(chan struct{})}
	if err := nd.spawn(ctx, logf); err != nil {
		return nil, err
	}
	return nd, nil
}

// spawn starts dm's command, its output going to logf, which is closed once
// the process has exited, and waits until it is ready: Ready is spawn →
// /healthz 200.
func (dm *Daemon) spawn(ctx context.Context, logf *os.File) error {
	t0 := time.Now()
	if err := dm.Cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	dm.PID = dm.Cmd.Process.Pid
	go func() { dm.exitErr = dm.Cmd.Wait(); logf.Close(); close(dm.done) }()
	return dm.waitReady(ctx, t0, 15*time.Second)
}

// waitReady polls /healthz until it answers 200, the process exits, ctx
// ends or the deadline passes; on failure the process is stopped.
func (dm *Daemon) waitReady(ctx context.Context, t0 time.Time, limit time.Duration) error {
	client := &http.Client{Timeout: 200 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := t0.Add(limit)
	for {
		resp, err := client.Get(dm.HTTPURL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				dm.Ready = time.Since(t0)
				return nil
			}
		}
		select {
		case <-dm.done:
			return fmt.Errorf("bridge exited before ready (%v); log: %s", dm.exitErr, Tail(dm.LogPath))
		case <-ctx.Done():
			dm.Stop()
			return ctx.Err()
		case <-time.After(500 * time.Microsecond): // polling the port, not synchronising
		}
		if time.Now().After(deadline) {
			dm.Stop()
			return fmt.Errorf("not ready after %s; log: %s", limit, Tail(dm.LogPath))
		}
	}
}

// Exited reports whether the process has ended.
func (dm *Daemon) Exited() bool {
	select {
	case <-dm.done:
		return true
	default:
		return false
	}
}

package testkit

import (
	"io"
	"os"
	"os/exec"
	"testing"
)

// Child starts this test binary again, running only the test named test
// (or none: ""), with env added to its environment: a process the test can
// SIGKILL mid-write. The caller reads stdout to its end and Waits; stderr
// collects the child's complaints for the failure message. A child still
// running when the test ends is killed.
func Child(t testing.TB, test string, env ...string) (cmd *exec.Cmd, stdout io.Reader, stderr *LockedBuffer) {
	t.Helper()
	cmd = exec.Command(os.Args[0], "-test.run=^"+test+"$")
	cmd.Env = append(os.Environ(), env...)
	stderr = &LockedBuffer{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd, out, stderr
}

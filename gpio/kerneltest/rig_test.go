package kerneltest

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	//go:embed guest/init
	guestInit []byte
	//go:embed guest/chip
	guestChip []byte
	//go:embed guest/cgi
	guestCGI []byte
)

// rigPackages are the Debian packages the rig needs on the host, as the
// commands that show them: one message can then name all that is missing.
var rigPackages = []struct{ cmd, pkg string }{
	{"qemu-system-aarch64", "qemu-system-arm"},
	{"aarch64-linux-gnu-gcc-12", "gcc-12-aarch64-linux-gnu"},
	{"/usr/lib/linux-kbuild-6.1/scripts", "linux-kbuild-6.1"},
	{"make", "make"},
	{"dpkg-deb", "dpkg"},
	{"apt-get", "apt"},
}

// The guest's fixed ports, forwarded to free loopback ports on the host.
const (
	guestAgentPort  = 8081
	guestBridgePort = 8080
	guestMQTTPort   = 1883
)

// rig is the booted guest every test of the package shares.
type rig struct {
	agent, bridge, mqtt string // host addresses forwarded into the guest
	qemu                *exec.Cmd
	console             *lockedFile
	bootTime            time.Duration
}

var (
	theRig  *rig
	rigErr  error
	rigOnce sync.Once
)

// TestMain boots the guest once for the package's tests and powers it off
// after them.
func TestMain(m *testing.M) {
	code := m.Run()
	if theRig != nil {
		theRig.stop()
	}
	os.Exit(code)
}

// getRig boots the guest on first use; every test calls it, so a rig that
// cannot boot fails each test with the reason, never skips.
func getRig(t *testing.T) *rig {
	t.Helper()
	rigOnce.Do(func() { theRig, rigErr = boot() })
	if rigErr != nil {
		t.Fatal(rigErr)
	}
	return theRig
}

// cacheDir is where build.sh keeps the kernel, busybox and gpio-sim:
// $PIBRIDGE_KERNEL_RIG_CACHE, else $XDG_CACHE_HOME/pibridge/kernel-rig.
func cacheDir() (string, error) {
	if d := os.Getenv("PIBRIDGE_KERNEL_RIG_CACHE"); d != "" {
		return d, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("kernel rig: no cache directory (set PIBRIDGE_KERNEL_RIG_CACHE): %w", err)
	}
	return filepath.Join(base, "pibridge", "kernel-rig"), nil
}

func missingPackages(needBuild bool) []string {
	var miss []string
	for _, p := range rigPackages {
		if !needBuild && p.cmd != "qemu-system-aarch64" {
			continue
		}
		if strings.HasPrefix(p.cmd, "/") {
			if _, err := os.Stat(p.cmd); err != nil {
				miss = append(miss, p.pkg)
			}
		} else if _, err := exec.LookPath(p.cmd); err != nil {
			miss = append(miss, p.pkg)
		}
	}
	return miss
}

// ensureCache runs build.sh once (under a lock, so that two test runs do
// not build at the same time) when the cache is not ready.
func ensureCache(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	ready := filepath.Join(dir, "ready")
	if _, err := os.Stat(ready); err == nil {
		if miss := missingPackages(false); len(miss) > 0 {
			return fmt.Errorf("kernel rig needs %s: run `make test-deps` or `apt-get install -y %s`", strings.Join(miss, ", "), strings.Join(miss, " "))
		}
		return nil
	}
	if miss := missingPackages(true); len(miss) > 0 {
		return fmt.Errorf("kernel rig needs %s to build its cache in %s: run `make test-deps` (as root) or `dpkg --add-architecture arm64 && apt-get update && apt-get install -y %s`", strings.Join(miss, ", "), dir, strings.Join(miss, " "))
	}
	script, _ := filepath.Abs("build.sh")
	cmd := exec.Command("sh", script, dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("kernel rig: %s %s failed (%v); it needs `dpkg --add-architecture arm64` and apt-get access to Debian (make test-deps does both):\n%s", script, dir, err, tail(out, 40))
	}
	return nil
}

func tail(b []byte, lines int) string {
	s := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(s) > lines {
		s = s[len(s)-lines:]
	}
	return strings.Join(s, "\n")
}

// bridgeBinary returns the arm64 bridge: the one `make cross` built
// (PIBRIDGE_CROSS_DIR), else a fresh build.
func bridgeBinary(tmp string) (string, error) {
	if d := os.Getenv("PIBRIDGE_CROSS_DIR"); d != "" {
		p := filepath.Join(d, "bridge-arm64")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	bin := filepath.Join(tmp, "bridge-arm64")
	cmd := exec.Command("go", "build", "-trimpath", "-tags", "nethttpomithttp2", "-o", bin, "pibridge/cmd/bridge")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build bridge-arm64: %v\n%s", err, out)
	}
	return bin, nil
}

// initramfs packs the guest: busybox, the modules, the bridge, /init, the
// chip script and the agent.
func initramfs(cache, bridge, out string) error {
	var a cpioWriter
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "run", "scratch", "lib", "lib/modules", "www", "www/cgi-bin", "etc"} {
		a.dir(d)
	}
	a.node("dev/console", syscall.S_IFCHR|0o600, 5, 1)
	add := func(dst, src string, mode uint32) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		a.file(dst, mode, b)
		return nil
	}
	if err := add("bin/busybox", filepath.Join(cache, "busybox"), 0o755); err != nil {
		return err
	}
	if err := add("bin/bridge", bridge, 0o755); err != nil {
		return err
	}
	mods, err := filepath.Glob(filepath.Join(cache, "modules", "*.ko"))
	if err != nil || len(mods) == 0 {
		return fmt.Errorf("kernel rig: no modules in %s/modules: remove %s/ready to rebuild", cache, cache)
	}
	for _, m := range mods {
		if err := add("lib/modules/"+filepath.Base(m), m, 0o644); err != nil {
			return err
		}
	}
	a.file("init", 0o755, guestInit)
	a.file("bin/chip", 0o755, guestChip)
	a.file("www/cgi-bin/sh", 0o755, guestCGI)
	return os.WriteFile(out, a.finish(), 0o644)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func boot() (*rig, error) {
	if _, err := exec.LookPath("qemu-system-aarch64"); err != nil {
		return nil, errors.New("kernel rig needs qemu-system-aarch64: run `make test-deps` or `apt-get install -y qemu-system-arm`")
	}
	cache, err := cacheDir()
	if err != nil {
		return nil, err
	}
	if err := ensureCache(cache); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "kernel-rig-")
	if err != nil {
		return nil, err
	}
	bridge, err := bridgeBinary(tmp)
	if err != nil {
		return nil, err
	}
	initrd := filepath.Join(tmp, "initrd")
	if err := initramfs(cache, bridge, initrd); err != nil {
		return nil, err
	}
	var ports [3]int
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	r := &rig{
		agent:  fmt.Sprintf("127.0.0.1:%d", ports[0]),
		bridge: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		mqtt:   fmt.Sprintf("127.0.0.1:%d", ports[2]),
	}
	fwd := fmt.Sprintf("user,id=n,hostfwd=tcp:%s-:%d,hostfwd=tcp:%s-:%d,hostfwd=tcp:%s-:%d",
		r.agent, guestAgentPort, r.bridge, guestBridgePort, r.mqtt, guestMQTTPort)
	console, err := os.Create(filepath.Join(tmp, "console.log"))
	if err != nil {
		return nil, err
	}
	r.console = &lockedFile{f: console}
	// One vCPU: as fast for these tests as two, and it leaves a core to the
	// tests of other packages that `make test` runs at the same time.
	r.qemu = exec.Command("qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "1", "-m", "512",
		"-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", filepath.Join(cache, "vmlinuz"), "-initrd", initrd,
		"-append", "console=ttyAMA0 loglevel=4 panic=-1",
		"-netdev", fwd, "-device", "virtio-net-pci,netdev=n,romfile=")
	r.qemu.Stdout = r.console
	r.qemu.Stderr = r.console
	start := time.Now()
	if err := r.qemu.Start(); err != nil {
		return nil, fmt.Errorf("starting qemu-system-aarch64: %w", err)
	}
	exited := make(chan struct{})
	go func() { r.qemu.Wait(); close(exited) }()
	deadline := time.Now().Add(4 * time.Minute)
	for {
		if out, err := r.shErr("echo up"); err == nil && strings.TrimSpace(out) == "up" {
			break
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("kernel rig: qemu exited during boot; console:\n%s", r.console.tail(40))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("kernel rig: the guest agent did not answer within 4 minutes; console:\n%s", r.console.tail(40))
		}
	}
	r.bootTime = time.Since(start)
	fmt.Fprintf(os.Stderr, "kernel rig: guest ready after %s (%s)\n", r.bootTime.Round(10*time.Millisecond), strings.TrimSpace(r.console.grep("RIG: ready")))
	return r, nil
}

func (r *rig) stop() {
	if r.qemu != nil && r.qemu.Process != nil {
		r.qemu.Process.Kill()
	}
}

// shErr runs a shell command in the guest and returns its output without
// the agent's trailing "rc=N" line; a non-zero status is an error.
func (r *rig) shErr(cmd string) (string, error) {
	c := http.Client{Timeout: 60 * time.Second}
	resp, err := c.Get("http://" + r.agent + "/cgi-bin/sh?" + url.QueryEscape(cmd))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("agent: %s: %s", resp.Status, b)
	}
	s := strings.TrimRight(string(b), "\n")
	i := strings.LastIndex(s, "rc=")
	if i < 0 || (i > 0 && s[i-1] != '\n') {
		return s, fmt.Errorf("agent: no exit status in %q", s)
	}
	out := strings.TrimSuffix(s[:i], "\n")
	if rc := s[i+3:]; rc != "0" {
		return out, fmt.Errorf("guest command %q: exit %s: %s", cmd, rc, out)
	}
	return out, nil
}

// sh runs a guest command that must succeed.
func (r *rig) sh(t *testing.T, cmd string) string {
	t.Helper()
	out, err := r.shErr(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// chip makes the named gpio-sim chip (rp1 or bcm2711) the only live one.
func (r *rig) chip(t *testing.T, name string) {
	t.Helper()
	r.sh(t, "chip "+name)
}

// level reads what line n of the live chip carries: the output's drive,
// or the simulated pull when nobody drives it.
func (r *rig) level(t *testing.T, n int) int {
	t.Helper()
	out := strings.TrimSpace(r.sh(t, "chip get "+strconv.Itoa(n)))
	v, err := strconv.Atoi(out)
	if err != nil {
		t.Fatalf("chip get %d: %q", n, out)
	}
	return v
}

func (r *rig) pull(t *testing.T, n int, dir string) {
	t.Helper()
	r.sh(t, fmt.Sprintf("chip pull %d %s", n, dir))
}

// waitLevel polls line n until it reads want.
func (r *rig) waitLevel(t *testing.T, n, want int, why string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := r.level(t, n)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: line %d reads %d, want %d", why, n, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// bridgeProc is a bridge running in the guest.
type bridgeProc struct {
	r    *rig
	name string
	pid  string
}

// startBridge writes cfg to the guest and starts the bridge on it, its
// HTTP on the forwarded port, and waits for /healthz.
func (r *rig) startBridge(t *testing.T, name, cfg string) *bridgeProc {
	t.Helper()
	r.writeConfig(t, name, cfg)
	pid := strings.TrimSpace(r.sh(t, fmt.Sprintf(
		"mkdir -p /scratch/%[1]s && PIBRIDGE_STATE_DIR=/scratch/%[1]s PIBRIDGE_HTTP_LISTEN=0.0.0.0:%[2]d PIBRIDGE_MQTT_EMBEDDED_LISTEN=0.0.0.0:%[3]d "+
			"bridge -config /etc/%[1]s.yaml -log-level debug >/scratch/%[1]s.log 2>&1 </dev/null & echo $!", name, guestBridgePort, guestMQTTPort)))
	b := &bridgeProc{r: r, name: name, pid: pid}
	t.Cleanup(func() { b.kill() })
	deadline := time.Now().Add(60 * time.Second)
	c := http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := c.Get("http://" + r.bridge + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return b
			}
		}
		if _, err := r.shErr("kill -0 " + pid); err != nil {
			t.Fatalf("bridge %s exited at start:\n%s", name, r.sh(t, "cat /scratch/"+name+".log"))
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridge %s: /healthz not ready within 60 s:\n%s", name, r.sh(t, "cat /scratch/"+name+".log"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *rig) writeConfig(t *testing.T, name, cfg string) {
	t.Helper()
	r.sh(t, fmt.Sprintf("cat > /etc/%s.yaml <<'EOF'\n%s\nEOF", name, cfg))
}

// term sends SIGTERM and waits for the bridge to exit.
func (b *bridgeProc) term(t *testing.T) {
	t.Helper()
	b.r.sh(t, "kill -TERM "+b.pid)
	b.wait(t)
}

func (b *bridgeProc) wait(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := b.r.shErr("kill -0 " + b.pid + " 2>/dev/null"); err != nil {
			b.pid = ""
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridge %s did not exit within 30 s", b.name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill ends a bridge a failed test left running, so the next test finds
// its lines free.
func (b *bridgeProc) kill() {
	if b.pid == "" {
		return
	}
	b.r.shErr("kill -KILL " + b.pid + "; while kill -0 " + b.pid + " 2>/dev/null; do sleep 0.05; done")
	b.pid = ""
}

func (b *bridgeProc) log(t *testing.T) string {
	t.Helper()
	return b.r.sh(t, "cat /scratch/"+b.name+".log")
}

// state returns the value of one signal from GET /api/state.
func (r *rig) state(t *testing.T, signal string) any {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + r.bridge + "/api/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct {
		State map[string]struct {
			Value any `json:"value"`
		} `json:"state"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("/api/state: %v", err)
	}
	v, ok := s.State[signal]
	if !ok {
		t.Fatalf("/api/state has no %s", signal)
	}
	return v.Value
}

func (r *rig) waitState(t *testing.T, signal string, want any, why string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := r.state(t, signal)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s is %v, want %v", why, signal, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// post sends a command to POST /api/signals/<name>; it returns the status
// and the body.
func (r *rig) post(t *testing.T, signal, body string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 30 * time.Second}
	resp, err := c.Post("http://"+r.bridge+"/api/signals/"+signal, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// readings returns pibridge_readings_total for one signal.
func (r *rig) readings(t *testing.T, signal string) int {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + r.bridge + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	want := `pibridge_readings_total{signal="` + signal + `"} `
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, want) {
			n, err := strconv.ParseFloat(strings.TrimPrefix(l, want), 64)
			if err != nil {
				t.Fatalf("/metrics: %q", l)
			}
			return int(n)
		}
	}
	return 0
}

// lockedFile is the console log qemu writes while tests read it.
type lockedFile struct {
	mu sync.Mutex
	f  *os.File
	b  bytes.Buffer
}

func (l *lockedFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	return l.f.Write(p)
}

func (l *lockedFile) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return tail(l.b.Bytes(), n)
}

func (l *lockedFile) grep(s string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The deploy/raspi files and the Makefile targets that ship the bridge to
// a Pi: the systemd unit, install.sh and uninstall.sh, make dist and make
// deploy. They run here on the host build of the bridge.

var repoRoot = func() string {
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return dir
}()

func raspiFile(name string) string { return filepath.Join(repoRoot, "deploy", "raspi", name) }

var hostBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// hostBridge builds the bridge for this machine once per test run.
func hostBridge(t *testing.T) string {
	t.Helper()
	hostBin.once.Do(func() {
		hostBin.dir, hostBin.err = os.MkdirTemp("", "pibridge-host-")
		if hostBin.err != nil {
			return
		}
		hostBin.path = filepath.Join(hostBin.dir, "bridge")
		out, err := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=v0.0.0-test", "-o", hostBin.path, ".").CombinedOutput()
		if err != nil {
			hostBin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if hostBin.err != nil {
		t.Fatal(hostBin.err)
	}
	return hostBin.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if hostBin.dir != "" {
		os.RemoveAll(hostBin.dir)
	}
	os.Exit(code)
}

// tree lists every file and directory under root with its mode, sorted:
// "drwxr-xr-x etc/pibridge".
func tree(t *testing.T, root string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == root {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		lines = append(lines, info.Mode().String()+" "+rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

func lines(s ...string) string { return strings.Join(s, "\n") }

// sh runs a script with extra environment and returns its combined output.
func sh(t *testing.T, env []string, script string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("sh", append([]string{script}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustSh(t *testing.T, env []string, script string, args ...string) string {
	t.Helper()
	out, err := sh(t, env, script, args...)
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", filepath.Base(script), args, err, out)
	}
	return out
}

var installedTree = lines(
	"drwxr-xr-x etc",
	"drwxr-xr-x etc/pibridge",
	"-rw-r----- etc/pibridge/config.yaml",
	"drwxr-xr-x etc/systemd",
	"drwxr-xr-x etc/systemd/system",
	"-rw-r--r-- etc/systemd/system/pibridge.service",
	"drwxr-xr-x usr",
	"drwxr-xr-x usr/local",
	"drwxr-xr-x usr/local/bin",
	"-rwxr-xr-x usr/local/bin/bridge",
	"drwxr-xr-x usr/local/share",
	"drwxr-xr-x usr/local/share/pibridge",
	"-rw-r--r-- usr/local/share/pibridge/config.example.yaml",
	"-rwxr-xr-x usr/local/share/pibridge/uninstall.sh",
)

// emptyDirs is what uninstall leaves of the tree: system directories that
// install.sh did not own alone.
var emptyDirs = lines(
	"drwxr-xr-x etc",
	"drwxr-xr-x etc/systemd",
	"drwxr-xr-x etc/systemd/system",
	"drwxr-xr-x usr",
	"drwxr-xr-x usr/local",
	"drwxr-xr-x usr/local/bin",
	"drwxr-xr-x usr/local/share",
)

// TestInstallDESTDIR installs into a DESTDIR and lists the tree exactly;
// then upgrades over an unchanged, an edited and an untouched older config;
// then uninstalls, twice, and purges.
func TestInstallDESTDIR(t *testing.T) {
	bin := hostBridge(t)
	dest := t.TempDir()
	env := []string{"DESTDIR=" + dest}
	install := raspiFile("install.sh")
	conf := filepath.Join(dest, "etc", "pibridge", "config.yaml")
	example, err := os.ReadFile(raspiFile("config.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}

	out := mustSh(t, env, install, bin)
	if got := tree(t, dest); got != installedTree {
		t.Fatalf("installed tree:\n%s\nwant:\n%s", got, installedTree)
	}
	for _, want := range []string{"installing bridge v0.0.0-test", "skipping the user, groups, ownership and systemctl", "installed the example config as /etc/pibridge/config.yaml"} {
		if !strings.Contains(out, want) {
			t.Errorf("install output lacks %q:\n%s", want, out)
		}
	}
	same := func(path, src string) {
		t.Helper()
		a, _ := os.ReadFile(filepath.Join(dest, path))
		b, _ := os.ReadFile(src)
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s is not a copy of %s", path, src)
		}
	}
	same("usr/local/bin/bridge", bin)
	same("etc/systemd/system/pibridge.service", raspiFile("pibridge.service"))
	same("etc/pibridge/config.yaml", raspiFile("config.example.yaml"))
	same("usr/local/share/pibridge/config.example.yaml", raspiFile("config.example.yaml"))
	same("usr/local/share/pibridge/uninstall.sh", raspiFile("uninstall.sh"))

	t.Run("again: nothing changes", func(t *testing.T) {
		out := mustSh(t, env, install, bin)
		if got := tree(t, dest); got != installedTree {
			t.Fatalf("tree after a second install:\n%s", got)
		}
		if strings.Contains(out, "config") {
			t.Errorf("a second install talks about the config:\n%s", out)
		}
	})
	t.Run("an edited config is kept; the example goes beside it", func(t *testing.T) {
		edited := append(bytes.Clone(example), "# my pins\n"...)
		os.WriteFile(conf, edited, 0o640)
		out := mustSh(t, env, install, bin)
		if !strings.Contains(out, "kept your /etc/pibridge/config.yaml; the new example is /etc/pibridge/config.yaml.new") {
			t.Errorf("install does not say where the new example went:\n%s", out)
		}
		if got, _ := os.ReadFile(conf); !bytes.Equal(got, edited) {
			t.Error("the edited config was overwritten")
		}
		if got, _ := os.ReadFile(conf + ".new"); !bytes.Equal(got, example) {
			t.Error("config.yaml.new is not the example")
		}
		if got, want := tree(t, dest), strings.Replace(installedTree, "-rw-r----- etc/pibridge/config.yaml", "-rw-r----- etc/pibridge/config.yaml\n-rw-r----- etc/pibridge/config.yaml.new", 1); got != want {
			t.Errorf("tree:\n%s\nwant:\n%s", got, want)
		}
		os.Remove(conf + ".new")
	})
	t.Run("an untouched older example follows the new one", func(t *testing.T) {
		older := []byte("# the example of an older release\nboard: sim\n")
		os.WriteFile(conf, older, 0o640)
		os.WriteFile(filepath.Join(dest, "usr/local/share/pibridge/config.example.yaml"), older, 0o644)
		out := mustSh(t, env, install, bin)
		if !strings.Contains(out, "was the untouched example: updated") {
			t.Errorf("install output:\n%s", out)
		}
		if got, _ := os.ReadFile(conf); !bytes.Equal(got, example) {
			t.Error("the untouched config did not follow the new example")
		}
		if got := tree(t, dest); got != installedTree {
			t.Errorf("tree:\n%s", got)
		}
	})
	t.Run("a config that fails -check fails the install", func(t *testing.T) {
		os.WriteFile(conf, []byte("board: sim\nbogus: 1\n"), 0o640)
		out, err := sh(t, env, install, bin)
		if err == nil || !strings.Contains(out, "config: bogus: unknown key") || !strings.Contains(out, "does not pass -check") {
			t.Errorf("install with a bad config: %v\n%s", err, out)
		}
		os.WriteFile(conf, example, 0o640)
	})
	t.Run("a binary that does not run here is installed unchecked", func(t *testing.T) {
		fake := filepath.Join(t.TempDir(), "bridge")
		os.WriteFile(fake, []byte("\x7fELF not for this machine"), 0o755)
		out := mustSh(t, env, install, fake)
		if !strings.Contains(out, "does not run on this machine; not checking it") {
			t.Errorf("install output:\n%s", out)
		}
		mustSh(t, env, install, bin)
	})
	t.Run("usage errors", func(t *testing.T) {
		if out, err := sh(t, env, install, filepath.Join(t.TempDir(), "nope")); err == nil || !strings.Contains(out, "no binary at") {
			t.Errorf("missing binary: %v\n%s", err, out)
		}
	})

	uninstall := filepath.Join(dest, "usr/local/share/pibridge/uninstall.sh")
	os.WriteFile(conf+".new", example, 0o640)
	out = mustSh(t, env, uninstall)
	keep := lines(
		"drwxr-xr-x etc",
		"drwxr-xr-x etc/pibridge",
		"-rw-r----- etc/pibridge/config.yaml",
		"-rw-r----- etc/pibridge/config.yaml.new",
		"drwxr-xr-x etc/systemd",
		"drwxr-xr-x etc/systemd/system",
		"drwxr-xr-x usr",
		"drwxr-xr-x usr/local",
		"drwxr-xr-x usr/local/bin",
		"drwxr-xr-x usr/local/share",
	)
	if got := tree(t, dest); got != keep {
		t.Fatalf("tree after uninstall:\n%s\nwant:\n%s", got, keep)
	}
	if !strings.Contains(out, "kept /etc/pibridge and /var/lib/pibridge") {
		t.Errorf("uninstall output:\n%s", out)
	}
	mustSh(t, env, raspiFile("uninstall.sh")) // again: no harm
	if got := tree(t, dest); got != keep {
		t.Fatalf("tree after a second uninstall:\n%s", got)
	}
	os.MkdirAll(filepath.Join(dest, "var/lib"), 0o755)
	os.Mkdir(filepath.Join(dest, "var/lib/pibridge"), 0o750) // as systemd's StateDirectory= makes it
	mustSh(t, env, raspiFile("uninstall.sh"), "--purge")
	if got, want := tree(t, dest), emptyDirs+"\ndrwxr-xr-x var\ndrwxr-xr-x var/lib"; got != want {
		t.Fatalf("tree after --purge:\n%s\nwant:\n%s", got, want)
	}
	if out, err := sh(t, env, raspiFile("uninstall.sh"), "--bogus"); err == nil || !strings.Contains(out, "usage") {
		t.Errorf("uninstall --bogus: %v\n%s", err, out)
	}
}

// unitKeys reads a unit file into key → values, in order.
func unitKeys(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		keys[k] = append(keys[k], v)
	}
	return keys
}

// TestSystemdUnit: `systemd-analyze verify` passes on the unit as install.sh
// installs it (the copy it checks points ExecStart at the installed binary
// under DESTDIR, because verify wants the executable to exist), with no
// warning at all; `systemd-analyze security` rates it well; the unit says
// what README's "On a Raspberry Pi" says; and its command lines run as written.
func TestSystemdUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: install it with `apt-get install systemd` (make test does)")
	}
	bin := hostBridge(t)
	dest := t.TempDir()
	mustSh(t, []string{"DESTDIR=" + dest}, raspiFile("install.sh"), bin)
	installed, err := os.ReadFile(filepath.Join(dest, "etc/systemd/system/pibridge.service"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	unit := filepath.Join(dir, "pibridge.service")
	os.WriteFile(unit, bytes.ReplaceAll(installed, []byte("/usr/local/bin/bridge"), []byte(filepath.Join(dest, "usr/local/bin/bridge"))), 0o644)

	out, err := exec.Command(analyze, "verify", "--man=no", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// verify passes a unit with unknown keys (it warns): make sure a
	// broken copy does fail this test's way of looking, or the check
	// above proves nothing.
	broken := filepath.Join(dir, "broken.service")
	os.WriteFile(broken, append(bytes.Clone(installed), "\n[Service]\nWatchdogSecs=1\n"...), 0o644)
	if out, _ := exec.Command(analyze, "verify", "--man=no", broken).CombinedOutput(); !bytes.Contains(out, []byte("Unknown key")) {
		t.Errorf("verify says nothing of an unknown key: %s", out)
	}

	out, err = exec.Command(analyze, "security", "--offline=true", "--no-pager", unit).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for pibridge\.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security --offline: %v\n%s", err, out)
	}
	if score, _ := strconv.ParseFloat(string(m[1]), 64); score > 3.0 {
		t.Errorf("exposure %v: want at most 3.0 (OK); the unit lost some hardening\n%s", score, out)
	} else {
		t.Logf("systemd-analyze security: exposure %v", score)
	}

	keys := unitKeys(t, raspiFile("pibridge.service"))
	for k, want := range map[string]string{
		"Type":                     "notify",
		"WatchdogSec":              "30s",
		"Restart":                  "on-failure",
		"RestartPreventExitStatus": "2",
		"User":                     "pibridge",
		"SupplementaryGroups":      "gpio i2c spi",
		"StateDirectory":           "pibridge",
		"ConfigurationDirectory":   "pibridge",
		"ProtectSystem":            "strict",
		"ProtectHome":              "yes",
		"NoNewPrivileges":          "yes",
		"PrivateTmp":               "yes",
		"CapabilityBoundingSet":    "",
		"RestrictAddressFamilies":  "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
		"DevicePolicy":             "closed",
		"DeviceAllow":              "char-gpiochip rw|/dev/gpiomem rw|/dev/gpiomem0 rw|char-i2c rw|char-spi rw",
		"ExecStart":                "/usr/local/bin/bridge -config /etc/pibridge/config.yaml",
		"ExecStopPost":             "/usr/local/bin/bridge -safe-state -config /etc/pibridge/config.yaml",
		// systemctl reload: SIGHUP applies the file in place.
		"ExecReload": "/bin/kill -HUP $MAINPID",
		// The config stays read-only unless the owner opts in (README).
		"ReadWritePaths": "",
		// After a clock that is synchronised where the time service can
		// tell, never waiting for one that will not come (no Wants).
		"After": "network-online.target time-sync.target",
		"Wants": "network-online.target",
		// The bridge reads the clock's sync state (adjtimex), which
		// ProtectClock would deny.
		"SystemCallFilter": "@system-service|adjtimex",
		"ProtectClock":     "",
	} {
		if got := strings.Join(keys[k], "|"); got != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}

	// The command lines as written, the config swapped for one that runs
	// here: ExecStart's flags with -check on the example, ExecStopPost's
	// on a simulated board.
	run := func(line string, config string, extra ...string) {
		t.Helper()
		args := strings.Fields(line)[1:]
		for i := range args {
			if args[i] == "/etc/pibridge/config.yaml" {
				args[i] = config
			}
		}
		cmd := exec.Command(bin, append(args, extra...)...)
		cmd.Env = append(os.Environ(), "PIBRIDGE_STATE_DIR="+t.TempDir())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s %v: %v\n%s", line, extra, err, out)
		}
	}
	run(keys["ExecStart"][0], raspiFile("config.example.yaml"), "-check")
	run(keys["ExecStopPost"][0], writeSafeConfig(t, "127.0.0.1:0", "127.0.0.1:0"))
}

// TestInstallAsRoot runs install.sh and uninstall.sh as on a Pi, as root,
// without DESTDIR, in a private mount namespace where /etc and /usr/local
// are empty tmpfs and useradd, groupadd, getent, chown, userdel and
// systemctl are stubs that record their arguments: the parts DESTDIR skips.
func TestInstallAsRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root for a mount namespace")
	}
	if err := exec.Command("unshare", "--mount", "true").Run(); err != nil {
		t.Skipf("no mount namespace here (unshare --mount: %v)", err)
	}
	bin := hostBridge(t)
	work := t.TempDir()
	stubs := filepath.Join(work, "stubs")
	state := filepath.Join(work, "state") // users and groups the stubs "created"
	calls := filepath.Join(work, "calls")
	os.MkdirAll(stubs, 0o755)
	os.MkdirAll(state, 0o755)
	stub := func(name, body string) {
		script := "#!/bin/sh\necho \"" + name + " $*\" >> " + calls + "\n" + body + "\n"
		if err := os.WriteFile(filepath.Join(stubs, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	stub("getent", `[ -e "`+state+`/$1-$2" ]`)
	stub("groupadd", `touch "`+state+`/group-$2"`)
	stub("useradd", `for last; do :; done; touch "`+state+`/passwd-$last"`)
	stub("userdel", `rm -f "`+state+`/passwd-$1"`)
	stub("chown", "")
	stub("systemctl", "")

	script := fmt.Sprintf(`set -e
mount -t tmpfs tmpfs /etc
mount -t tmpfs tmpfs /usr/local
export PATH=%[1]s:/usr/sbin:/usr/bin:/sbin:/bin
step() { echo "== $*" >> %[2]s; }
step first install
sh %[3]s/install.sh %[4]s
step again, the config edited
echo '# my wiring' >> /etc/pibridge/config.yaml
sh %[3]s/install.sh %[4]s
step uninstall
sh /usr/local/share/pibridge/uninstall.sh
test ! -e /usr/local/bin/bridge
test -e /etc/pibridge/config.yaml
step purge
sh %[3]s/uninstall.sh --purge
test ! -e /etc/pibridge
`, stubs, calls, filepath.Join(repoRoot, "deploy", "raspi"), bin)
	out, err := exec.Command("unshare", "--mount", "sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("in the namespace: %v\n%s", err, out)
	}
	got, _ := os.ReadFile(calls)
	want := lines(
		"== first install",
		"getent group gpio", "groupadd --system gpio",
		"getent group i2c", "groupadd --system i2c",
		"getent group spi", "groupadd --system spi",
		"getent passwd pibridge",
		"useradd --system --user-group --no-create-home --home-dir /var/lib/pibridge --shell /usr/sbin/nologin --comment pibridge service pibridge",
		"chown root:pibridge /etc/pibridge/config.yaml",
		"systemctl daemon-reload",
		"systemctl enable --quiet pibridge.service",
		"== again, the config edited",
		"getent group gpio", "getent group i2c", "getent group spi", "getent passwd pibridge",
		"chown root:pibridge /etc/pibridge/config.yaml",
		"systemctl daemon-reload",
		"systemctl enable --quiet pibridge.service",
		"systemctl restart pibridge.service",
		"== uninstall",
		"systemctl disable --now --quiet pibridge.service",
		"systemctl daemon-reload",
		"systemctl reset-failed pibridge.service",
		"== purge",
		"systemctl daemon-reload",
		"systemctl reset-failed pibridge.service",
		"getent passwd pibridge",
		"userdel pibridge",
	) + "\n"
	if string(got) != want {
		t.Errorf("commands run:\n%s\nwant:\n%s\noutput:\n%s", got, want, out)
	}
	for _, say := range []string{
		"enabled, not started: edit /etc/pibridge/config.yaml", // the untouched example is not started
		"restarted; logs: journalctl -u pibridge -f",
	} {
		if !strings.Contains(string(out), say) {
			t.Errorf("output lacks %q:\n%s", say, out)
		}
	}
}

func makeCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not found")
	}
	cmd := exec.Command("make", append([]string{"-s", "--no-print-directory", "-C", repoRoot}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestMakeDist packs fake builds (and, as armv7, the host build, so that
// the unpacked tarball's install.sh can run) with make dist-pack, the half
// of make dist after make cross: one tarball per Pi with exactly the
// release files, SHA256SUMS that check, the same bytes on a second run.
func TestMakeDist(t *testing.T) {
	bins := t.TempDir()
	for _, arch := range []string{"armv6", "arm64"} {
		os.WriteFile(filepath.Join(bins, "bridge-"+arch), []byte("fake "+arch), 0o755)
	}
	host, err := os.ReadFile(hostBridge(t))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(bins, "bridge-armv7"), host, 0o755)
	dist := t.TempDir()
	pack := func() string {
		t.Helper()
		out, err := makeCmd(t, "dist-pack", "BIN="+bins, "DIST="+dist, "VERSION=v1.2.3", "SOURCE_DATE_EPOCH=1764072000")
		if err != nil {
			t.Fatalf("make dist-pack: %v\n%s", err, out)
		}
		sums, _ := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
		return string(sums)
	}
	sums := pack()
	entries, _ := os.ReadDir(dist)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if got, want := strings.Join(names, " "), "SHA256SUMS pibridge-v1.2.3-linux-arm64.tar.gz pibridge-v1.2.3-linux-armv6.tar.gz pibridge-v1.2.3-linux-armv7.tar.gz"; got != want {
		t.Fatalf("dist holds %q, want %q", got, want)
	}
	check := exec.Command("sha256sum", "-c", "SHA256SUMS")
	check.Dir = dist
	if out, err := check.CombinedOutput(); err != nil || strings.Count(string(out), ": OK") != 3 {
		t.Fatalf("sha256sum -c: %v\n%s", err, out)
	}
	for _, arch := range []string{"armv6", "armv7", "arm64"} {
		name := "pibridge-v1.2.3-linux-" + arch
		list := exec.Command("tar", "-tvzf", filepath.Join(dist, name+".tar.gz"))
		list.Env = append(os.Environ(), "TZ=UTC")
		out, err := list.CombinedOutput()
		if err != nil {
			t.Fatalf("tar: %v\n%s", err, out)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(l) // mode owner size date time name
			got = append(got, f[0]+" "+f[1]+" "+f[3]+" "+f[5])
		}
		want := []string{
			"drwxr-xr-x 0/0 2025-11-25 " + name + "/",
			"-rw-r--r-- 0/0 2025-11-25 " + name + "/LICENSE",
			"-rw-r--r-- 0/0 2025-11-25 " + name + "/README.md",
			"-rwxr-xr-x 0/0 2025-11-25 " + name + "/bridge",
			"-rw-r--r-- 0/0 2025-11-25 " + name + "/config.example.yaml",
			"-rwxr-xr-x 0/0 2025-11-25 " + name + "/install.sh",
			"-rw-r--r-- 0/0 2025-11-25 " + name + "/pibridge.service",
			"-rwxr-xr-x 0/0 2025-11-25 " + name + "/uninstall.sh",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s.tar.gz holds:\n%s\nwant:\n%s", name, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	if again := pack(); again != sums {
		t.Errorf("a second make dist-pack gave other bytes:\n%s\nthen\n%s", sums, again)
	}

	// An unpacked release installs as the README says.
	unpacked := t.TempDir()
	if out, err := exec.Command("tar", "-xzf", filepath.Join(dist, "pibridge-v1.2.3-linux-armv7.tar.gz"), "-C", unpacked).CombinedOutput(); err != nil {
		t.Fatalf("tar -x: %v\n%s", err, out)
	}
	dest := t.TempDir()
	mustSh(t, []string{"DESTDIR=" + dest}, filepath.Join(unpacked, "pibridge-v1.2.3-linux-armv7", "install.sh"))
	if got := tree(t, dest); got != installedTree {
		t.Errorf("tree installed from the tarball:\n%s", got)
	}
}

// TestMakeDeployDryRun: make deploy prints exactly the scp and ssh
// commands it would run, and refuses to start without PI.
func TestMakeDeployDryRun(t *testing.T) {
	out, err := makeCmd(t, "deploy", "PI=pi@raspberrypi.local", "ARCH=armv7", "DRY_RUN=1")
	want := lines(
		"ssh pi@raspberrypi.local 'mkdir -p -m 0700 .pibridge-deploy'",
		"scp -q bin/bridge-armv7 deploy/raspi/pibridge.service deploy/raspi/config.example.yaml deploy/raspi/install.sh deploy/raspi/uninstall.sh pi@raspberrypi.local:.pibridge-deploy/",
		"ssh -t pi@raspberrypi.local 'sudo sh .pibridge-deploy/install.sh .pibridge-deploy/bridge-armv7 && rm -rf .pibridge-deploy'",
	) + "\n"
	if err != nil || out != want {
		t.Errorf("make deploy DRY_RUN=1: %v\n%s\nwant:\n%s", err, out, want)
	}
	// Without ARCH the Pi is asked first.
	out, err = makeCmd(t, "deploy", "PI=pi@pi4", "DRY_RUN=1")
	if err != nil || !strings.HasPrefix(out, "ssh pi@pi4 uname -m\n") {
		t.Errorf("make deploy without ARCH: %v\n%s", err, out)
	}
	out, err = makeCmd(t, "deploy", "DRY_RUN=1")
	if err == nil || !strings.Contains(out, "usage: make deploy PI=user@host") {
		t.Errorf("make deploy without PI: %v\n%s", err, out)
	}
	out, err = makeCmd(t, "deploy", "PI=x", "ARCH=armv5", "DRY_RUN=1")
	if err == nil || !strings.Contains(out, "ARCH=armv5: want armv6, armv7 or arm64") {
		t.Errorf("make deploy ARCH=armv5: %v\n%s", err, out)
	}
}

// TestMakePiTargets: pi-zero, pi and pi64 build the right static binary
// (checked with make -n: the commands, not the builds, which make cross
// and TestARMBinariesUnderQEMU cover).
func TestMakePiTargets(t *testing.T) {
	for target, want := range map[string]string{
		"pi-zero": "CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=6 go build -trimpath -tags 'nethttpomithttp2' -ldflags '-s -w -X main.version=vX' -o bin/bridge-armv6 ./cmd/bridge",
		"pi":      "CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 go build -trimpath -tags 'nethttpomithttp2' -ldflags '-s -w -X main.version=vX' -o bin/bridge-armv7 ./cmd/bridge",
		"pi64":    "CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -trimpath -tags 'nethttpomithttp2' -ldflags '-s -w -X main.version=vX' -o bin/bridge-arm64 ./cmd/bridge",
	} {
		out, err := makeCmd(t, "-n", target, "VERSION=vX", "GO=go")
		if err != nil || strings.TrimSpace(out) != want {
			t.Errorf("make -n %s: %v\n%s\nwant:\n%s", target, err, out, want)
		}
	}
}

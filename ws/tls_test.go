package ws

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"pibridge"
	"pibridge/internal/testkit"
)

// tlsBridge is a harness whose server also serves the way cmd/bridge does:
// Server.Listen with http.tls set, every route behind Protect.
type tlsBridge struct {
	*harness
	ca     *testkit.CA
	addr   string // host:port of the TLS port
	dir    string // of cert.pem and key.pem
	clock  *testkit.Clock
	client *http.Client // trusts ca; does not follow redirects
}

func newTLSBridge(t *testing.T, firstByteWait time.Duration) *tlsBridge {
	t.Helper()
	ca := testkit.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.WriteServerFiles(t, dir, 1, "127.0.0.1")
	h := newHarness(t, setup{config: func(c *Config) {
		withTokens(c)
		c.Listen = "127.0.0.1:0"
		c.TLS = pibridge.ServerTLS{CertFile: certFile, KeyFile: keyFile}
	}, tune: noLimit})
	b := &tlsBridge{harness: h, ca: ca, dir: dir, clock: testkit.NewClock()}
	h.srv.certs.now = b.clock.Now
	ln, err := h.srv.Listen(firstByteWait)
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	mux := http.NewServeMux()
	h.srv.Routes(mux)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "panel") })
	srv := &http.Server{Handler: h.srv.Protect(mux), ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)} // the refused handshakes are expected
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	b.client = &http.Client{
		Timeout:       5 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(b.client.CloseIdleConnections)
	return b
}

func (b *tlsBridge) do(t *testing.T, method, url, body string, hdr http.Header) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v[0]
			continue
		}
		req.Header[k] = v
	}
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, string(rb)}
}

// handshake returns the serial of the certificate the server presents.
func (b *tlsBridge) handshake(t *testing.T, cfg *tls.Config) (int64, error) {
	t.Helper()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg.RootCAs = b.ca.Pool()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", b.addr, cfg)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	st := c.ConnectionState()
	return st.PeerCertificates[0].SerialNumber.Int64(), nil
}

func TestHTTPS(t *testing.T) {
	b := newTLSBridge(t, 5*time.Second)
	base := "https://" + b.addr

	t.Run("TLS 1.2 and 1.3 are served, older versions are not", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			max  uint16
			ok   bool
		}{
			{"TLS 1.0", tls.VersionTLS10, false},
			{"TLS 1.1", tls.VersionTLS11, false},
			{"TLS 1.2", tls.VersionTLS12, true},
			{"TLS 1.3", tls.VersionTLS13, true},
		} {
			_, err := b.handshake(t, &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tc.max})
			if (err == nil) != tc.ok {
				t.Errorf("%s: handshake error %v, want ok=%v", tc.name, err, tc.ok)
			}
		}
	})

	t.Run("login over TLS sets a Secure cookie", func(t *testing.T) {
		r := b.do(t, "POST", base+"/api/login", `{"token":"`+controlToken+`"}`, http.Header{"Content-Type": {"application/json"}})
		if r.status != http.StatusOK {
			t.Fatalf("login: %d %s", r.status, r.body)
		}
		cks := (&http.Response{Header: r.header}).Cookies()
		if len(cks) != 1 || !cks[0].Secure || !cks[0].HttpOnly {
			t.Errorf("cookie %v, want one, Secure and HttpOnly", cks)
		}
	})

	t.Run("wss with the page's own https origin", func(t *testing.T) {
		d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: &tls.Config{RootCAs: b.ca.Pool()}}
		conn, _, err := d.Dial("wss://"+b.addr+"/ws", http.Header{"Origin": {base}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c := &wsClient{t: t, conn: conn}
		c.send(`{"type":"auth","token":"` + controlToken + `"}`)
		if f := c.next(); f.Type != "hello" {
			t.Fatalf("first frame %s, want hello", f)
		}
		got := c.exchange(`{"type":"set","id":"s","name":"led","value":true}`)
		if len(got) != 1 || got[0].Type != "ack" || !*got[0].OK {
			t.Fatalf("set over wss: %v", got)
		}
		// The same host under http:// is another site.
		_, resp, err := d.Dial("wss://"+b.addr+"/ws", http.Header{"Origin": {"http://" + b.addr}, "Authorization": {"Bearer " + controlToken}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("an http:// Origin over TLS: %v %v, want 403", err, resp)
		}
	})

	t.Run("plain HTTP on the TLS port", func(t *testing.T) {
		for _, tc := range []struct {
			method, path string
			status       int
			location     string
		}{
			{"GET", "/", http.StatusPermanentRedirect, base + "/"},
			{"GET", "/api/state?x=1", http.StatusPermanentRedirect, base + "/api/state?x=1"},
			{"HEAD", "/healthz", http.StatusPermanentRedirect, base + "/healthz"},
			{"POST", "/api/login", http.StatusBadRequest, ""},
		} {
			r := b.do(t, tc.method, "http://"+b.addr+tc.path, `{"token":"x"}`, nil)
			if r.status != tc.status || r.header.Get("Location") != tc.location {
				t.Errorf("%s %s over http: %d Location %q, want %d %q", tc.method, tc.path, r.status, r.header.Get("Location"), tc.status, tc.location)
			}
			if len(r.header["Set-Cookie"]) != 0 {
				t.Errorf("%s %s over http set a cookie", tc.method, tc.path)
			}
		}
		// Not to a host the bridge does not answer to.
		r := b.do(t, "GET", "http://"+b.addr+"/", "", http.Header{"Host": {"attacker.example"}})
		if r.status != http.StatusMisdirectedRequest {
			t.Errorf("plain GET with Host attacker.example: %d, want 421", r.status)
		}
	})

	t.Run("the Host check covers every route", func(t *testing.T) {
		for _, path := range []string{"/", "/api/state"} {
			r := b.do(t, "GET", base+path, "", http.Header{"Host": {"attacker.example"}, "Authorization": {"Bearer " + controlToken}})
			if r.status != http.StatusMisdirectedRequest {
				t.Errorf("GET %s with Host attacker.example: %d, want 421", path, r.status)
			}
		}
		if r := b.do(t, "GET", base+"/", "", nil); r.status != http.StatusOK || r.body != "panel" {
			t.Errorf("GET / with an IP literal: %d %q", r.status, r.body)
		}
	})

	t.Run("the certificate is reloaded when its files change", func(t *testing.T) {
		if serial, err := b.handshake(t, nil); err != nil || serial != 1 {
			t.Fatalf("first certificate: serial %d, %v", serial, err)
		}
		replaceCert(t, b.ca, b.dir, 2)
		b.clock.Advance(time.Second)
		if serial, _ := b.handshake(t, nil); serial != 1 {
			t.Errorf("within %s of the last look: serial %d, want the old 1", certCheckEvery, serial)
		}
		b.clock.Advance(certCheckEvery)
		if serial, err := b.handshake(t, nil); err != nil || serial != 2 {
			t.Errorf("after the change: serial %d, %v; want 2", serial, err)
		}
	})
}

// replaceCert writes a new pair over dir's files, each with a modification
// time a minute later than before (file systems with coarse times, or two
// writes within one tick, must not hide the change).
func replaceCert(t *testing.T, ca *testkit.CA, dir string, serial int64) {
	t.Helper()
	c, k := ca.Issue(t, serial, "127.0.0.1")
	writeLater(t, filepath.Join(dir, "cert.pem"), c)
	writeLater(t, filepath.Join(dir, "key.pem"), k)
}

func writeLater(t *testing.T, path string, b []byte) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	later := fi.ModTime().Add(time.Minute)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
}

func leafSerial(t *testing.T, c *tls.Certificate) int64 {
	t.Helper()
	x, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return x.SerialNumber.Int64()
}

// TestCertReload: a pair that does not load keeps the last good one, and
// the next change is tried again.
func TestCertReload(t *testing.T) {
	ca := testkit.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.WriteServerFiles(t, dir, 1, "127.0.0.1")
	clock := testkit.NewClock()
	var logs lockedBuffer
	src, err := newCertSource(pibridge.ServerTLS{CertFile: certFile, KeyFile: keyFile}, slog.New(slog.NewTextHandler(&logs, nil)), clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	get := func() int64 {
		c, err := src.get(nil)
		if err != nil {
			t.Fatal(err)
		}
		return leafSerial(t, c)
	}
	steps := []struct {
		name  string
		write func()
		want  int64
	}{
		{"unchanged", func() {}, 1},
		{"a new pair", func() { replaceCert(t, ca, dir, 2) }, 2},
		{"a certificate without its key yet", func() {
			c, _ := ca.Issue(t, 3, "127.0.0.1")
			writeLater(t, certFile, c)
		}, 2},
		{"then the key that matches", func() {
			c, k := ca.Issue(t, 4, "127.0.0.1")
			writeLater(t, certFile, c)
			writeLater(t, keyFile, k)
		}, 4},
		{"a file that is gone", func() { os.Remove(keyFile) }, 4},
	}
	for _, st := range steps {
		st.write()
		clock.Advance(certCheckEvery)
		if got := get(); got != st.want {
			t.Errorf("%s: serial %d, want %d", st.name, got, st.want)
		}
	}
	if !strings.Contains(logs.String(), "keeping the previous one") {
		t.Errorf("a pair that does not load was not logged:\n%s", logs.String())
	}
}

func TestCheckTLSFiles(t *testing.T) {
	ca := testkit.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.WriteServerFiles(t, dir, 1, "127.0.0.1")
	_, otherKey := ca.Issue(t, 2, "127.0.0.1")
	otherKeyFile := filepath.Join(dir, "other-key.pem")
	os.WriteFile(otherKeyFile, otherKey, 0o600)
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	core := newHarness(t, setup{}).core
	for _, tc := range []struct {
		name       string
		cert, key  string
		wantPrefix string // "" = valid
	}{
		{"a good pair", certFile, keyFile, ""},
		{"no TLS", "", "", ""},
		{"missing certificate", filepath.Join(dir, "nope.pem"), keyFile, "http.tls.cert_file: "},
		{"missing key", certFile, filepath.Join(dir, "nope.pem"), "http.tls.key_file: "},
		{"a key of another certificate", certFile, otherKeyFile, "http.tls.cert_file: "},
		{"not PEM", garbage, keyFile, "http.tls.cert_file: "},
		{"a directory", dir, keyFile, "http.tls.cert_file: "},
	} {
		err := Config{TLS: pibridge.ServerTLS{CertFile: tc.cert, KeyFile: tc.key}}.CheckFiles()
		switch {
		case tc.wantPrefix == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantPrefix != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.wantPrefix)):
			t.Errorf("%s: %v, want an error starting %q", tc.name, err, tc.wantPrefix)
		}
		if tc.wantPrefix != "" {
			// New refuses the same files.
			cfg := Defaults()
			cfg.TLS = pibridge.ServerTLS{CertFile: tc.cert, KeyFile: tc.key}
			if _, err := New(Options{Core: core, Config: cfg}); err == nil {
				t.Errorf("%s: New accepted it", tc.name)
			}
		}
	}
}

// TestCheckFilesTokenFile: a token_file that cannot be read is reported by
// CheckFiles with its field, as -check shows it, before New reads it.
func TestCheckFilesTokenFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "token")
	os.WriteFile(good, []byte("s3cret-token-0123456789\n"), 0o600)
	for _, tc := range []struct{ file, want string }{
		{good, ""},
		{filepath.Join(dir, "nope"), `http.token_file: "` + dir + `/nope": no such file`},
		{dir, `http.token_file: "` + dir + `": is a directory`},
	} {
		cfg := Defaults()
		cfg.TokenFile = tc.file
		got := ""
		if err := cfg.CheckFiles(); err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("token_file %s: %q, want %q", tc.file, got, tc.want)
		}
	}
}

// TestSilentConnectionOnTLSPort: a connection that sends nothing is
// closed after the first-byte wait, and holds up nobody meanwhile.
func TestSilentConnectionOnTLSPort(t *testing.T) {
	b := newTLSBridge(t, 300*time.Millisecond)
	silent, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if serial, err := b.handshake(t, nil); err != nil || serial != 1 {
		t.Fatalf("a handshake beside a silent connection: %d %v", serial, err)
	}
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := bufio.NewReader(silent).ReadByte(); err != io.EOF {
		t.Errorf("the silent connection read %v, want EOF (closed by the server)", err)
	}
}

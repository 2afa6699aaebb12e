package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pibridge/internal/testkit"
	"pibridge/web/paneltest"
)

// TestPanelOverHTTPS runs the bridge with http.tls and a certificate from
// a CA made for the test, which Chromium trusts by its key hash: the panel
// opened at http:// is sent to https://, the login sets the cookie there,
// and the live view and a command go over wss://.
func TestPanelOverHTTPS(t *testing.T) {
	ca := testkit.NewCA(t)
	certFile, keyFile := ca.WriteServerFiles(t, t.TempDir(), 1, "127.0.0.1")
	cfg := panelConfigWith(t, map[string]any{
		"token": panelToken,
		"tls":   map[string]any{"cert_file": certFile, "key_file": keyFile},
	})
	client := &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	t.Cleanup(client.CloseIdleConnections)
	addr := freeAddr(t)
	b := panelBridgeVia(t, t, client, "https://"+addr, addr, freeAddr(t), t.TempDir(), "-config", cfg)

	br := paneltest.StartWith(t, 90*time.Second, map[string]any{"ignore-certificate-errors-spki-list": ca.SPKI()})
	br.SetViewport(t, paneltest.Desktop)
	br.AllowNetworkErrors(true) // the 401s before the login
	br.Navigate(t, "http://"+addr+"/")
	br.WaitFor(t, `!document.querySelector('#login-panel').hidden`)
	if got := paneltest.Eval[string](t, br, `location.origin`); got != "https://"+addr {
		t.Fatalf("the panel is at %s, want https://%s (the redirect from http)", got, addr)
	}
	if msg := signIn(t, br, panelToken); msg != "" {
		t.Fatalf("login over https failed: %q", msg)
	}
	br.AllowNetworkErrors(false)
	if got := paneltest.Eval[string](t, br, `pibridge.state.socket.url`); !strings.HasPrefix(got, "wss://"+addr+"/") {
		t.Errorf("the live socket is %q, want wss://%s/ws", got, addr)
	}
	br.Click(t, tileSel("led", ".switch"))
	eventually(t, 5*time.Second, "led pin not driven over wss", func() bool { return pinLevel(t, b, "led") })
	br.WaitFor(t, `document.querySelector('[data-signal="led"]').dataset.state === 'confirmed'`)

	// Chromium rejects the certificate without the trusted key hash; so
	// does Go without the CA.
	if _, err := http.Get("https://" + addr + "/healthz"); err == nil {
		t.Error("a client without the test CA accepted the certificate")
	}
}

// TestCheckLoadsTheKeyPair: -check (and start) read http.tls's files, so
// that a wrong path or a key of another certificate is a config error
// before the bridge claims to serve https; -safe-state does not need them.
func TestCheckLoadsTheKeyPair(t *testing.T) {
	ca := testkit.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.WriteServerFiles(t, dir, 1, "127.0.0.1")
	_, otherKey := ca.Issue(t, 2, "127.0.0.1")
	otherKeyFile := filepath.Join(dir, "other.pem")
	if err := os.WriteFile(otherKeyFile, otherKey, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		cert, key string
		inStderr  string // "" = valid
	}{
		{"a good pair", certFile, keyFile, ""},
		{"no such certificate", filepath.Join(dir, "missing.pem"), keyFile, "config: http.tls.cert_file: open " + filepath.Join(dir, "missing.pem")},
		{"no such key", certFile, filepath.Join(dir, "missing.pem"), "config: http.tls.key_file: open "},
		{"the key of another certificate", certFile, otherKeyFile, "config: http.tls.cert_file: " + certFile + " with key_file " + otherKeyFile + ": tls: private key does not match public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := panelConfigWith(t, map[string]any{"tls": map[string]any{"cert_file": tc.cert, "key_file": tc.key}})
			for _, args := range [][]string{{"-check", "-config", cfg}, {"-config", cfg}} {
				var stdout, stderr bytes.Buffer
				env := envOf(map[string]string{"PIBRIDGE_STATE_DIR": t.TempDir(), "PIBRIDGE_HTTP_LISTEN": freeAddr(t), "PIBRIDGE_MQTT_EMBEDDED_LISTEN": freeAddr(t)})
				if tc.inStderr == "" {
					if args[0] != "-check" {
						continue // starting a good one is every other test
					}
					if err := run(t.Context(), args, env, &stdout, &stderr); err != nil || !strings.Contains(stdout.String(), "configuration is valid") {
						t.Fatalf("%v: %v\n%s", args, err, stderr.String())
					}
					continue
				}
				// Bounded: a start that wrongly goes ahead ends with the test.
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				err := run(ctx, args, env, &stdout, &stderr)
				cancel()
				if code := exitStatus(err, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.inStderr) {
					t.Errorf("%v: exit %d, stderr %q; want 2 and %q", args, code, stderr.String(), tc.inStderr)
				}
				if strings.Contains(stdout.String(), "configuration is valid") {
					t.Errorf("%v: called valid", args)
				}
			}
			// The outputs' safe state needs the pins only.
			var stdout, stderr bytes.Buffer
			if err := run(t.Context(), []string{"-safe-state", "-config", cfg}, envOf(map[string]string{"PIBRIDGE_STATE_DIR": t.TempDir()}), &stdout, &stderr); err != nil {
				t.Errorf("-safe-state: %v\n%s", err, stderr.String())
			}
		})
	}
}

// TestHostCheckOnEveryRoute: a page whose DNS name was rebound to the
// bridge sends its own name as Host; no route answers it, not even those
// open without a token. IP literals and localhost, which scrapers and
// health checks use, still get through.
func TestHostCheckOnEveryRoute(t *testing.T) {
	b := startDemo(t)
	for _, path := range []string{"/", "/index.html", "/app.js", "/healthz", "/metrics", "/api/state", "/nope"} {
		for _, tc := range []struct {
			host string
			want int
		}{
			{"rebind.attacker.example", http.StatusMisdirectedRequest},
			{"rebind.attacker.example:" + strings.Split(b.http, ":")[1], http.StatusMisdirectedRequest},
			{b.http, 0},
			{"localhost", 0},
		} {
			req, _ := http.NewRequest("GET", "http://"+b.http+path, nil)
			req.Host = tc.host
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case tc.want != 0 && resp.StatusCode != tc.want:
				t.Errorf("GET %s Host %s: %d, want %d", path, tc.host, resp.StatusCode, tc.want)
			case tc.want == 0 && resp.StatusCode == http.StatusMisdirectedRequest:
				t.Errorf("GET %s Host %s: 421 %s", path, tc.host, body)
			case tc.want != 0 && (bytes.Contains(body, []byte("pibridge_")) || bytes.Contains(body, []byte("<html"))):
				t.Errorf("GET %s Host %s answered with content: %.80s", path, tc.host, body)
			}
		}
	}
}

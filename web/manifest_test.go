package web

import (
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

type manifest struct {
	Name, ShortName, StartURL, Scope, Display, ID string
	Icons                                         []struct{ Src, Sizes, Type, Purpose string }
}

func (m *manifest) UnmarshalJSON(b []byte) error {
	var raw struct {
		Name      string `json:"name"`
		ShortName string `json:"short_name"`
		StartURL  string `json:"start_url"`
		Scope     string `json:"scope"`
		Display   string `json:"display"`
		ID        string `json:"id"`
		Icons     []struct{ Src, Sizes, Type, Purpose string }
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*m = manifest{raw.Name, raw.ShortName, raw.StartURL, raw.Scope, raw.Display, raw.ID, raw.Icons}
	return nil
}

// The panel is installable: a manifest that opens it standalone, with its
// icons at the sizes it declares, and no service worker anywhere (a
// cached panel could show stale state as live).
func TestManifest(t *testing.T) {
	srv := httptest.NewServer(Handler())
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/manifest.webmanifest")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/manifest+json" {
		t.Errorf("manifest served as %q", ct)
	}
	var m manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	if m.Display != "standalone" || m.StartURL != "./" || m.Scope != "./" || m.Name == "" || m.ShortName == "" {
		t.Errorf("manifest %+v: want display standalone, start_url and scope ./ (so a gateway's /d/<id>/ installs that panel)", m)
	}
	purposes := map[string]bool{}
	for _, ic := range m.Icons {
		purposes[ic.Sizes+" "+ic.Purpose] = true
		resp, err := http.Get(srv.URL + "/" + ic.Src)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Errorf("%s: %v", ic.Src, err)
			continue
		}
		if got := fmt.Sprintf("%dx%d", img.Bounds().Dx(), img.Bounds().Dy()); got != ic.Sizes || ic.Type != "image/png" {
			t.Errorf("%s is %s %s, the manifest says %s %s", ic.Src, got, resp.Header.Get("Content-Type"), ic.Sizes, ic.Type)
		}
	}
	for _, want := range []string{"192x192 any", "512x512 any", "512x512 maskable"} {
		if !purposes[want] {
			t.Errorf("no %s icon", want)
		}
	}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		t.Fatal(err)
	}
	scripts := 0
	err = fs.WalkDir(sub, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(name, ".js") {
			return err
		}
		b, err := fs.ReadFile(sub, name)
		if err != nil {
			return err
		}
		scripts++
		if strings.Contains(string(b), "serviceWorker") {
			t.Errorf("%s mentions serviceWorker", name)
		}
		return nil
	})
	if err != nil || scripts == 0 {
		t.Fatalf("walking the panel's scripts: %d read, err %v", scripts, err)
	}
}

// Chromium itself finds the panel installable, under its CSP.
func TestInstallableInBrowser(t *testing.T) {
	bridge := newFakeBridge()
	srv := httptest.NewServer(bridge)
	t.Cleanup(srv.Close)
	b := startBrowser(t, srv.URL)
	b.waitFor(t, `pibridge.state.status === 'live'`)
	var inst page.GetInstallabilityErrorsResult
	var man page.GetAppManifestResult
	b.Do(t, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		var err error
		if man, err = cdp.Call(ctx, tg, page.GetAppManifest, page.GetAppManifestParams{}); err != nil {
			return err
		}
		inst, err = cdp.Call(ctx, tg, page.GetInstallabilityErrors, cdp.Empty{})
		return err
	}))
	for _, e := range man.Errors {
		t.Errorf("manifest: %s (line %d)", e.Message, e.Line)
	}
	if !strings.HasSuffix(man.URL, "/manifest.webmanifest") || man.Manifest == nil {
		t.Errorf("manifest %q not found or not parsed", man.URL)
	}
	for _, e := range inst.InstallabilityErrors {
		t.Errorf("not installable: %s %v", e.ErrorID, e.ErrorArguments)
	}
	if n := eval[int](t, b, `navigator.serviceWorker ? navigator.serviceWorker.getRegistrations().then(r => r.length) : 0`); n != 0 {
		t.Errorf("%d service workers registered", n)
	}
}

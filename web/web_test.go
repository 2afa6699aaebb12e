package web

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func newServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func do(t *testing.T, method, url string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(body)
}

var wantHeaders = map[string]string{
	"Content-Security-Policy": contentSecurityPolicy,
	"X-Frame-Options":         "DENY",
	"X-Content-Type-Options":  "nosniff",
	"Referrer-Policy":         "no-referrer",
	"Cache-Control":           "no-cache",
}

func checkSecurityHeaders(t *testing.T, res *http.Response) {
	t.Helper()
	for k, want := range wantHeaders {
		if got := res.Header.Get(k); got != want {
			t.Errorf("%s %s: header %s = %q, want %q", res.Request.Method, res.Request.URL.Path, k, got, want)
		}
	}
}

func TestCSPValue(t *testing.T) {
	// The exact policy the spec asks for; a change here must be deliberate.
	const want = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
	if contentSecurityPolicy != want {
		t.Errorf("CSP = %q, want %q", contentSecurityPolicy, want)
	}
}

func TestHandler(t *testing.T) {
	handlers := map[string]http.Handler{
		"embedded": Handler(),
		"dir":      HandlerFromDir("static"),
	}
	tests := []struct {
		method, path string
		status       int
		contentType  string // prefix
		bodyContains string
		allow        string
	}{
		{"GET", "/", 200, "text/html; charset=utf-8", `<script type="module" src="app.js"></script>`, ""},
		{"HEAD", "/", 200, "text/html; charset=utf-8", "", ""},
		{"GET", "/index.html", 200, "text/html; charset=utf-8", "<!doctype html>", ""},
		{"GET", "/app.js", 200, "text/javascript; charset=utf-8", "new WebSocket(", ""},
		{"GET", "/style.css", 200, "text/css; charset=utf-8", "prefers-color-scheme", ""},
		{"GET", "/chart.js", 200, "text/javascript; charset=utf-8", "export class Chart", ""},
		{"GET", "/vendor/uplot/uPlot.iife.min.js", 200, "text/javascript; charset=utf-8", "var uPlot=", ""},
		{"GET", "/vendor/uplot/uPlot.min.css", 200, "text/css; charset=utf-8", ".uplot", ""},
		{"GET", "/nope.js", 404, "text/plain", "", ""},
		{"GET", "/static/app.js", 404, "text/plain", "", ""},
		{"GET", "/app.js/", 404, "text/plain", "", ""},
		{"GET", "/../web.go", 404, "text/plain", "", ""},
		{"GET", "/%2e%2e/web.go", 404, "text/plain", "", ""},
		{"GET", "//app.js", 404, "text/plain", "", ""},
		{"POST", "/", 405, "text/plain", "", "GET, HEAD"},
		{"PUT", "/app.js", 405, "text/plain", "", "GET, HEAD"},
		{"DELETE", "/nope", 405, "text/plain", "", "GET, HEAD"},
	}
	for name, h := range handlers {
		srv := newServer(t, h)
		for _, tt := range tests {
			t.Run(name+" "+tt.method+" "+tt.path, func(t *testing.T) {
				res, body := do(t, tt.method, srv.URL+tt.path, nil)
				if res.StatusCode != tt.status {
					t.Fatalf("status = %d, want %d; body %q", res.StatusCode, tt.status, body)
				}
				checkSecurityHeaders(t, res)
				if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, tt.contentType) {
					t.Errorf("Content-Type = %q, want %q", ct, tt.contentType)
				}
				if !strings.Contains(body, tt.bodyContains) {
					t.Errorf("body does not contain %q", tt.bodyContains)
				}
				if tt.method == "HEAD" && body != "" {
					t.Errorf("HEAD has a body of %d bytes", len(body))
				}
				if got := res.Header.Get("Allow"); got != tt.allow {
					t.Errorf("Allow = %q, want %q", got, tt.allow)
				}
			})
		}
	}
}

// TestRevalidation: Cache-Control no-cache makes the browser ask every time;
// the ETag turns that into a 304 that still carries the security headers.
func TestRevalidation(t *testing.T) {
	srv := newServer(t, Handler())
	res, _ := do(t, "GET", srv.URL+"/app.js", nil)
	etag := res.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	res, body := do(t, "GET", srv.URL+"/app.js", http.Header{"If-None-Match": {etag}})
	if res.StatusCode != http.StatusNotModified || body != "" {
		t.Fatalf("status = %d, body %d bytes; want 304 and no body", res.StatusCode, len(body))
	}
	checkSecurityHeaders(t, res)

	// Ranges are ignored: the whole file, with every header.
	res, body = do(t, "GET", srv.URL+"/app.js", http.Header{"Range": {"bytes=999999-"}})
	if res.StatusCode != http.StatusOK || len(body) == 0 {
		t.Fatalf("Range: status = %d, body %d bytes; want 200 and the file", res.StatusCode, len(body))
	}
	checkSecurityHeaders(t, res)
}

func TestHandlerFromDirSeesEdits(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) {
		if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv := newServer(t, HandlerFromDir(dir))
	write("one")
	if _, body := do(t, "GET", srv.URL+"/", nil); body != "one" {
		t.Fatalf("body = %q, want %q", body, "one")
	}
	write("two")
	if _, body := do(t, "GET", srv.URL+"/", nil); body != "two" {
		t.Fatalf("after edit: body = %q, want %q", body, "two")
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if res, _ := do(t, "GET", srv.URL+"/sub", nil); res.StatusCode != http.StatusNotFound {
		t.Errorf("directory: status = %d, want 404", res.StatusCode)
	}
}

var (
	// A <script> element with anything but whitespace between its tags.
	inlineScript = regexp.MustCompile(`(?is)<script\b[^>]*>(.*?)</script\s*>`)
	// An HTML start tag, and the attributes the CSP would block in one.
	htmlTag       = regexp.MustCompile(`(?s)<[a-zA-Z][a-zA-Z0-9-]*(\s[^<>]*)?>`)
	inlineAttr    = regexp.MustCompile(`(?i)(^|[\s"'/])(on[a-z]+|style)\s*=`)
	scriptSetAttr = regexp.MustCompile(`(?i)setAttribute\(\s*["'` + "`" + `](style|on[a-z]+)["'` + "`" + `]`)
	scriptHTML    = regexp.MustCompile(`\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write`)
	remoteURL     = regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?(https?:)?//`)
)

// TestNoInlineCode keeps the panel compatible with its CSP: no inline script,
// no event-handler or style attributes (in HTML, or built as HTML strings or
// set as attributes in JS), nothing loaded from another origin.
func TestNoInlineCode(t *testing.T) {
	var files int
	err := fs.WalkDir(static, "static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		data, err := fs.ReadFile(static, name)
		if err != nil {
			return err
		}
		text := string(data)
		for _, m := range inlineScript.FindAllStringSubmatch(text, -1) {
			if strings.TrimSpace(m[1]) != "" {
				t.Errorf("%s: inline script %.60q", name, m[0])
			}
		}
		for _, tag := range htmlTag.FindAllString(text, -1) {
			if m := inlineAttr.FindStringSubmatch(tag); m != nil {
				t.Errorf("%s: inline %s= attribute in %.80q", name, m[2], tag)
			}
		}
		if strings.HasSuffix(name, ".js") {
			for _, re := range []*regexp.Regexp{scriptSetAttr, scriptHTML} {
				if m := re.FindString(text); m != "" {
					t.Errorf("%s: %q bypasses the CSP-safe DOM building", name, m)
				}
			}
		}
		if m := remoteURL.FindString(text); m != "" {
			t.Errorf("%s: remote or imported resource %q", name, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 3 {
		t.Errorf("scanned %d files, want index.html, app.js and style.css at least", files)
	}
}

// TestScannerCatchesViolations guards the scanner itself against regexes that
// silently match nothing.
func TestScannerCatchesViolations(t *testing.T) {
	bad := []string{
		`<script>alert(1)</script>`,
		`<button onclick="go()">`,
		`<div class="x" style="color:red">`,
		`<img src=x onerror=alert(1)>`,
	}
	for _, s := range bad {
		found := false
		for _, m := range inlineScript.FindAllStringSubmatch(s, -1) {
			found = found || strings.TrimSpace(m[1]) != ""
		}
		for _, tag := range htmlTag.FindAllString(s, -1) {
			found = found || inlineAttr.MatchString(tag)
		}
		if !found {
			t.Errorf("scanner misses %q", s)
		}
	}
	for _, s := range []string{`el.setAttribute('style', 'x')`, `el.setAttribute("onclick", f)`} {
		if !scriptSetAttr.MatchString(s) {
			t.Errorf("scanner misses %q", s)
		}
	}
	for _, s := range []string{`<script type="module" src="app.js"></script>`, `<span data-onoff="1" class="x">`} {
		for _, tag := range htmlTag.FindAllString(s, -1) {
			if inlineAttr.MatchString(tag) {
				t.Errorf("false positive on %q", s)
			}
		}
	}
}

// uplotVersion is the vendored uPlot; vendor/uplot/README.md says where it
// came from and how to update it.
const uplotVersion = "1.6.32"

// TestVendoredUPlot: the chart library is committed whole, with its licence
// and provenance, and the page loads it from this origin before app.js.
func TestVendoredUPlot(t *testing.T) {
	read := func(name string) string {
		t.Helper()
		b, err := fs.ReadFile(static, "static/vendor/uplot/"+name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if js := read("uPlot.iife.min.js"); !strings.HasPrefix(js, "/*! https://github.com/leeoniya/uPlot (v"+uplotVersion+") */") {
		t.Errorf("uPlot.iife.min.js is not uPlot %s: %.60q", uplotVersion, js)
	}
	if lic := read("LICENSE"); !strings.Contains(lic, "The MIT License") || !strings.Contains(lic, "Leon Sorokin") {
		t.Error("vendor/uplot/LICENSE is not uPlot's MIT licence")
	}
	if readme := read("README.md"); !strings.Contains(readme, "uPlot "+uplotVersion) || !strings.Contains(readme, "registry.npmjs.org/uplot/-/uplot-"+uplotVersion+".tgz") {
		t.Errorf("vendor/uplot/README.md does not name version %s and its source", uplotVersion)
	}
	read("uPlot.min.css")
	index, err := fs.ReadFile(static, "static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	html := string(index)
	lib := strings.Index(html, `<script defer src="vendor/uplot/uPlot.iife.min.js"></script>`)
	app := strings.Index(html, `<script type="module" src="app.js"></script>`)
	if lib < 0 || app < 0 || lib > app {
		t.Error("index.html must load vendor/uplot/uPlot.iife.min.js (defer) before app.js: deferred scripts run in order")
	}
	if !strings.Contains(html, `<link rel="stylesheet" href="vendor/uplot/uPlot.min.css">`) {
		t.Error("index.html does not load uPlot's style sheet")
	}
}

// Every embedded file has its type in contentTypes: a miss would fall to
// octet-stream, and looking it up in mime would load the system's table.
func TestContentTypesCoverStatic(t *testing.T) {
	err := fs.WalkDir(static, "static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if _, ok := contentTypes[strings.ToLower(path.Ext(name))]; !ok {
			t.Errorf("%s: no entry in contentTypes", name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

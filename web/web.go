// Package web holds the browser control panel, embedded with go:embed.
// Handler serves it with a strict Content-Security-Policy; HandlerFromDir
// serves a checkout of static/ instead, so the panel can be edited live.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// contentSecurityPolicy is sent with every response. The panel has no inline
// script or style and loads nothing from another origin; connect-src 'self'
// also covers ws:// and wss:// to the same host in current browsers.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; " +
	"base-uri 'none'; form-action 'self'"

// Handler serves the embedded panel: index.html at "/", the other files of
// static/ by name. Only GET and HEAD are allowed.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // unreachable: "static" is a valid path embedded above
	}
	// The embedded files never change, so hash them once. Their bytes are
	// not copied to the heap (140 KB of it): each response reads the
	// embedded file, which is already in the binary.
	assets := map[string]*asset{}
	buf := make([]byte, 4<<10) // io.Copy would take 32 KiB per file
	err = fs.WalkDir(sub, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := sub.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		sum := sha256.New()
		if _, err := io.CopyBuffer(sum, f, buf); err != nil {
			return err
		}
		assets[name] = &asset{fsys: sub, name: name, etag: etag(sum.Sum(nil)), contentType: contentType(name)}
		return nil
	})
	if err != nil {
		panic(err) // unreachable: reading an embed.FS does not fail
	}
	return &handler{load: func(name string) (*asset, error) {
		if a, ok := assets[name]; ok {
			return a, nil
		}
		return nil, fs.ErrNotExist
	}}
}

// HandlerFromDir serves the panel from dir (normally web/static of a
// checkout) with the same headers as Handler, reading the files on every
// request so edits show up on reload. It is meant for development.
func HandlerFromDir(dir string) http.Handler {
	fsys := os.DirFS(dir)
	return &handler{load: func(name string) (*asset, error) {
		return readAsset(fsys, name)
	}}
}

// asset is one file of the panel, ready to serve: its bytes in data, or
// else the file name in fsys (an embed.FS, whose files can seek).
type asset struct {
	data        []byte
	fsys        fs.FS
	name        string
	etag        string
	contentType string
}

// body returns the asset's content and a function to release it.
func (a *asset) body() (io.ReadSeeker, func(), error) {
	if a.fsys == nil {
		return bytes.NewReader(a.data), func() {}, nil
	}
	f, err := a.fsys.Open(a.name)
	if err != nil {
		return nil, nil, err
	}
	rs, ok := f.(io.ReadSeeker)
	if !ok {
		f.Close()
		return nil, nil, fmt.Errorf("%s: cannot seek", a.name)
	}
	return rs, func() { f.Close() }, nil
}

func etag(sum []byte) string { return `"` + hex.EncodeToString(sum[:12]) + `"` }

func readAsset(fsys fs.FS, name string) (*asset, error) {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	return &asset{
		data:        data,
		etag:        etag(sum[:]),
		contentType: contentType(name),
	}, nil
}

type handler struct {
	load func(name string) (*asset, error)
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	SetSecurityHeaders(w.Header())
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name, ok := assetName(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	a, err := h.load(name)
	if err != nil { // missing, a directory, or unreadable in the dev tree
		http.NotFound(w, r)
		return
	}
	body, release, err := a.body()
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	defer release()
	w.Header().Set("Content-Type", a.contentType)
	w.Header().Set("ETag", a.etag)
	// The files are a few KiB: always send them whole. This also keeps the
	// headers above on every response (ServeContent's 416 drops Cache-Control).
	r.Header.Del("Range")
	http.ServeContent(w, r, name, time.Time{}, body)
}

// SetSecurityHeaders sets the headers every response carries, errors
// included; the fleet gateway's page carries the same.
// no-cache (revalidate, not "do not store") makes a browser pick up the panel of
// a new binary at once; the ETag keeps that revalidation cheap.
func SetSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
}

// assetName maps a URL path to a file name inside static/, rejecting
// anything that is not a plain relative path (no "..", no empty elements,
// no trailing slash).
func assetName(urlPath string) (string, bool) {
	if urlPath == "/" {
		return "index.html", true
	}
	name, ok := strings.CutPrefix(urlPath, "/")
	if !ok || !fs.ValidPath(name) || name == "." {
		return "", false
	}
	return name, true
}

// contentTypes pins the types the panel depends on: with nosniff, a module
// script must be served as JavaScript, whatever /etc/mime.types says. The
// table is complete for static/ on purpose: mime.TypeByExtension would
// load the system's MIME database (/usr/share/mime/globs2, about 0.4 MB of
// heap) for good. Files without an extension there are licence texts.
var contentTypes = map[string]string{
	".html":        "text/html; charset=utf-8",
	".js":          "text/javascript; charset=utf-8",
	".css":         "text/css; charset=utf-8",
	".json":        "application/json",
	".map":         "application/json",
	".webmanifest": "application/manifest+json",
	".svg":         "image/svg+xml",
	".png":         "image/png",
	".ico":         "image/x-icon",
	".txt":         "text/plain; charset=utf-8",
	".md":          "text/markdown; charset=utf-8",
	"":             "text/plain; charset=utf-8",
}

func contentType(name string) string {
	if t, ok := contentTypes[strings.ToLower(path.Ext(name))]; ok {
		return t
	}
	return "application/octet-stream"
}

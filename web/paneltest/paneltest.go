// Package paneltest drives the panel in Debian's headless Chromium for the
// browser tests of web and cmd/bridge: JavaScript, real mouse and keyboard
// input, viewports and screenshots. A Browser fails its test on every
// uncaught exception, console error and Content-Security-Policy violation.
package paneltest

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/input"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Chromium is Debian's browser, which `make test` installs.
const Chromium = "/usr/bin/chromium"

// WaitTimeout bounds WaitFor.
const WaitTimeout = 10 * time.Second

// cspReporter runs in every document before its own scripts: each CSP
// violation becomes a console error, which the Browser counts. Chromium also
// logs its own "Refused to …" message; both are checked, so that a change in
// either path cannot hide a violation.
const cspReporter = `document.addEventListener('securitypolicyviolation', (e) => {
  console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline') +
    ' at ' + e.sourceFile + ':' + e.lineNumber);
}, true);`

const cspListenerPrefix = "CSP violation: "

// Browser is one headless tab. Its methods fail the test they are given
// (a subtest may use the Browser of its parent); the problems it sees fail
// the test that started it.
type Browser struct {
	ctx context.Context

	mu        sync.Mutex
	problems  []string
	tolerated []string // network errors while AllowNetworkErrors was on
	// allowed are the [from, to] windows of AllowNetworkErrors in Unix ms;
	// to is +Inf while open. Chromium's entries carry their own time, and
	// some arrive a while after it.
	allowed   [][2]float64
	probing   bool
	probeHits map[string]int // "listener", "chromium": while probing
}

// Start launches Chromium with a fresh profile; it is stopped when the test
// ends. The problems it saw are reported then, as test errors.
func Start(t testing.TB, timeout time.Duration) *Browser {
	t.Helper()
	return StartWith(t, timeout, nil)
}

// StartWith is Start with extra Chromium command-line flags, such as
// {"ignore-certificate-errors-spki-list": hash} to trust a test's CA.
func StartWith(t testing.TB, timeout time.Duration, flags map[string]any) *Browser {
	t.Helper()
	if _, err := os.Stat(Chromium); err != nil {
		t.Fatalf("%s not found: install chromium (apt-get install chromium)", Chromium)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(Chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("hide-scrollbars", true),
	}
	for k, v := range flags {
		opts = append(opts, chromedp.Flag(k, v))
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(cancelBrowser)
	b := &Browser{ctx: ctx}
	if err := chromedp.Listen(ctx, b.onEvent); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument,
			page.AddScriptToEvaluateOnNewDocumentParams{Source: cspReporter})
		return err
	}))
	if err != nil {
		t.Fatalf("install the CSP reporter: %v", err)
	}
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, p := range b.problems {
			t.Errorf("browser: %s", p)
		}
		if len(b.tolerated) > 0 {
			t.Logf("browser: %d network errors while they were expected, e.g. %s", len(b.tolerated), b.tolerated[0])
		}
	})
	return b
}

// onEvent runs on chromedp's event goroutine: it only records.
func (b *Browser) onEvent(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		desc := d.Text
		if d.Exception != nil {
			desc += " " + d.Exception.Description
		}
		b.problems = append(b.problems, fmt.Sprintf("uncaught exception at %s:%d: %s", d.URL, d.LineNumber+1, desc))
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError && ev.Type != runtime.ConsoleAPICalledTypeAssert {
			return
		}
		var args []string
		for _, a := range ev.Args {
			switch {
			case a.Description != "":
				args = append(args, a.Description)
			case len(a.Value) > 0:
				args = append(args, strings.Trim(string(a.Value), `"`))
			default:
				args = append(args, string(a.Type))
			}
		}
		text := strings.Join(args, " ")
		if b.probing && strings.HasPrefix(text, cspListenerPrefix) {
			b.probeHits["listener"]++
			return
		}
		b.problems = append(b.problems, "console."+string(ev.Type)+": "+text)
	case *cdplog.EventEntryAdded:
		e := ev.Entry
		csp := strings.Contains(e.Text, "Content Security Policy")
		switch {
		case csp && b.probing:
			b.probeHits["chromium"]++
		case csp:
			b.problems = append(b.problems, "CSP: "+e.Text)
		case e.Level != cdplog.EntryLevelError:
		case e.Source == cdplog.EntrySourceNetwork && b.networkAllowedAt(float64(e.Timestamp)):
			b.tolerated = append(b.tolerated, e.Text)
		default:
			b.problems = append(b.problems, fmt.Sprintf("console %s error: %s %s", e.Source, e.Text, e.URL))
		}
	}
}

// AllowNetworkErrors tolerates the errors Chromium logs for failed requests
// (a refused WebSocket handshake, a 401) while the test makes them happen:
// a bridge that is restarting, a login that is still needed.
func (b *Browser) AllowNetworkErrors(allow bool) {
	now := float64(time.Now().UnixMicro()) / 1000
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(b.allowed)
	open := n > 0 && math.IsInf(b.allowed[n-1][1], 1)
	switch {
	case allow && !open:
		b.allowed = append(b.allowed, [2]float64{now, math.Inf(1)})
	case !allow && open:
		b.allowed[n-1][1] = now
	}
}

func (b *Browser) networkAllowedAt(ms float64) bool {
	for _, w := range b.allowed {
		if ms >= w[0] && ms <= w[1] {
			return true
		}
	}
	return false
}

// Problems returns what would fail the test so far.
func (b *Browser) Problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...)
}

// ProbeCSP proves that a violation would be caught: it sets a style
// attribute, which the panel's policy forbids, and waits until both the
// page's securitypolicyviolation listener and Chromium's own log report it.
// The probe's reports are not problems.
func (b *Browser) ProbeCSP(t testing.TB) {
	t.Helper()
	b.mu.Lock()
	b.probing, b.probeHits = true, map[string]int{}
	b.mu.Unlock()
	Eval[bool](t, b, `(() => {
		const probe = document.createElement('span');
		document.body.append(probe);
		probe.setAttribute('style', 'color: red');
		probe.remove();
		return true;
	})()`)
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		listener, chromium := b.probeHits["listener"], b.probeHits["chromium"]
		b.mu.Unlock()
		if listener > 0 && chromium > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a style attribute went unreported: securitypolicyviolation %d, Chromium log %d", listener, chromium)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // stragglers of the probe
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}

// Navigate loads url in the tab.
func (b *Browser) Navigate(t testing.TB, url string) {
	t.Helper()
	if err := chromedp.Do(b.ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("navigate to %s: %v", url, err)
	}
}

// Do runs chromedp actions in the tab.
func (b *Browser) Do(t testing.TB, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

// Eval runs a JavaScript expression, awaits it if it is a promise, and
// decodes its result into T.
func Eval[T any](t testing.TB, b *Browser, expr string) T {
	t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("eval %s: %v", expr, err)
	}
	return v
}

// WaitFor polls a JavaScript condition until it holds, for up to WaitTimeout.
func (b *Browser) WaitFor(t testing.TB, cond string) {
	t.Helper()
	b.WaitWithin(t, WaitTimeout, cond)
}

// WaitWithin polls a JavaScript condition until it holds.
func (b *Browser) WaitWithin(t testing.TB, d time.Duration, cond string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !Eval[bool](t, b, "!!("+cond+")") {
		if time.Now().After(deadline) {
			t.Fatalf("after %v still not true: %s", d, cond)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Text returns the trimmed text of the first element matching selector.
func (b *Browser) Text(t testing.TB, selector string) string {
	t.Helper()
	return Eval[string](t, b, fmt.Sprintf(`(document.querySelector(%q)?.textContent ?? '<no %s>').trim()`, selector, selector))
}

// Click sends a real mouse click to the centre of the first element
// matching selector, scrolling it into view: hit testing, focus and
// disabled controls behave as for a person.
func (b *Browser) Click(t testing.TB, selector string) {
	t.Helper()
	b.Do(t, chromedp.Click(chromedp.CSS(selector)))
}

// Keys focuses the element and types keys (see chromedp/kb for named keys).
func (b *Browser) Keys(t testing.TB, selector, keys string) {
	t.Helper()
	b.Do(t, chromedp.Focus(chromedp.CSS(selector)), chromedp.KeyEvent(keys))
}

type rect struct{ X, Y, W, H float64 }

// Drag presses the left mouse button at fraction from of the element's
// width (at its vertical centre), moves in steps with the button held, one
// every interval, to fraction to, and releases: a person dragging a slider.
func (b *Browser) Drag(t testing.TB, selector string, from, to float64, steps int, interval time.Duration) {
	t.Helper()
	r := Eval[rect](t, b, fmt.Sprintf(`(() => {
		const e = document.querySelector(%q);
		e.scrollIntoView({block: 'center'});
		const r = e.getBoundingClientRect();
		return {X: r.left, Y: r.top, W: r.width, H: r.height};
	})()`, selector))
	at := func(f float64) (float64, float64) { return r.X + f*r.W, r.Y + r.H/2 }
	mouse := func(typ input.DispatchMouseEventType, f float64, buttons int64) {
		x, y := at(f)
		p := input.DispatchMouseEventParams{Type: typ, X: x, Y: y, Button: input.MouseButtonLeft, Buttons: buttons, ClickCount: 1}
		if typ == input.DispatchMouseEventTypeMouseMoved {
			p.ClickCount = 0
		}
		b.Do(t, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, input.DispatchMouseEvent, p)
			return err
		}))
	}
	mouse(input.DispatchMouseEventTypeMousePressed, from, 1)
	for i := 1; i <= steps; i++ {
		time.Sleep(interval)
		mouse(input.DispatchMouseEventTypeMouseMoved, from+(to-from)*float64(i)/float64(steps), 1)
	}
	mouse(input.DispatchMouseEventTypeMouseReleased, to, 0)
}

// Viewport is a window size and colour scheme to emulate.
type Viewport struct {
	Width, Height int64
	Mobile        bool // mobile meta-viewport handling and touch
	Dark          bool // prefers-color-scheme: dark
}

var (
	Desktop = Viewport{Width: 1280, Height: 800}
	Phone   = Viewport{Width: 390, Height: 844, Mobile: true}
)

// SetViewport emulates v until the next call.
func (b *Browser) SetViewport(t testing.TB, v Viewport) {
	t.Helper()
	scheme := "light"
	if v.Dark {
		scheme = "dark"
	}
	b.Do(t, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
			Width: v.Width, Height: v.Height, DeviceScaleFactor: 1, Mobile: v.Mobile,
		}); err != nil {
			return err
		}
		if _, err := cdp.Call(ctx, tg, emulation.SetTouchEmulationEnabled, emulation.SetTouchEmulationEnabledParams{Enabled: v.Mobile}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
		})
		return err
	}))
	// The mouse out of the way, so that no control shows its hover style.
	b.Do(t, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, 0, 0))
	// Two frames: layout, ResizeObserver callbacks, then the charts' redraw.
	Eval[bool](t, b, `new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))`)
}

// Screenshot captures the viewport as PNG into path, creating its directory.
func (b *Browser) Screenshot(t testing.TB, path string) {
	t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
}

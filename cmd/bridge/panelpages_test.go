package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pibridge/web/paneltest"
)

// The panel's Logs, Device and Settings pages against the real bridge in
// headless Chromium, signed in with the control token, then with the read
// token. PIBRIDGE_SCREENSHOTS=1 writes their screenshots into docs/.

func screenshotDir(t *testing.T) string {
	if os.Getenv("PIBRIDGE_SCREENSHOTS") == "1" {
		return filepath.Join("..", "..", "docs")
	}
	return t.TempDir()
}

const logsJS = `pibridge.state.pages.pages.logs`

// pokeJS opens and closes a second WebSocket from the page: the bridge
// logs both (part ws, debug), so records arrive while the test watches.
const pokeJS = `new Promise((resolve) => {
	const u = new URL('ws', location.href);
	u.protocol = 'ws:';
	const s = new WebSocket(u.href);
	s.onmessage = () => { s.close(); resolve(true); };
	s.onerror = () => resolve(false);
})`

func TestPanelPages(t *testing.T) {
	_, br := loginPage(t, panelToken, panelReadToken)
	if msg := signIn(t, br, panelToken); msg != "" {
		t.Fatalf("login: %q", msg)
	}
	br.AllowNetworkErrors(false)
	br.WaitFor(t, `!document.querySelector('#pages a[data-page="settings"]').hidden &&
		!document.querySelector('#pages a[data-page="logs"]').hidden &&
		!document.querySelector('#pages a[data-page="device"]').hidden`)
	shots := screenshotDir(t)

	t.Run("logs stream and filter", func(t *testing.T) {
		br.Click(t, `#pages a[data-page="logs"]`)
		br.WaitFor(t, `!document.querySelector('#page-logs').hidden && document.querySelector('#panel').dataset.page === 'logs'`)
		// The ring's records so far: the start-up's, "panel listening" among them.
		br.WaitFor(t, `[...document.querySelectorAll('#logs-list .log')].some(e => e.textContent.includes('panel listening'))`)
		if !paneltest.Eval[bool](t, br, `document.querySelector('[data-page="signals"]') && document.querySelector('.group[data-kind="output"]').offsetParent === null`) {
			t.Error("the signal tiles are still shown on the logs page")
		}
		// Live: a record made now shows without a reload.
		paneltest.Eval[bool](t, br, `(document.querySelector('#logs-level').value = 'DEBUG', document.querySelector('#logs-level').dispatchEvent(new Event('change')), true)`)
		before := paneltest.Eval[int](t, br, `document.querySelectorAll('#logs-list .log[data-part="ws"]').length`)
		paneltest.Eval[bool](t, br, pokeJS)
		br.WaitFor(t, fmt.Sprintf(`[...document.querySelectorAll('#logs-list .log[data-part="ws"]')].filter(e => e.textContent.includes('websocket client')).length > %d`, before))

		// Filter by part: only gpio records listed, and some are.
		paneltest.Eval[bool](t, br, `(document.querySelector('#logs-part').value = 'gpio', document.querySelector('#logs-part').dispatchEvent(new Event('change')), true)`)
		parts := paneltest.Eval[[]string](t, br, `[...document.querySelectorAll('#logs-list .log')].map(e => e.dataset.part)`)
		if len(parts) == 0 {
			t.Error("no gpio record listed")
		}
		for _, p := range parts {
			if p != "gpio" {
				t.Errorf("part filter gpio lists a %q record", p)
			}
		}
		// Filter by level: warnings and up hides the info and debug records.
		paneltest.Eval[bool](t, br, `(document.querySelector('#logs-part').value = '', document.querySelector('#logs-part').dispatchEvent(new Event('change')),
			document.querySelector('#logs-level').value = 'WARN', document.querySelector('#logs-level').dispatchEvent(new Event('change')), true)`)
		levels := paneltest.Eval[[]string](t, br, `[...document.querySelectorAll('#logs-list .log')].map(e => e.dataset.level)`)
		for _, l := range levels {
			if l != "WARN" && l != "ERROR" {
				t.Errorf("level filter WARN lists a %s record", l)
			}
		}
		paneltest.Eval[bool](t, br, `(document.querySelector('#logs-level').value = 'DEBUG', document.querySelector('#logs-level').dispatchEvent(new Event('change')), true)`)

		// Pause: records keep arriving but the list stands still.
		br.Click(t, "#logs-pause")
		br.WaitFor(t, `document.querySelector('#logs-pause').getAttribute('aria-pressed') === 'true'`)
		shown := paneltest.Eval[int](t, br, `document.querySelectorAll('#logs-list .log').length`)
		kept := paneltest.Eval[int](t, br, logsJS+`.records.length`)
		paneltest.Eval[bool](t, br, pokeJS)
		br.WaitFor(t, fmt.Sprintf(`%s.records.length > %d`, logsJS, kept))
		if got := paneltest.Eval[int](t, br, `document.querySelectorAll('#logs-list .log').length`); got != shown {
			t.Errorf("paused list went from %d to %d records", shown, got)
		}
		if got := br.Text(t, "#logs-status"); !strings.HasPrefix(got, "paused") {
			t.Errorf("status while paused = %q", got)
		}
		br.Click(t, "#logs-pause")
		br.WaitFor(t, fmt.Sprintf(`document.querySelectorAll('#logs-list .log').length > %d`, shown))

		// Download: the same records as text, one a line.
		text := paneltest.Eval[string](t, br, `fetch(document.querySelector('#logs-download').href).then(async (r) =>
			(r.headers.get('Content-Disposition') || 'none') + '\n' + await r.text())`)
		if !strings.Contains(text, "attachment") || !strings.Contains(text, "INFO bridge: panel listening") {
			t.Errorf("download = %.300q", text)
		}
		br.Screenshot(t, filepath.Join(shots, "panel-logs.png"))
	})

	t.Run("the device page shows live numbers", func(t *testing.T) {
		br.Click(t, `#pages a[data-page="device"]`)
		br.WaitFor(t, `pibridge.state.pages.pages.device.refreshes >= 1`)
		for field, want := range map[string]string{
			"name": "pibridge demo", "id": "demo", "mqtt-connected": "connected", "board": "simulated board (board: sim)",
			"core": "alive", "run-clean": "clean",
		} {
			if got := br.Text(t, fmt.Sprintf(`#device-cards [data-field=%q]`, field)); got != want {
				t.Errorf("%s = %q, want %q", field, got, want)
			}
		}
		if got := br.Text(t, `[data-field="clients"]`); got == "0" || got == "—" {
			t.Errorf("clients connected = %q with this panel connected", got)
		}
		emitted := br.Text(t, `[data-field="emitted"]`)
		uptime := br.Text(t, `[data-field="uptime"]`)
		br.WaitWithin(t, 8*time.Second, fmt.Sprintf(`document.querySelector('[data-field="emitted"]').textContent !== %q &&
			document.querySelector('[data-field="uptime"]').textContent !== %q`, emitted, uptime))
		for _, sig := range []string{"led", "relay", "fan", "air.temperature", "cpu.temperature"} {
			row := paneltest.Eval[string](t, br, fmt.Sprintf(`document.querySelector('[data-table="pins"] tr[data-row=%q]')?.textContent ?? ''`, sig))
			if row == "" {
				t.Errorf("no row for %s in the pin table", sig)
			}
		}
		if row := paneltest.Eval[string](t, br, `document.querySelector('[data-table="pins"] tr[data-row="led"]').textContent`); !strings.Contains(row, "GPIO22") {
			t.Errorf("led row %q names no pin", row)
		}
		if n := paneltest.Eval[int](t, br, `document.querySelectorAll('[data-table="sensors"] tbody tr').length`); n != 2 {
			t.Errorf("%d sensor rows, want air and cpu", n)
		}
		br.Screenshot(t, filepath.Join(shots, "panel-device.png"))
	})

	t.Run("settings: an edit with two errors shows both at their lines", func(t *testing.T) {
		br.Click(t, `#pages a[data-page="settings"]`)
		br.WaitFor(t, `pibridge.state.pages.pages.settings.validations >= 1`)
		if got := paneltest.Eval[string](t, br, `document.querySelector('#config-verdict').dataset.state`); got != "valid" {
			t.Fatalf("the running config is %s: %s", got, br.Text(t, "#config-problems"))
		}
		if n := paneltest.Eval[int](t, br, `document.querySelectorAll('#config-signals tbody tr[data-signal]').length`); n < 8 {
			t.Errorf("signal table has %d rows", n)
		}
		// Break two lines: led's pin becomes one the board lacks, and relay
		// gets a key no one knows, on a line of its own.
		lines := paneltest.Eval[[]int](t, br, `(() => {
			const ta = document.querySelector('#config-text');
			const lines = ta.value.split('\n');
			const led = lines.findIndex(l => /GPIO22/.test(l));
			lines[led] = lines[led].replace('GPIO22', 'GPIO99');
			const relay = lines.findIndex(l => /GPIO23/.test(l));
			const m = /^(\s*)(-\s*)?/.exec(lines[relay]);
			const indent = m[1] + (m[2] ? ' '.repeat(m[2].length) : '');
			const flow = /[{}]/.test(lines[relay]);
			if (flow) lines[relay] = lines[relay].replace(/}\s*$/, ', colour: red}');
			else lines.splice(relay + 1, 0, indent + 'colour: red');
			ta.value = lines.join('\n');
			ta.dispatchEvent(new Event('input'));
			return [led + 1, relay + (flow ? 1 : 2)];
		})()`)
		br.WaitFor(t, `document.querySelector('#config-verdict').dataset.state === 'invalid' && document.querySelectorAll('#config-problems li').length === 2`)
		for _, line := range lines {
			if !paneltest.Eval[bool](t, br, fmt.Sprintf(`!!document.querySelector('#config-problems li[data-line="%d"]') && !!document.querySelector('#config-gutter li.bad[data-line="%d"]')`, line, line)) {
				t.Errorf("line %d not marked; problems: %s", line, br.Text(t, "#config-problems"))
			}
		}
		problems := br.Text(t, "#config-problems")
		if !strings.Contains(problems, "GPIO99") || !strings.Contains(problems, "colour") {
			t.Errorf("problems = %q", problems)
		}
		if !paneltest.Eval[bool](t, br, `document.querySelector('#config-apply').disabled`) {
			t.Error("Apply is enabled")
		}
		br.Click(t, fmt.Sprintf(`#config-problems li[data-line="%d"] button`, lines[0]))
		if sel := paneltest.Eval[string](t, br, `(() => { const ta = document.querySelector('#config-text'); return ta.value.slice(ta.selectionStart, ta.selectionEnd); })()`); !strings.Contains(sel, "GPIO99") {
			t.Errorf("going to line %d selected %q", lines[0], sel)
		}
		br.Screenshot(t, filepath.Join(shots, "panel-settings.png"))
	})

	t.Run("no console errors and no CSP violations", func(t *testing.T) {
		br.ProbeCSP(t)
		for _, p := range br.Problems() {
			t.Error(p)
		}
	})
}

func TestPanelPagesReadToken(t *testing.T) {
	_, br := loginPage(t, panelToken, panelReadToken)
	if msg := signIn(t, br, panelReadToken); msg != "" {
		t.Fatalf("login: %q", msg)
	}
	br.AllowNetworkErrors(false)
	br.WaitFor(t, `pibridge.state.readonly && !document.querySelector('#pages a[data-page="logs"]').hidden &&
		!document.querySelector('#pages a[data-page="device"]').hidden`)
	if !paneltest.Eval[bool](t, br, `document.querySelector('#pages a[data-page="settings"]').hidden`) {
		t.Error("the settings tab is shown to the read token")
	}
	br.Click(t, `#pages a[data-page="logs"]`)
	br.WaitFor(t, `document.querySelectorAll('#logs-list .log').length > 0`)
	br.Click(t, `#pages a[data-page="device"]`)
	br.WaitFor(t, `pibridge.state.pages.pages.device.refreshes >= 2`)

	// Straight to #settings: refused, and the text is not sent.
	br.AllowNetworkErrors(true) // the 403s
	paneltest.Eval[bool](t, br, `(location.hash = '#settings', true)`)
	br.WaitFor(t, `!document.querySelector('#settings-denied').hidden`)
	if got := br.Text(t, "#settings-denied"); !strings.Contains(got, "control token") {
		t.Errorf("denied message %q", got)
	}
	if v := paneltest.Eval[string](t, br, `document.querySelector('#config-text').value`); v != "" {
		t.Errorf("the config text reached a read-only session: %.80q", v)
	}
	codes := paneltest.Eval[[]int](t, br, `Promise.all([
		fetch('api/config').then(r => r.status),
		fetch('api/config/validate', {method: 'POST', body: 'device: {id: x}'}).then(r => r.status),
		fetch('api/config/apply', {method: 'POST', body: 'device: {id: x}'}).then(r => r.status),
		fetch('api/config/status').then(r => r.status),
		fetch('api/logs').then(r => r.status),
		fetch('api/device').then(r => r.status)])`)
	if fmt.Sprint(codes) != "[403 403 403 403 200 200]" {
		t.Errorf("read token: config, validate, apply, status, logs, device answer %v, want [403 403 403 403 200 200]", codes)
	}
	br.AllowNetworkErrors(false)
}

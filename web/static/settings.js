// The settings page (control token only): the running configuration in a
// plain textarea, checked by the bridge's own loader (the one of
// `bridge -check`) as you type, every problem marked at its line, and the
// resolved signal/pin table beside it. Apply (after a second click to
// confirm) writes the file and reconfigures the bridge; the page polls
// the outcome, applied or rolled back with the reason, across the
// moment the bridge's HTTP server restarts.

import {el, getJSON} from './dom.js';

const DEBOUNCE_MS = 300;
const POLL_MS = 500;
// POLL_LIMIT_MS: longer than the bridge's 15 s health gate and a restart.
const POLL_LIMIT_MS = 40000;

export class SettingsPage {
  constructor() {
    this.text = document.getElementById('config-text');
    this.gutter = document.getElementById('config-gutter');
    this.verdict = document.getElementById('config-verdict');
    this.problems = document.getElementById('config-problems');
    this.signals = document.querySelector('#config-signals tbody');
    this.warnings = document.getElementById('config-warnings');
    this.denied = document.getElementById('settings-denied');
    this.body = document.getElementById('settings-body');
    this.loaded = false;
    this.timer = 0;
    this.asked = 0; // validations sent; only the latest answer counts
    this.validations = 0; // answers shown (tests read it)
    this.report = null;
    this.badLines = new Map();
    this.lastRows = [];
    this.running = ''; // the running configuration's text
    this.applying = false;
    this.confirming = false;
    this.applyButton = document.getElementById('config-apply');
    this.cancelButton = document.getElementById('config-apply-cancel');
    this.applyNote = document.getElementById('config-apply-note');
    this.applyButton.addEventListener('click', () => this.onApply());
    this.cancelButton.addEventListener('click', () => this.unconfirm());
    this.text.addEventListener('input', () => {
      this.unconfirm();
      this.renderGutter();
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.validate(), DEBOUNCE_MS);
    });
    this.text.addEventListener('scroll', () => { this.gutter.scrollTop = this.text.scrollTop; });
  }

  async show() {
    if (this.loaded) return;
    const {status, body} = await getJSON('api/config');
    if (status !== 200 || !body) {
      this.deny(status === 403 ? 'Settings need the control token.' : `Settings are not available (HTTP ${status}).`);
      return;
    }
    this.loaded = true;
    this.denied.hidden = true;
    this.body.hidden = false;
    document.getElementById('config-path').textContent = body.path || 'built-in demo (no -config)';
    this.text.value = body.text || '';
    this.running = this.text.value;
    this.renderGutter();
    this.validate();
  }

  hide() {
    clearTimeout(this.timer);
  }

  // deny shows why there are no settings, without asking the bridge.
  deny(text) {
    this.loaded = false;
    this.text.value = '';
    this.denied.hidden = false;
    this.denied.textContent = text;
    this.body.hidden = true;
  }

  async validate() {
    const asked = ++this.asked;
    this.verdict.textContent = 'checking…';
    this.verdict.dataset.state = 'checking';
    const {status, body} = await getJSON('api/config/validate', {
      method: 'POST',
      headers: {'Content-Type': 'application/yaml'},
      body: this.text.value,
    });
    if (asked !== this.asked) return; // a newer edit is being checked
    if (status !== 200 || !body) {
      this.verdict.textContent = status === 0 ? 'The bridge cannot be reached.' : `Cannot check (HTTP ${status}).`;
      this.verdict.dataset.state = 'error';
      return;
    }
    this.report = body;
    this.validations++;
    this.render(body);
  }

  // updateApply enables Apply for a valid text that differs from the
  // running one, while no apply is under way.
  updateApply() {
    const ok = !!this.report && this.report.valid && this.text.value !== this.running && !this.applying;
    this.applyButton.disabled = !ok;
  }

  unconfirm() {
    if (!this.confirming) return;
    this.confirming = false;
    this.applyButton.textContent = 'Apply';
    this.cancelButton.hidden = true;
  }

  async onApply() {
    if (!this.confirming) {
      this.confirming = true;
      this.applyButton.textContent = 'Confirm apply';
      this.cancelButton.hidden = false;
      this.applyNote.textContent = 'Outputs that do not change keep their state; changed ones restart from their initial level, removed ones go to their safe state. Confirm?';
      return;
    }
    this.unconfirm();
    this.applying = true;
    this.updateApply();
    this.setNote('applying', 'Applying…');
    const {status, body} = await getJSON('api/config/apply', {
      method: 'POST',
      headers: {'Content-Type': 'application/yaml'},
      body: this.text.value,
    });
    if (status !== 202 || !body) {
      this.applying = false;
      this.setNote('refused', `Not applied: ${(body && body.error) || `HTTP ${status}`}`);
      if (body && body.report) this.render(body.report);
      this.updateApply();
      return;
    }
    const st = await this.poll(body.id);
    this.applying = false;
    if (st && st.state === 'applied') {
      this.setNote('applied', `Applied${describe(st.changes)}.`);
    } else if (st && st.state === 'rolled_back') {
      this.setNote('rolled_back', `Rolled back to the previous configuration: ${st.reason}`);
    } else {
      this.setNote('error', 'No answer from the bridge about the apply; reload the page.');
    }
    // The running configuration and its table, as the bridge has them now.
    this.loaded = false;
    await this.show();
  }

  // poll asks for the apply's outcome until it is no longer under way.
  async poll(id) {
    const until = Date.now() + POLL_LIMIT_MS;
    while (Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      const {status, body} = await getJSON('api/config/status');
      if (status === 200 && body && body.id === id && body.state !== 'applying') return body;
    }
    return null;
  }

  setNote(state, text) {
    this.applyNote.dataset.state = state;
    this.applyNote.textContent = text;
  }

  render(rep) {
    const problems = Array.isArray(rep.problems) ? rep.problems : [];
    this.verdict.dataset.state = rep.valid ? 'valid' : 'invalid';
    this.verdict.textContent = rep.valid
      ? 'Valid: this is what `bridge -check` would accept.'
      : `${problems.length} problem${problems.length === 1 ? '' : 's'}`;
    this.badLines = new Map();
    for (const p of problems) {
      if (p.line > 0) this.badLines.set(p.line, [...(this.badLines.get(p.line) || []), p.msg]);
    }
    this.problems.replaceChildren(...problems.map((p) => {
      const item = el('li', {'class': 'problem', 'data-line': p.line > 0 ? p.line : null},
        p.line > 0 ? el('button', {'type': 'button', 'class': 'line-link', 'aria-label': `Go to line ${p.line}`}, `Line ${p.line}`) : '',
        el('span', {class: 'problem-msg'}, p.msg));
      const link = item.querySelector('button');
      if (link) link.addEventListener('click', () => this.goToLine(p.line));
      return item;
    }));
    this.renderGutter();
    let rows = Array.isArray(rep.signals) ? rep.signals : [];
    const stale = rows.length === 0 && !rep.valid && this.lastRows.length > 0;
    if (stale) rows = this.lastRows; // the last text that resolved, dimmed
    else this.lastRows = rows;
    this.signals.closest('table').classList.toggle('stale', stale);
    this.signals.closest('table').title = stale ? 'From the last text without pin problems' : '';
    this.signals.replaceChildren(...rows.map((s) => el('tr', {'data-signal': s.name},
      el('td', {}, s.name), el('td', {}, `${s.kind}${s.writable ? ' (writable)' : ''}`), el('td', {}, s.pin || '—'), el('td', {}, s.unit || ''))));
    if (rows.length === 0) {
      this.signals.append(el('tr', {}, el('td', {colspan: 4, class: 'muted'}, rep.valid ? 'No signals.' : 'Fix the problems to see the table.')));
    }
    this.warnings.replaceChildren(...(rep.warnings || []).map((w) => el('li', {}, w)));
    this.updateApply();
  }

  // renderGutter numbers the lines and marks those with a problem.
  renderGutter() {
    const lines = this.text.value.split('\n').length;
    const items = [];
    for (let i = 1; i <= lines; i++) {
      const msgs = this.badLines.get(i);
      items.push(el('li', {'data-line': i, 'class': msgs ? 'bad' : null, 'title': msgs ? msgs.join('\n') : null}, String(i)));
    }
    this.gutter.replaceChildren(...items);
    this.gutter.scrollTop = this.text.scrollTop;
  }

  goToLine(line) {
    const lines = this.text.value.split('\n');
    let start = 0;
    for (let i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
    const end = start + (lines[line - 1] || '').length;
    this.text.focus();
    this.text.setSelectionRange(start, end);
    const lineHeight = parseFloat(getComputedStyle(this.text).lineHeight) || 18;
    this.text.scrollTop = Math.max(0, (line - 3) * lineHeight);
  }
}

// describe says what an apply changed: ": added tap; removed valve".
function describe(ch) {
  if (!ch) return '';
  const parts = [];
  for (const [key, word] of [['added', 'added'], ['removed', 'removed'], ['changed', 'changed'], ['sections', 'sections']]) {
    if (Array.isArray(ch[key]) && ch[key].length > 0) parts.push(`${word} ${ch[key].join(', ')}`);
  }
  return parts.length ? `: ${parts.join('; ')}` : '';
}

// The logs page: the bridge's newest log records (GET api/logs/stream,
// Server-Sent Events), filtered by level, part and text, paused at will,
// downloaded as text. The stream is open only while the page is shown:
// each opening replays the bridge's ring, so nothing is missed.

import {el} from './dom.js';

const MAX_RECORDS = 1000; // the bridge keeps as many
const LEVELS = {DEBUG: 0, INFO: 1, WARN: 2, ERROR: 3};
const KNOWN_PARTS = ['bridge', 'core', 'gpio', 'mqtt', 'broker', 'ws', 'http'];
const TIME = new Intl.DateTimeFormat(undefined, {hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23'});

export class LogsPage {
  constructor() {
    this.records = [];
    this.lastSeq = 0;
    this.source = null;
    this.paused = false;
    this.unseen = 0;
    this.parts = new Set(KNOWN_PARTS);
    this.list = document.getElementById('logs-list');
    this.status = document.getElementById('logs-status');
    this.level = document.getElementById('logs-level');
    this.part = document.getElementById('logs-part');
    this.search = document.getElementById('logs-search');
    this.pauseButton = document.getElementById('logs-pause');
    this.renderParts();
    for (const input of [this.level, this.part]) input.addEventListener('change', () => this.render());
    this.search.addEventListener('input', () => this.render());
    document.getElementById('logs-tools').addEventListener('submit', (ev) => ev.preventDefault());
    this.pauseButton.addEventListener('click', () => this.setPaused(!this.paused));
  }

  show() {
    if (this.source) return;
    const source = new EventSource('api/logs/stream');
    this.source = source;
    this.setStatus('connecting…');
    source.addEventListener('open', () => this.setStatus(''));
    source.addEventListener('log', (ev) => this.onRecord(ev.data));
    source.addEventListener('error', () => {
      // EventSource reconnects by itself unless the answer was an HTTP error.
      this.setStatus(source.readyState === EventSource.CLOSED ? 'not available' : 'reconnecting…');
    });
  }

  hide() {
    if (this.source) this.source.close();
    this.source = null;
  }

  onRecord(data) {
    let rec;
    try {
      rec = JSON.parse(data);
    } catch (err) {
      return;
    }
    if (!rec || typeof rec.seq !== 'number') return;
    if (rec.seq <= this.lastSeq) {
      // Seqs started again: the bridge restarted, and this is its ring.
      // Or the page was shown again and the ring is replayed: keep one copy.
      const i = this.records.findIndex((r) => r.seq >= rec.seq);
      if (i >= 0 && this.records[i].seq === rec.seq && this.records[i].ts === rec.ts) return;
      this.records = [];
      this.list.replaceChildren();
    }
    this.lastSeq = rec.seq;
    this.records.push(rec);
    if (this.records.length > MAX_RECORDS) this.records.splice(0, this.records.length - MAX_RECORDS);
    if (rec.part && !this.parts.has(rec.part)) {
      this.parts.add(rec.part);
      this.renderParts();
    }
    if (this.paused) {
      this.unseen++;
      this.setStatus(`paused: ${this.unseen} new`);
      return;
    }
    if (this.matches(rec)) this.append(rec);
  }

  matches(rec) {
    if ((LEVELS[rec.level] ?? 1) < (LEVELS[this.level.value] ?? 0)) return false;
    if (this.part.value && rec.part !== this.part.value) return false;
    const q = this.search.value.trim().toLowerCase();
    if (q && !`${rec.msg} ${rec.attrs || ''}`.toLowerCase().includes(q)) return false;
    return true;
  }

  append(rec) {
    const atBottom = this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - 8;
    this.list.append(recordItem(rec));
    while (this.list.children.length > MAX_RECORDS) this.list.firstElementChild.remove();
    if (atBottom) this.list.scrollTop = this.list.scrollHeight;
  }

  render() {
    const items = this.records.filter((r) => this.matches(r)).map(recordItem);
    this.list.replaceChildren(...items);
    this.list.scrollTop = this.list.scrollHeight;
  }

  renderParts() {
    const chosen = this.part.value;
    const options = [el('option', {value: ''}, 'all')];
    for (const p of [...this.parts].sort()) options.push(el('option', {value: p}, p));
    this.part.replaceChildren(...options);
    this.part.value = chosen;
  }

  setPaused(paused) {
    this.paused = paused;
    this.pauseButton.setAttribute('aria-pressed', String(paused));
    this.pauseButton.textContent = paused ? 'Resume' : 'Pause';
    if (!paused) {
      this.unseen = 0;
      this.setStatus('');
      this.render();
    } else {
      this.setStatus('paused');
    }
  }

  setStatus(text) {
    this.status.textContent = text;
  }
}

function recordItem(rec) {
  const ts = new Date(rec.ts);
  return el('li', {'class': 'log', 'data-level': rec.level, 'data-part': rec.part, 'data-seq': rec.seq},
    el('time', {class: 'log-time', datetime: rec.ts}, Number.isNaN(ts.getTime()) ? '' : TIME.format(ts)),
    el('span', {class: 'log-level'}, rec.level),
    el('span', {class: 'log-part'}, rec.part),
    el('span', {class: 'log-msg'}, rec.msg),
    rec.attrs ? el('span', {class: 'log-attrs'}, rec.attrs) : '');
}

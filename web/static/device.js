// The device page: GET api/device every two seconds while it is shown,
// the numbers of /metrics and more, laid out for people.

import {el, formatBytes, formatCount, formatDuration, getJSON} from './dom.js';

const REFRESH_MS = 2000;

export class DevicePage {
  constructor() {
    this.box = document.getElementById('device-cards');
    this.status = document.getElementById('device-status');
    this.timer = 0;
    this.shown = false;
    this.refreshes = 0; // reports rendered (tests read it)
    this.report = null;
  }

  show() {
    if (this.shown) return;
    this.shown = true;
    this.refresh();
  }

  hide() {
    this.shown = false;
    clearTimeout(this.timer);
    this.timer = 0;
  }

  async refresh() {
    clearTimeout(this.timer);
    const {status, body} = await getJSON('api/device');
    if (!this.shown) return;
    if (status === 200 && body) {
      this.report = body;
      this.render(body);
      this.refreshes++;
      this.status.textContent = '';
    } else {
      this.status.textContent = status === 0 ? 'the bridge cannot be reached' : `not available (HTTP ${status})`;
    }
    this.timer = setTimeout(() => this.refresh(), REFRESH_MS);
  }

  render(d) {
    const mqtt = d.mqtt || {};
    const wsStats = d.ws || {};
    const run = d.run || {};
    const clock = d.clock || {};
    const core = d.core || {};
    const mem = d.memory || {};
    const counts = d.counts || {};
    const cards = [
      card('Bridge', [
        ['Name', d.device && d.device.name, 'name'],
        ['Device id', d.device && d.device.id, 'id'],
        ['Version', d.device && d.device.version, 'version'],
        ['Uptime', formatDuration(d.uptime_s), 'uptime'],
        ['Started', localTime(d.started), 'started'],
        ['Board', `${d.board ? d.board.model : '—'} (board: ${d.board ? d.board.kind : '—'})`, 'board'],
        ['Platform', `${d.platform} · ${d.go}`, 'platform'],
      ]),
      card('MQTT', [
        ['Connection', mqtt.connected ? 'connected' : 'disconnected', 'mqtt-connected', mqtt.connected ? 'good' : 'bad'],
        ['Broker', mqtt.broker, 'mqtt-broker'],
        ['Topics', `${mqtt.topic_prefix}/…`, 'mqtt-topics'],
        ['Outbox', `${formatCount(mqtt.outbox)} waiting${mqtt.outbox_failing ? ' · disk failing' : ''}`, 'outbox', mqtt.outbox_failing ? 'bad' : ''],
        ['Published', formatCount(mqtt.published), 'published'],
        ['Dropped (outbox full)', formatCount(mqtt.outbox_dropped), 'outbox-dropped', mqtt.outbox_dropped ? 'bad' : ''],
        ['Connections made', formatCount(mqtt.connects), 'connects'],
        ['Commands received', formatCount(mqtt.commands), 'mqtt-commands'],
      ]),
      card('Panel and API', [
        ['Clients connected', formatCount(wsStats.Clients), 'clients'],
        ['Slow clients closed', formatCount(wsStats.SlowClosed), 'slow-closed'],
        ['Wrong tokens', formatCount(wsStats.AuthFailures), 'auth-failures'],
        ['Commands', commandsText(counts.commands), 'commands'],
      ]),
      card('Time and readings', [
        ['Clock', clockText(clock), 'clock', clock.state === 'unsynced' ? 'bad' : ''],
        ['Core', core.alive ? 'alive' : 'stuck', 'core', core.alive ? 'good' : 'bad'],
        ['Readings emitted', formatCount(core.readings_emitted), 'emitted'],
        ['Last reading', core.last_reading ? localTime(core.last_reading) : 'none yet', 'last-reading'],
        ['This run', `seq from ${formatCount(run.first_seq)}${run.previous_last_seq ? `, after ${formatCount(run.previous_last_seq)}` : ''}`, 'run'],
        ['Previous stop', run.clean === false ? 'not clean (crash or power loss)' : 'clean', 'run-clean', run.clean === false ? 'bad' : ''],
      ]),
      card('Memory', [
        ['Go heap', formatBytes(mem.heap_bytes), 'heap'],
        ['Go runtime total', formatBytes(mem.go_total_bytes), 'go-total'],
        ['Goroutines', formatCount(mem.goroutines), 'goroutines'],
        ['GC cycles', formatCount(mem.gc_cycles), 'gc'],
        ['Log records kept', `${formatCount(mem.log_records)} (${formatBytes(mem.log_bytes)})`, 'log-records'],
      ]),
    ];
    const readings = counts.readings || {};
    const pins = table('Signals and pins', ['Signal', 'Kind', 'Pin / source', 'Value', 'Readings', 'Health'],
      (d.signals || []).map((s) => [
        s.name, s.kind, s.pin ? `${s.pin}${s.source && s.source !== 'simulated' ? ` · ${s.source}` : ''}` : s.source || '—',
        valueText(s), formatCount(readings[s.name]), s.stale ? 'stale' : 'ok',
      ]), 'pins');
    const sensors = table('Sensors', ['Sensor', 'Type', 'Reads', 'Failures', 'State', 'Last read'],
      (d.sensors || []).map((s) => [
        s.name, s.type, formatCount(s.reads), formatCount(s.errors),
        s.stale ? 'stale' : s.up ? 'up' : 'failing', `${formatCount(s.last_read_ms)} ms`,
      ]), 'sensors');
    this.box.replaceChildren(...cards, pins, sensors);
  }
}

function card(title, rows) {
  const dl = el('dl', {class: 'facts'});
  for (const [label, value, field, tone] of rows) {
    dl.append(el('dt', {}, label), el('dd', {'data-field': field, 'class': tone ? `tone-${tone}` : null}, value === undefined || value === null || value === '' ? '—' : String(value)));
  }
  return el('section', {class: 'card device-card'}, el('h3', {}, title), dl);
}

function table(title, head, rows, id) {
  const thead = el('thead', {}, el('tr', {}, ...head.map((h) => el('th', {scope: 'col'}, h))));
  const tbody = el('tbody', {}, ...rows.map((r) => el('tr', {'data-row': r[0]}, ...r.map((c) => el('td', {}, String(c))))));
  return el('section', {'class': 'card device-card wide', 'data-table': id}, el('h3', {}, title),
    el('div', {class: 'table-wrap'}, el('table', {class: 'table'}, thead, tbody)));
}

function localTime(ts) {
  const t = new Date(ts);
  return Number.isNaN(t.getTime()) ? '—' : t.toLocaleString();
}

function clockText(c) {
  const steps = c.steps ? ` · ${c.steps} step${c.steps === 1 ? '' : 's'}` : '';
  const err = c.max_error_ms ? ` · ±${formatCount(c.max_error_ms)} ms` : '';
  return `${c.state || 'unknown'}${err}${steps}`;
}

function commandsText(bySource) {
  if (!bySource) return '—';
  const parts = [];
  for (const [door, results] of Object.entries(bySource).sort()) {
    const total = Object.values(results).reduce((a, b) => a + b, 0);
    if (total === 0) continue;
    const refused = (results.refused || 0) + (results.error || 0);
    parts.push(`${door} ${total}${refused ? ` (${refused} not done)` : ''}`);
  }
  return parts.length ? parts.join(' · ') : 'none yet';
}

function valueText(s) {
  if (s.value === undefined || s.value === null) return '—';
  if (typeof s.value === 'boolean') return s.value ? 'ON' : 'OFF';
  if (typeof s.value === 'number') {
    if (s.kind === 'pwm') return `${Math.round(s.value * 100)}%`;
    return `${formatCount(Math.round(s.value * 100) / 100)}${s.unit ? ` ${s.unit}` : ''}`;
  }
  return String(s.value);
}

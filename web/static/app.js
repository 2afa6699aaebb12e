// pibridge control panel.
//
// One WebSocket to /ws (SPEC.md §5). The first frame, hello, describes the
// device and its signals and carries the current state; the panel builds one
// tile per signal from it and then applies "reading" frames. Commands carry an
// id and stay "pending" until their ack or the echoed reading arrives. Login
// (SPEC.md §6) posts the token to /api/login, which sets an HttpOnly cookie
// that the next WebSocket handshake carries.
//
// Sensor tiles carry a chart (chart.js, drawn by the vendored uPlot): filled
// from a "history" request on every hello, extended by readings. When the
// hello lists mqtt.bridge_allow filters, the MQTT view subscribes to them and
// shows the latest message per topic.

import {Chart, RANGES, chartsAvailable, readTheme} from './chart.js';
import {Pages} from './pages.js';
import {loginForm} from './login.js';

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10000;
const PWM_INTERVAL_MS = 100; // at most one pwm "set" per interval while dragging
const COMMAND_TIMEOUT_MS = 5000; // no ack by then: the command counts as failed
const ECHO_GRACE_MS = 2000; // after an ok ack, how long to wait for the echo
const ERROR_SHOW_MS = 8000;
const TOAST_MS = 5000;
const TOAST_MAX = 4;
const FLASH_MS = 700;
const PULSE_FOR = '500ms'; // for an output whose config gives no pulse length
const PWM_TOLERANCE = 0.005; // hardware may round the duty cycle it echoes
const CLOSE_UNAUTHORIZED = 4401;
const REQUEST_TIMEOUT_MS = 10000; // history, subscribe, publish: forget after this
const DEFAULT_RANGE = '10m';
const RANGE_KEY = 'pibridge.range'; // localStorage: the chosen chart range
const MQTT_MAX_TOPICS = 200; // the least recently updated topic goes first
const MQTT_PAYLOAD_MAX = 300; // characters shown of a payload
const CLOCK_STEP_MS = 30000; // a reading's ts this far off the estimate: the bridge's clock was set

const STATUS_TEXT = {live: 'live', reconnecting: 'reconnecting…', offline: 'offline'};

// The only module-level mutable value. Exposed as window.pibridge.state so that
// browser tests can see what the panel believes; the first block is the part
// tests rely on, the rest is bookkeeping.
const state = {
  connected: false, // a hello arrived on the current socket and it is still open
  status: 'offline', // live | reconnecting | offline: the header badge
  readonly: false, // hello said readonly: every control disabled
  needLogin: false, // the server wants a token: login form shown, no reconnects
  device: null, // hello.device: {id, name, version}
  signals: [], // hello.signals, in the server's order
  values: {}, // signal name → latest reading {value, unit, ts, seq}

  socket: null,
  retryDelay: RETRY_MIN_MS,
  retryTimer: 0,
  layoutKey: '', // the signal list the tiles were built from
  tiles: new Map(), // signal name → tile (see makeTile)
  commands: new Map(), // command id → {name, type, timer}
  idPrefix: randomPrefix(),
  nextId: 0,
  clockSkew: null, // browser clock minus bridge clock, estimated from readings
  clockSynced: true, // false: hello (or /healthz) said the bridge's clock is not synchronised
  clockSteps: 0, // steps of the bridge's clock seen on readings (charts reloaded)
  clockTimer: 0,

  range: DEFAULT_RANGE, // chart range, one of RANGES[].since
  requests: new Map(), // history/subscribe/publish id → {type, name, ms, timer}
  mqtt: {
    filters: [], // hello.bridge_allow: what the view subscribes to
    enabled: false, // the view is shown
    topics: new Map(), // topic → row (see upsertTopic)
  },
  pages: null, // the Logs, Device and Settings pages (pages.js)
  login: null, // the sign-in form (login.js)
};

// ---------------------------------------------------------------- start-up

function start() {
  window.pibridge = {state};
  state.pages = new Pages();
  bindLogin();
  bindRange();
  bindMqtt();
  readTheme();
  window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => {
    readTheme();
    for (const tile of state.tiles.values()) if (tile.chart) tile.chart.redraw();
  });
  setInterval(refreshAges, 1000);
  window.addEventListener('online', connectNow);
  window.addEventListener('offline', () => { if (!state.connected) setStatus('offline'); });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') connectNow();
  });

  const token = takeFragmentToken();
  if (token) {
    state.login.submit(token);
    return;
  }
  connect();
  checkAuth(); // in parallel: a 401 shows the login form without waiting for the socket
}

// A panel URL may carry the token in its fragment (#token=…), which browsers
// never send to the server. It is removed from the address bar at once.
function takeFragmentToken() {
  const token = new URLSearchParams(location.hash.slice(1)).get('token');
  if (token === null) return '';
  history.replaceState(null, '', location.pathname + location.search);
  return token;
}

// ---------------------------------------------------------------- connection

function connect() {
  clearTimeout(state.retryTimer);
  state.retryTimer = 0;
  if (state.socket || state.needLogin) return;
  // Relative to the page, so that the panel also works under a prefix (a
  // gateway serves each device's panel at /d/<id>/).
  const url = new URL('ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  url.hash = '';
  let ws;
  try {
    ws = new WebSocket(url.href);
  } catch (err) {
    scheduleReconnect();
    return;
  }
  state.socket = ws;
  ws.addEventListener('message', (ev) => onFrame(ws, ev.data));
  ws.addEventListener('close', (ev) => onClose(ws, ev));
}

// connectNow skips the remaining back-off, e.g. when the network returns.
function connectNow() {
  if (state.socket || state.needLogin) return;
  connect();
}

function onClose(ws, ev) {
  if (ws !== state.socket) return; // a socket we already gave up on
  const hadHello = state.connected;
  state.socket = null;
  setConnected(false);
  if (ev.code === CLOSE_UNAUTHORIZED) {
    showLogin('');
    return;
  }
  if (hadHello) {
    scheduleReconnect();
    return;
  }
  // The handshake failed or closed before hello. A browser cannot see the
  // HTTP status of a refused handshake, so ask the API whether a token is needed.
  checkAuth().then((needLogin) => { if (!needLogin) scheduleReconnect(); });
}

// Exponential back-off: 0.5 s doubling to 10 s, each wait drawn from [d/2, d]
// so that panels reconnecting after a bridge restart do not arrive together.
function scheduleReconnect() {
  if (state.needLogin || state.socket || state.retryTimer) return;
  if (navigator.onLine === false) {
    setStatus('offline'); // the "online" event reconnects
    return;
  }
  const delay = state.retryDelay * (0.5 + Math.random() * 0.5);
  state.retryDelay = Math.min(state.retryDelay * 2, RETRY_MAX_MS);
  setStatus('reconnecting');
  state.retryTimer = setTimeout(connect, delay);
}

// checkAuth resolves to true when /api/state answers 401 (login form shown).
async function checkAuth() {
  try {
    const res = await fetch('api/state', {credentials: 'same-origin', cache: 'no-store'});
    if (res.status === 401) {
      showLogin('');
      return true;
    }
  } catch (err) {
    // unreachable: the reconnect loop keeps trying
  }
  return false;
}

function send(msg, quiet = false) {
  const ws = state.socket;
  if (!state.connected || !ws || ws.readyState !== WebSocket.OPEN) {
    if (!quiet) toast('Not connected to the bridge.');
    return false;
  }
  ws.send(JSON.stringify(msg));
  return true;
}

function setConnected(connected) {
  state.connected = connected;
  document.getElementById('panel').dataset.connected = String(connected);
  if (!connected) abandonCommands();
  updateControls();
}

function setStatus(status) {
  state.status = status;
  const badge = document.getElementById('conn');
  badge.dataset.state = status;
  badge.textContent = STATUS_TEXT[status];
}

// ---------------------------------------------------------------- frames

const FRAME_HANDLERS = {
  hello: onHello,
  reading: onReading,
  ack: onAck,
  history: onHistory,
  mqtt: onMqtt,
  error: onError,
};

function onFrame(ws, data) {
  if (ws !== state.socket) return;
  let msg;
  try {
    msg = JSON.parse(data);
  } catch (err) {
    return;
  }
  const handler = msg && FRAME_HANDLERS[msg.type];
  if (handler) handler(msg);
}

function onHello(msg) {
  state.device = msg.device || {};
  state.readonly = msg.readonly === true;
  state.signals = Array.isArray(msg.signals) ? msg.signals.filter(isSignal) : [];
  state.values = {...(msg.state || {})};
  state.clockSkew = null;
  state.clockSynced = !(msg.clock && msg.clock.synced === false);
  state.retryDelay = RETRY_MIN_MS;
  hideLogin();

  // Rebuild tiles only when the signal list changed, so that a reconnect keeps
  // focus and scroll position.
  const key = JSON.stringify(state.signals);
  if (key !== state.layoutKey) {
    state.layoutKey = key;
    buildTiles();
  }
  renderHeader();
  if (!state.clockSynced) refreshClock();
  setConnected(true);
  setStatus('live');
  for (const tile of state.tiles.values()) {
    renderTile(tile);
    if (!tile.chart) continue;
    const reading = state.values[tile.name];
    if (reading) tile.chart.push(Date.parse(reading.ts), reading.value);
    tile.loadedMs = 0; // this bridge may be a new one: ask again
    requestHistory(tile);
  }
  // The filters browsers may use (mqtt.bridge_allow), as the hello lists them.
  setupMqtt(msg.bridge_allow ?? (msg.mqtt && msg.mqtt.bridge_allow));
  state.pages.offer(msg.pages, state.readonly);
}

function isSignal(sig) {
  return sig && typeof sig.name === 'string' && typeof sig.kind === 'string';
}

function onReading(msg) {
  if (typeof msg.name !== 'string') return;
  const prev = state.values[msg.name];
  if (prev && typeof prev.seq === 'number' && typeof msg.seq === 'number' && msg.seq <= prev.seq) {
    return; // older than what we show
  }
  const reading = {value: msg.value, unit: msg.unit, ts: msg.ts, seq: msg.seq};
  state.values[msg.name] = reading;
  noteClockSkew(reading.ts);
  const tile = state.tiles.get(msg.name);
  if (!tile) return;
  settleOnReading(tile, reading.value);
  if (tile.kind === 'input' && prev && prev.value !== reading.value) flash(tile);
  if (tile.chart) tile.chart.push(Date.parse(reading.ts), reading.value);
  renderTile(tile);
}

function onAck(msg) {
  if (state.requests.has(msg.id)) {
    settleRequest(msg.id, msg.ok === true, msg.error);
    return;
  }
  const cmd = state.commands.get(msg.id);
  if (!cmd) return; // not ours, or already timed out
  state.commands.delete(msg.id);
  clearTimeout(cmd.timer);
  const tile = state.tiles.get(cmd.name);
  if (msg.ok === true) {
    if (tile && cmd.type === 'set') settleOnAck(tile, msg.id);
    return;
  }
  const text = String(msg.error || 'The command was refused.');
  if (!tile) {
    toast(`${cmd.name}: ${text}`);
    return;
  }
  if (cmd.type === 'set') clearWant(tile); // revert to the last reading
  showTileError(tile, text);
  renderTile(tile);
}

// ---------------------------------------------------------------- commands
//
// A writable tile has a "want": the value the user asked for, shown instead of
// the last reading until the bridge confirms it. tile.cmdId is the latest
// command; an ok ack for it or an echoed reading equal to want confirms.

function command(tile, type, fields) {
  const id = `${state.idPrefix}-${++state.nextId}`;
  if (!send({type, id, name: tile.name, ...fields})) return null;
  const timer = setTimeout(
    () => onAck({id, ok: false, error: 'No answer from the bridge.'}),
    COMMAND_TIMEOUT_MS,
  );
  state.commands.set(id, {name: tile.name, type, timer});
  return id;
}

function setWanted(tile, value) {
  clearTileError(tile);
  clearTimeout(tile.graceTimer);
  const id = command(tile, 'set', {value});
  if (id === null) {
    clearWant(tile);
  } else {
    tile.want = value;
    tile.cmdId = id;
    tile.acked = false;
  }
  renderTile(tile);
}

function settleOnAck(tile, id) {
  if (id !== tile.cmdId) return; // an earlier command of a drag: the latest decides
  tile.acked = true;
  const reading = state.values[tile.name];
  if (reading && sameValue(tile, reading.value, tile.want)) {
    clearWant(tile);
  } else {
    // Applied, but the echo is still on its way: keep showing want briefly.
    clearTimeout(tile.graceTimer);
    tile.graceTimer = setTimeout(() => { clearWant(tile); renderTile(tile); }, ECHO_GRACE_MS);
  }
  renderTile(tile);
}

function settleOnReading(tile, value) {
  if (tile.want === undefined || tile.trailingTimer) return;
  // Equal: the echo confirms. Different after an ok ack: something else moved
  // the signal since, and the reading is the truth.
  if (sameValue(tile, value, tile.want) || tile.acked) clearWant(tile);
}

function clearWant(tile) {
  tile.want = undefined;
  tile.cmdId = null;
  tile.acked = false;
  clearTimeout(tile.graceTimer);
  clearTimeout(tile.trailingTimer);
  tile.trailingTimer = 0;
}

// abandonCommands forgets every command in flight when the socket goes away;
// the next hello brings the truth.
function abandonCommands() {
  for (const cmd of state.commands.values()) clearTimeout(cmd.timer);
  state.commands.clear();
  for (const req of state.requests.values()) clearTimeout(req.timer);
  state.requests.clear();
  setPublishing(false);
  for (const tile of state.tiles.values()) {
    if (tile.want === undefined) continue;
    clearWant(tile);
    renderTile(tile);
  }
}

function sameValue(tile, a, b) {
  if (tile.kind === 'pwm' && typeof a === 'number' && typeof b === 'number') {
    return Math.abs(a - b) < PWM_TOLERANCE;
  }
  return a === b;
}

function toggleOutput(tile) {
  setWanted(tile, !isOn(shownValue(tile)));
}

function pulseOutput(tile) {
  clearTileError(tile);
  renderTile(tile);
  command(tile, 'pulse', {for: tile.sig.pulse || PULSE_FOR});
}

// While dragging, send at most one "set" per PWM_INTERVAL_MS; the latest
// position goes out when the interval ends, and once more on "change".
function onPwmInput(tile) {
  tile.want = Number(tile.range.value);
  tile.acked = false;
  const wait = tile.lastSentAt + PWM_INTERVAL_MS - performance.now();
  if (wait <= 0) {
    sendPwm(tile);
  } else if (!tile.trailingTimer) {
    tile.trailingTimer = setTimeout(() => { tile.trailingTimer = 0; sendPwm(tile); }, wait);
  }
  renderTile(tile);
}

function onPwmChange(tile) {
  const value = Number(tile.range.value);
  const alreadySent = !tile.trailingTimer && tile.lastSentValue === value;
  if (!alreadySent) sendPwm(tile);
}

function sendPwm(tile) {
  clearTimeout(tile.trailingTimer); // an overdue trailing send is superseded
  tile.trailingTimer = 0;
  const value = Number(tile.range.value);
  tile.lastSentAt = performance.now();
  tile.lastSentValue = value;
  setWanted(tile, value);
}

// ---------------------------------------------------------------- requests
//
// History, subscribe and publish carry an id too; their replies (history,
// ack, or an error frame naming the id) settle them. They are not commands:
// no tile goes pending, and a lost one is simply forgotten after a while.

function request(type, fields, extra) {
  const id = `${state.idPrefix}-${++state.nextId}`;
  if (!send({type, id, ...fields}, true)) return null;
  const timer = setTimeout(() => settleRequest(id, false, 'No answer from the bridge.'), REQUEST_TIMEOUT_MS);
  state.requests.set(id, {type, timer, ...extra});
  return id;
}

// settleRequest handles the ack or error that answers a request.
function settleRequest(id, ok, error) {
  const req = state.requests.get(id);
  if (!req) return;
  state.requests.delete(id);
  clearTimeout(req.timer);
  const text = String(error || 'The bridge refused the request.');
  if (req.type === 'subscribe') onSubscribed(ok, text);
  else if (req.type === 'publish') onPublished(ok, text);
  // A failed history request leaves the chart with the readings it has.
}

function onError(msg) {
  if (typeof msg.id === 'string' && state.requests.has(msg.id)) {
    settleRequest(msg.id, false, msg.error);
    return;
  }
  if (typeof msg.id === 'string' && state.commands.has(msg.id)) {
    onAck({id: msg.id, ok: false, error: msg.error});
    return;
  }
  toast(String(msg.error || 'The bridge reported an error.'));
}

// requestHistory fills a chart for the chosen range, unless this connection
// has already loaded at least that much.
function requestHistory(tile) {
  const range = rangeOf(state.range);
  if (!tile.chart || tile.loadedMs >= range.ms) return;
  const id = request('history', {name: tile.name, since: range.since}, {name: tile.name, ms: range.ms});
  if (id !== null) tile.loadedMs = range.ms;
}

function onHistory(msg) {
  const req = state.requests.get(msg.id);
  if (req) {
    state.requests.delete(msg.id);
    clearTimeout(req.timer);
  }
  const tile = state.tiles.get(typeof msg.name === 'string' ? msg.name : req && req.name);
  if (!tile || !tile.chart || !Array.isArray(msg.points)) return;
  tile.chart.merge(msg.points);
  tile.historyReplies++;
  tile.historyPoints = msg.points.length;
}

// ---------------------------------------------------------------- chart range

function rangeOf(since) {
  return RANGES.find((r) => r.since === since) || RANGES.find((r) => r.since === DEFAULT_RANGE);
}

function bindRange() {
  const box = document.getElementById('range-select');
  let saved = null;
  try {
    saved = localStorage.getItem(RANGE_KEY);
  } catch (err) {
    // storage disabled: the default range
  }
  if (saved && RANGES.some((r) => r.since === saved)) state.range = saved;
  for (const range of RANGES) {
    const button = el('button', {
      'type': 'button',
      'class': 'range-button',
      'data-range': range.since,
      'aria-pressed': String(range.since === state.range),
    }, range.label);
    button.addEventListener('click', () => setRange(range.since));
    box.append(button);
  }
}

function setRange(since) {
  state.range = rangeOf(since).since;
  try {
    localStorage.setItem(RANGE_KEY, state.range);
  } catch (err) {
    // not remembered; still applied
  }
  for (const button of document.querySelectorAll('#range-select button')) {
    button.setAttribute('aria-pressed', String(button.dataset.range === state.range));
  }
  const ms = rangeOf(state.range).ms;
  for (const tile of state.tiles.values()) {
    if (!tile.chart) continue;
    tile.chart.setRange(ms);
    requestHistory(tile);
  }
}

// ---------------------------------------------------------------- MQTT view

function bindMqtt() {
  document.getElementById('mqtt-publish').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const topic = document.getElementById('mqtt-topic').value.trim();
    if (!topic) return;
    const payload = document.getElementById('mqtt-payload').value;
    const retain = document.getElementById('mqtt-retain').checked;
    setMqttError('');
    if (request('publish', {topic, payload, retain}, {topic}) === null) {
      setMqttError('Not connected to the bridge.');
      return;
    }
    setPublishing(true);
  });
}

// setupMqtt shows the view and subscribes when the hello lists filters.
function setupMqtt(filters) {
  const list = Array.isArray(filters) ? filters.filter((f) => typeof f === 'string' && f) : [];
  state.mqtt.filters = list;
  if (list.length === 0) {
    showMqtt(false);
    return;
  }
  showMqtt(true);
  document.getElementById('mqtt-filters').textContent = list.join('  ');
  setMqttError('');
  setMqttStatus('Subscribing…');
  if (request('subscribe', {topics: list}, {}) === null) setMqttStatus('');
}

function showMqtt(shown) {
  state.mqtt.enabled = shown;
  document.getElementById('mqtt').hidden = !shown;
}

function onSubscribed(ok, error) {
  if (ok) {
    setMqttStatus(state.mqtt.topics.size ? '' : 'No messages yet.');
    return;
  }
  setMqttStatus('');
  if (/^not enabled/i.test(error)) {
    showMqtt(false); // the bridge has no bridge_allow after all
    return;
  }
  setMqttError(error);
}

function onPublished(ok, error) {
  setPublishing(false);
  if (ok) {
    document.getElementById('mqtt-payload').value = '';
    return;
  }
  setMqttError(error);
}

function setPublishing(busy) {
  const button = document.querySelector('#mqtt-publish button');
  button.setAttribute('aria-busy', String(busy));
  button.classList.toggle('busy', busy);
}

function setMqttStatus(text) {
  const p = document.getElementById('mqtt-status');
  p.textContent = text;
  p.hidden = !text;
}

function setMqttError(text) {
  const p = document.getElementById('mqtt-error');
  p.textContent = text;
  p.hidden = !text;
}

function onMqtt(msg) {
  if (typeof msg.topic !== 'string' || !state.mqtt.enabled) return;
  const payload = typeof msg.payload === 'string' ? msg.payload : JSON.stringify(msg.payload);
  upsertTopic(msg.topic, payload === undefined ? '' : payload, msg.retained === true);
  setMqttStatus('');
}

// upsertTopic shows the latest message of a topic; rows stay sorted by topic.
function upsertTopic(topic, payload, retained) {
  let row = state.mqtt.topics.get(topic);
  if (!row) {
    row = {
      topic,
      el: el('li', {'class': 'topic', 'data-topic': topic}),
      payloadEl: el('span', {class: 'payload'}),
      retainedEl: el('span', {class: 'retained'}, 'retained'),
      ageEl: el('span', {class: 'age'}),
      at: 0,
    };
    row.el.append(el('span', {class: 'topic-name'}, topic), row.payloadEl,
      el('span', {class: 'topic-meta'}, row.retainedEl, row.ageEl));
    const list = document.getElementById('mqtt-topics');
    const after = [...state.mqtt.topics.values()].filter((r) => r.topic > topic)
      .sort((a, b) => (a.topic < b.topic ? -1 : 1))[0];
    list.insertBefore(row.el, after ? after.el : null);
    state.mqtt.topics.set(topic, row);
    if (state.mqtt.topics.size > MQTT_MAX_TOPICS) dropOldestTopic();
  }
  row.at = Date.now();
  row.payloadEl.textContent = payload.length > MQTT_PAYLOAD_MAX ? `${payload.slice(0, MQTT_PAYLOAD_MAX)}…` : payload;
  row.payloadEl.title = payload.length > MQTT_PAYLOAD_MAX ? payload : '';
  row.retainedEl.hidden = !retained;
  row.el.classList.remove('flash');
  void row.el.offsetWidth; // restart the animation
  row.el.classList.add('flash');
  renderTopicAge(row);
}

function dropOldestTopic() {
  let oldest = null;
  for (const row of state.mqtt.topics.values()) if (!oldest || row.at < oldest.at) oldest = row;
  oldest.el.remove();
  state.mqtt.topics.delete(oldest.topic);
}

function renderTopicAge(row) {
  row.ageEl.textContent = formatAge(Date.now() - row.at);
}

// ---------------------------------------------------------------- tiles

function buildTiles() {
  for (const tile of state.tiles.values()) {
    clearWant(tile);
    clearTimeout(tile.errorTimer);
    clearTimeout(tile.flashTimer);
    if (tile.chart) tile.chart.destroy();
  }
  state.tiles.clear();
  const groups = new Map();
  for (const section of document.querySelectorAll('section.group[data-kind]')) {
    const list = section.querySelector('.tiles');
    list.replaceChildren();
    groups.set(section.dataset.kind, list);
  }
  state.signals.forEach((sig, index) => {
    const tile = makeTile(sig, `sig-${index}`);
    groups.get(tile.kind).append(tile.el);
    state.tiles.set(sig.name, tile);
  });
  for (const section of document.querySelectorAll('section.group[data-kind]')) {
    const count = section.querySelectorAll('.tile').length;
    section.hidden = count === 0;
    // A custom property set through CSSOM (allowed by the CSP, unlike a style
    // attribute): on wide screens a group's share of the row follows its tiles.
    section.style.setProperty('--tiles', String(Math.max(count, 1)));
  }
  document.getElementById('range-select').hidden = ![...state.tiles.values()].some((tile) => tile.chart);
  const placeholder = document.getElementById('placeholder');
  placeholder.textContent = 'This bridge has no signals configured.';
  placeholder.hidden = state.signals.length > 0;
}

const TILE_BUILDERS = {
  output: buildOutput,
  pwm: buildPwm,
  input: buildInput,
  sensor: buildSensor,
};

function makeTile(sig, id) {
  const kind = TILE_BUILDERS[sig.kind] ? sig.kind : 'sensor'; // unknown kinds: read-only
  const nameEl = el('h3', {class: 'name', id: `${id}-name`}, sig.name);
  const tile = {
    name: sig.name,
    kind,
    sig,
    id,
    el: el('article', {
      'class': `tile tile-${kind}`,
      'data-signal': sig.name,
      'data-kind': kind,
      'data-state': 'confirmed',
      'aria-labelledby': nameEl.id,
    }),
    valueEl: el('span', {class: 'value'}, '—'),
    errorEl: el('p', {class: 'error', role: 'alert'}),
    controls: [],
    want: undefined,
    cmdId: null,
    acked: false,
    errorText: '',
    lastSentAt: -Infinity,
    lastSentValue: undefined,
    graceTimer: 0,
    trailingTimer: 0,
    errorTimer: 0,
    flashTimer: 0,
    chart: null, // sensors: see buildSensor
    loadedMs: 0, // the widest history window asked for on this connection
    historyReplies: 0, // history replies merged into the chart (tests read these two)
    historyPoints: 0, // points in the last one
  };
  tile.errorEl.hidden = true;
  tile.el.append(el('div', {class: 'tile-head'}, nameEl, tile.valueEl));
  TILE_BUILDERS[kind](tile);
  tile.el.append(tile.errorEl);
  setControlsDisabled(tile);
  return tile;
}

function buildOutput(tile) {
  tile.switch = el('button', {
    'type': 'button',
    'role': 'switch',
    'class': 'switch',
    'aria-checked': 'false',
    'aria-labelledby': `${tile.id}-name`,
  }, el('span', {'class': 'knob', 'aria-hidden': 'true'}));
  tile.pulse = el('button', {
    'type': 'button',
    'class': 'pulse',
    'id': `${tile.id}-pulse`,
    'aria-labelledby': `${tile.id}-pulse ${tile.id}-name`,
    'title': `On for ${tile.sig.pulse || PULSE_FOR}, then off`,
  }, tile.sig.pulse ? `Pulse ${tile.sig.pulse}` : 'Pulse');
  tile.switch.addEventListener('click', () => toggleOutput(tile));
  tile.pulse.addEventListener('click', () => pulseOutput(tile));
  tile.controls.push(tile.switch, tile.pulse);
  tile.el.append(el('div', {class: 'controls'}, tile.switch, tile.pulse));
}

function buildPwm(tile) {
  const {sig, id} = tile;
  const label = el('label', {class: 'control-label', for: `${id}-range`, id: `${id}-label`}, 'Duty');
  tile.range = el('input', {
    'type': 'range',
    'class': 'range',
    'id': `${id}-range`,
    'min': String(typeof sig.min === 'number' ? sig.min : 0),
    'max': String(typeof sig.max === 'number' ? sig.max : 1),
    'step': '0.01',
    'aria-labelledby': `${id}-name ${id}-label`,
  });
  tile.range.value = tile.range.min;
  tile.range.addEventListener('input', () => onPwmInput(tile));
  tile.range.addEventListener('change', () => onPwmChange(tile));
  tile.controls.push(tile.range);
  tile.el.append(el('div', {class: 'controls'}, label, tile.range));
}

function buildInput(tile) {
  tile.valueEl.classList.add('indicator');
}

function buildSensor(tile) {
  tile.num = el('span', {class: 'num'}, '—');
  tile.unit = el('span', {class: 'unit'});
  tile.valueEl.replaceChildren(tile.num, ' ', tile.unit);
  tile.age = el('time', {class: 'age'});
  tile.el.append(tile.age);
  if (!chartsAvailable()) return;
  const host = el('div', {'class': 'chart', 'role': 'img', 'aria-label': `${tile.name} chart`});
  tile.el.append(host);
  tile.chart = new Chart(host, {
    rangeMs: rangeOf(state.range).ms,
    now: bridgeNow,
    format: formatValue,
    label: `${tile.name}${tile.sig.unit ? ` in ${tile.sig.unit}` : ''}`,
  });
}

// ---------------------------------------------------------------- rendering

const TILE_RENDERERS = {
  output: renderOutput,
  pwm: renderPwm,
  input: renderInput,
  sensor: renderSensor,
};

function renderTile(tile) {
  const value = shownValue(tile);
  tile.valueEl.dataset.value = JSON.stringify(value === undefined ? null : value);
  TILE_RENDERERS[tile.kind](tile, value);
  const pending = tile.want !== undefined && !tile.acked;
  tile.el.classList.toggle('pending', pending);
  tile.el.setAttribute('aria-busy', String(pending));
  tile.el.dataset.state = pending ? 'pending' : tile.errorText ? 'error' : 'confirmed';
}

function shownValue(tile) {
  if (tile.want !== undefined) return tile.want;
  const reading = state.values[tile.name];
  return reading ? reading.value : undefined;
}

function renderOutput(tile, value) {
  const on = isOn(value);
  tile.switch.setAttribute('aria-checked', String(on));
  tile.valueEl.textContent = value === undefined || value === null ? '—' : onOff(on);
  tile.valueEl.classList.toggle('on', on);
}

function renderInput(tile, value) {
  const on = isOn(value);
  tile.valueEl.textContent = value === undefined || value === null ? '—' : onOff(on);
  tile.valueEl.classList.toggle('on', on);
  tile.valueEl.classList.toggle('off', !on);
}

function renderPwm(tile, value) {
  if (typeof value !== 'number') {
    tile.valueEl.textContent = '—';
    return;
  }
  // While the user holds the slider it is the source of truth; do not move it.
  if (tile.want === undefined) tile.range.value = String(value);
  const percent = `${Math.round(value * 100)}%`;
  tile.valueEl.textContent = percent;
  tile.range.setAttribute('aria-valuetext', percent);
}

function renderSensor(tile) {
  const reading = state.values[tile.name];
  const value = reading ? reading.value : undefined;
  tile.num.textContent = formatValue(value);
  tile.unit.textContent = (reading && reading.unit) || tile.sig.unit || '';
  tile.age.dateTime = (reading && reading.ts) || '';
  renderAge(tile);
}

function renderAge(tile) {
  const reading = state.values[tile.name];
  const ts = reading ? Date.parse(reading.ts) : NaN;
  if (Number.isNaN(ts)) {
    tile.age.textContent = '';
    return;
  }
  tile.age.textContent = formatAge(Date.now() - ts - (state.clockSkew || 0));
}

function refreshAges() {
  for (const tile of state.tiles.values()) {
    if (tile.age) renderAge(tile);
    if (tile.chart) tile.chart.tick();
  }
  for (const row of state.mqtt.topics.values()) renderTopicAge(row);
}

// bridgeNow is the bridge's clock as well as the panel can tell.
function bridgeNow() {
  return Date.now() - (state.clockSkew || 0);
}

// The bridge and the browser clocks may disagree (a Pi without RTC, a phone):
// the smallest "received minus ts" seen on this connection estimates the
// offset, so ages stay right.
function noteClockSkew(ts) {
  const skew = Date.now() - Date.parse(ts);
  if (Number.isNaN(skew)) return;
  if (state.clockSkew !== null && Math.abs(skew - state.clockSkew) > CLOCK_STEP_MS) {
    clockStepped(skew);
    return;
  }
  state.clockSkew = state.clockSkew === null ? skew : Math.min(state.clockSkew, skew);
}

// clockStepped: the bridge's clock was set (NTP after a boot without a
// clock, or by hand). The bridge re-dates its history by the step, so the
// charts start again from it, and /healthz tells whether the clock is
// synchronised now.
function clockStepped(skew) {
  state.clockSkew = skew;
  state.clockSteps++;
  for (const tile of state.tiles.values()) {
    if (!tile.chart) continue;
    tile.chart.clear();
    tile.loadedMs = 0;
    requestHistory(tile);
  }
  refreshClock();
}

// refreshClock asks /healthz (open without a token) whether the bridge's
// clock is synchronised; while it is not, again every minute.
function refreshClock() {
  clearTimeout(state.clockTimer);
  fetch('/healthz', {cache: 'no-store'})
    .then((res) => res.json())
    .then((h) => {
      if (typeof h.clock === 'string') {
        state.clockSynced = h.clock !== 'unsynced';
        renderHeader();
      }
    })
    .catch(() => {})
    .finally(() => {
      if (!state.clockSynced) state.clockTimer = setTimeout(refreshClock, 60000);
    });
}

function flash(tile) {
  tile.el.classList.remove('flash');
  void tile.el.offsetWidth; // restart the animation when changes come quickly
  tile.el.classList.add('flash');
  clearTimeout(tile.flashTimer);
  tile.flashTimer = setTimeout(() => tile.el.classList.remove('flash'), FLASH_MS);
}

function showTileError(tile, text) {
  tile.errorText = text;
  tile.errorEl.textContent = text;
  tile.errorEl.hidden = false;
  tile.el.classList.add('has-error');
  clearTimeout(tile.errorTimer);
  tile.errorTimer = setTimeout(() => { clearTileError(tile); renderTile(tile); }, ERROR_SHOW_MS);
}

function clearTileError(tile) {
  clearTimeout(tile.errorTimer);
  tile.errorText = '';
  tile.errorEl.textContent = '';
  tile.errorEl.hidden = true;
  tile.el.classList.remove('has-error');
}

function updateControls() {
  for (const tile of state.tiles.values()) setControlsDisabled(tile);
  const form = document.getElementById('mqtt-publish');
  const disabled = !state.connected || state.readonly;
  for (const control of form.querySelectorAll('input, button')) control.disabled = disabled;
  form.hidden = state.readonly;
}

function setControlsDisabled(tile) {
  const disabled = !state.connected || state.readonly;
  for (const control of tile.controls) control.disabled = disabled;
}

function renderHeader() {
  const device = state.device || {};
  const name = device.name || device.id || 'pibridge';
  document.getElementById('device-name').textContent = name;
  document.title = name === 'pibridge' ? 'pibridge' : `${name} · pibridge`;
  const meta = [device.id, device.version && `pibridge ${device.version}`].filter(Boolean);
  document.getElementById('device-meta').textContent = meta.join(' · ');
  document.getElementById('readonly').hidden = !state.readonly;
  document.getElementById('clock').hidden = state.clockSynced;
  document.getElementById('panel').dataset.readonly = String(state.readonly);
}

function toast(text) {
  const box = document.getElementById('toasts');
  const item = el('div', {class: 'toast'}, text);
  box.append(item);
  while (box.children.length > TOAST_MAX) box.firstElementChild.remove();
  setTimeout(() => item.remove(), TOAST_MS);
}

// ---------------------------------------------------------------- login

function bindLogin() {
  state.login = loginForm('bridge', {failed: showLogin, signedIn: () => {
    state.needLogin = false;
    document.getElementById('placeholder').hidden = state.signals.length > 0;
    state.retryDelay = RETRY_MIN_MS;
    connect();
  }});
}

function showLogin(error) {
  if (state.connected) return; // the live socket is proof enough
  state.needLogin = true;
  clearTimeout(state.retryTimer);
  state.retryTimer = 0;
  const ws = state.socket;
  state.socket = null;
  if (ws) ws.close();
  setConnected(false);
  setStatus('offline');
  document.getElementById('placeholder').hidden = true;
  state.login.show(error);
}

function hideLogin() {
  state.needLogin = false;
  state.login.hide();
}

// ---------------------------------------------------------------- helpers

// el builds an element; attributes are set one by one (never a style
// attribute: the CSP forbids inline style, classes do the styling).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === 'class') node.className = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function isOn(value) {
  return value === true || value === 1;
}

function onOff(on) {
  return on ? 'ON' : 'OFF';
}

const NUMBER_FORMAT = new Intl.NumberFormat(undefined, {maximumFractionDigits: 2, useGrouping: false});

function formatValue(value) {
  if (typeof value === 'number' && Number.isFinite(value)) {
    return NUMBER_FORMAT.format(Math.round(value * 100) / 100 || 0); // no "-0"
  }
  if (typeof value === 'boolean') return onOff(value);
  if (value === undefined || value === null) return '—';
  return String(value);
}

function formatAge(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s ago`;
  const min = Math.floor(s / 60);
  if (min < 60) return `${min} min ago`;
  const h = Math.floor(min / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} d ago`;
}

function randomPrefix() {
  const buf = new Uint32Array(1);
  crypto.getRandomValues(buf); // works on plain http too, unlike randomUUID
  return buf[0].toString(36);
}

start();

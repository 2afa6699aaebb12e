// The fleet page: one WebSocket to fleet/ws. The first frame lists every
// device ({"type":"fleet","devices":[…]}); each later {"type":"device",…}
// replaces one row (or removes it). Ages tick locally once a second.
// URLs are relative so the page works behind a reverse proxy's prefix.

// The panel's sign-in form: the gateway serves the panel's login.js here.
import {login, loginForm} from './login.js';

const devices = new Map(); // id → device as the gateway last described it
const rows = new Map();    // id → <tr>
let socket = null;
let retry = 500;
let needLogin = false;

const $ = (id) => document.getElementById(id);
const form = loginForm('gateway', {failed: showLogin, signedIn: () => {
  needLogin = false;
  connect();
}});

function wsURL(path) {
  const u = new URL(path, location.href);
  u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  u.hash = '';
  return u.href;
}

async function start() {
  const token = new URLSearchParams(location.hash.slice(1)).get('token');
  if (token !== null) {
    history.replaceState(null, '', location.pathname + location.search);
    await login('gateway', token);
  }
  if (await checkAuth()) return;
  connect();
}

// checkAuth shows the login form when the API wants a token.
async function checkAuth() {
  try {
    const res = await fetch('api/devices', {credentials: 'same-origin', cache: 'no-store'});
    if (res.status === 401) {
      showLogin('');
      return true;
    }
  } catch (err) { /* the socket will retry */ }
  return false;
}

function connect() {
  if (socket || needLogin) return;
  const ws = new WebSocket(wsURL('fleet/ws'));
  socket = ws;
  ws.addEventListener('open', () => { retry = 500; setConn(true); });
  ws.addEventListener('message', (ev) => onFrame(JSON.parse(ev.data)));
  ws.addEventListener('close', async (ev) => {
    socket = null;
    setConn(false);
    if (ev.code === 4401 || await checkAuth()) {
      showLogin(ev.code === 4401 ? 'Wrong token.' : '');
      return;
    }
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  });
}

function setConn(up) {
  const c = $('conn');
  c.dataset.state = up ? 'online' : 'offline';
  c.textContent = up ? 'live' : 'offline';
}

function onFrame(f) {
  if (f.type === 'fleet') {
    if (f.name) {
      $('fleet-name').textContent = f.name;
      document.title = f.name;
    }
    // The gateway without its broker shows the last it knew, marked so.
    $('conn').textContent = f.mqtt === 'connected' ? 'live' : 'no broker';
    $('conn').dataset.state = f.mqtt === 'connected' ? 'online' : 'offline';
    devices.clear();
    for (const d of f.devices) devices.set(d.id, d);
    $('placeholder').hidden = true;
    $('fleet').hidden = false;
    membership = true;
    for (const id of devices.keys()) dirty.add(id);
  } else if (f.type === 'device') {
    if (f.removed) {
      devices.delete(f.id);
      membership = true;
    } else {
      if (!devices.has(f.id)) membership = true;
      devices.set(f.id, f);
      dirty.add(f.id);
    }
  }
  schedule();
}

// Frames are applied at most once per animation frame: a fleet of a
// thousand devices sends a thousand "last seen" updates a second.
const dirty = new Set();
let membership = false;
let scheduled = false;

function schedule() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(render);
}

function render() {
  scheduled = false;
  const body = document.querySelector('#devices tbody');
  if (membership) {
    membership = false;
    for (const [id, row] of rows) {
      if (!devices.has(id)) { row.remove(); rows.delete(id); }
    }
    const frag = document.createDocumentFragment();
    for (const id of [...devices.keys()].sort()) frag.appendChild(rowOf(id)); // keeps id order
    body.appendChild(frag);
  }
  for (const id of dirty) {
    const d = devices.get(id);
    if (d) update(rowOf(id), d);
  }
  dirty.clear();
  filter();
  ages();
}

function rowOf(id) {
  let row = rows.get(id);
  if (!row) {
    row = document.createElement('tr');
    row.dataset.id = id;
    for (let i = 0; i < 6; i++) row.appendChild(document.createElement('td'));
    const a = document.createElement('a');
    a.href = 'd/' + encodeURIComponent(id) + '/';
    row.cells[0].appendChild(a);
    row.cells[1].textContent = id;
    row.cells[2].className = 'status';
    row.cells[3].className = 'age';
    rows.set(id, row);
  }
  return row;
}

function update(row, d) {
  row.cells[0].firstChild.textContent = d.name || d.id;
  if (row.cells[2].dataset.status !== d.status) {
    row.cells[2].dataset.status = d.status;
    row.cells[2].textContent = d.status;
  }
  row.cells[3].dataset.ts = d.last_reading || '';
  row.cells[4].textContent = d.version || '';
  row.cells[5].textContent = d.signals;
  row.dataset.hay = `${d.name} ${d.id} ${d.version} ${d.status}`.toLowerCase();
}

function filter() {
  const q = $('search').value.trim().toLowerCase();
  let shown = 0;
  let online = 0;
  for (const [id, row] of rows) {
    if (devices.get(id).online) online++;
    const hide = q !== '' && !row.dataset.hay.includes(q);
    if (row.hidden !== hide) row.hidden = hide;
    if (!hide) shown++;
  }
  $('counts').textContent = `${online} of ${devices.size} online`;
  $('empty').hidden = shown > 0 || devices.size === 0;
}

function ages() {
  const now = Date.now();
  for (const row of rows.values()) {
    const cell = row.cells[3];
    const ts = cell.dataset.ts;
    const text = ts ? age(now - Date.parse(ts)) : '—';
    if (cell.textContent !== text) cell.textContent = text;
  }
}

function age(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function showLogin(msg) {
  needLogin = true;
  $('placeholder').hidden = true;
  form.show(msg);
}

$('search').addEventListener('input', filter);
setInterval(ages, 1000);
start();

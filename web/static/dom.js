// Small DOM helpers shared by the panel's pages.

// el builds an element; attributes are set one by one (never a style
// attribute: the CSP forbids inline style, classes do the styling).
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  node.append(...children);
  return node;
}

// getJSON fetches a same-origin JSON resource: {status, body}; body is
// null when the answer is not JSON, status 0 when the bridge is unreachable.
export async function getJSON(url, init) {
  let res;
  try {
    res = await fetch(url, {credentials: 'same-origin', cache: 'no-store', ...init});
  } catch (err) {
    return {status: 0, body: null};
  }
  let body = null;
  try {
    body = await res.json();
  } catch (err) {
    // not JSON
  }
  return {status: res.status, body};
}

// formatDuration says a number of seconds as a person would: 3 d 4 h,
// 2 h 5 min, 4 min 10 s, 12 s.
export function formatDuration(seconds) {
  let s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min ${s} s`;
  return `${s} s`;
}

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB'];

export function formatBytes(n) {
  let v = Number(n) || 0;
  let i = 0;
  while (v >= 1024 && i < BYTE_UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${BYTE_UNITS[i]}`;
}

const COUNT = new Intl.NumberFormat(undefined, {maximumFractionDigits: 2});

export function formatCount(n) {
  return typeof n === 'number' && Number.isFinite(n) ? COUNT.format(n) : '—';
}

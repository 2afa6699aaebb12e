// Live charts for the sensor tiles.
//
// uPlot (vendor/uplot, MIT; see its README for version and source) draws
// them. It is loaded by a classic deferred script before the modules run and
// found as globalThis.uPlot; without it the panel works, without charts.
// uPlot sizes its elements through element.style (CSSOM), which the panel's
// Content-Security-Policy (style-src 'self') allows: it writes no style
// attributes and no HTML.
//
// A chart keeps its own points (bridge milliseconds, value) for the longest
// range, one hour: history fills it, readings extend it, and a history reply
// after a reconnect is merged in rather than replacing what the panel already
// has, so a bridge restart (which empties the bridge's ring) leaves no hole.

export const RANGES = [
  {since: '1m', label: '1 min', ms: 60 * 1000},
  {since: '10m', label: '10 min', ms: 10 * 60 * 1000},
  {since: '1h', label: '1 h', ms: 60 * 60 * 1000},
];

const KEEP_MS = 61 * 60 * 1000; // the longest range and a minute
const MAX_POINTS = 8000; // a bound for sensors faster than the bridge's 1 s history step
const MIN_SPAN_MS = 1000;
const FALLBACK_HEIGHT = 120;

export function chartsAvailable() {
  return typeof globalThis.uPlot === 'function';
}

// Colours come from the style sheet's custom properties, read again when the
// system switches between light and dark.
const theme = {line: '#1f6feb', fill: 'rgb(31 111 235 / 0.15)', axis: '#5d6570', grid: '#d5d9df'};

export function readTheme() {
  const css = getComputedStyle(document.documentElement);
  const get = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  theme.line = get('--chart-line', theme.line);
  theme.fill = get('--chart-fill', theme.fill);
  theme.axis = get('--muted', theme.axis);
  theme.grid = get('--chart-grid', theme.grid);
}

const AXIS_FONT = '11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';

// Time labels on one line (uPlot's default adds a second line with the
// date): seconds while the ticks are less than a minute apart.
const HM = new Intl.DateTimeFormat(undefined, {hour: '2-digit', minute: '2-digit', hourCycle: 'h23'});
const HMS = new Intl.DateTimeFormat(undefined, {hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23'});

export class Chart {
  // host: an empty element whose CSS size the chart fills. now(): the
  // bridge's current time in ms. format(v): a value as the tile shows it.
  constructor(host, {rangeMs, now, format, label}) {
    this.host = host;
    this.rangeMs = rangeMs;
    this.now = now;
    this.format = format;
    this.label = label; // name and unit, for the accessible summary
    this.t = [];
    this.v = [];
    this.frame = 0;
    this.lastDraw = 0;
    this.readout = document.createElement('span');
    this.readout.className = 'chart-readout';
    this.readout.setAttribute('aria-hidden', 'true');
    this.readout.hidden = true;
    this.plot = null;
    this.resizer = new ResizeObserver(() => this.fit());
    this.resizer.observe(host);
  }

  get length() {
    return this.t.length;
  }

  // fit creates the plot once the host has a width, and follows its size.
  fit() {
    const width = Math.floor(this.host.clientWidth);
    const height = Math.floor(this.host.clientHeight) || FALLBACK_HEIGHT;
    if (width <= 0) return;
    if (!this.plot) {
      this.create(width, height);
      return;
    }
    if (width !== this.plot.width || height !== this.plot.height) this.plot.setSize({width, height});
  }

  create(width, height) {
    const self = this;
    const yAxisSize = (u, values) => {
      if (!values) return 36;
      const longest = Math.max(...values.map((s) => String(s).length));
      return Math.ceil(longest * 6.5) + 12;
    };
    const opts = {
      width,
      height,
      ms: 1, // timestamps are milliseconds, as history and readings give them
      legend: {show: false},
      padding: [8, null, 0, 0], // right: uPlot makes room for the last time label

      cursor: {
        x: true,
        y: false,
        drag: {x: false, y: false, setScale: false},
        points: {size: 7, fill: () => theme.line, stroke: () => theme.line},
      },
      scales: {
        x: {
          time: true,
          range: (u, min, max) => self.xRange(min, max),
        },
        y: {
          range: (u, min, max) => yRange(min, max),
        },
      },
      series: [
        {},
        {
          stroke: () => theme.line,
          fill: () => theme.fill,
          width: 2,
          // A lone point in view has no line to draw: show it as a dot.
          points: {show: (u, si, i0, i1) => i1 <= i0, size: 6, fill: () => theme.line},
          spanGaps: false,
        },
      ],
      axes: [
        {
          stroke: () => theme.axis,
          font: AXIS_FONT,
          grid: {stroke: () => theme.grid, width: 1},
          ticks: {show: false},
          space: 72,
          size: 22,
          gap: 4,
          values: (u, splits, axisIdx, space, incr) => splits.map((v) => (incr < 60000 ? HMS : HM).format(v)),
        },
        {
          stroke: () => theme.axis,
          font: AXIS_FONT,
          grid: {stroke: () => theme.grid, width: 1},
          ticks: {show: false},
          space: 24,
          size: yAxisSize,
          values: (u, splits) => splits.map((v) => self.format(v)),
        },
      ],
      hooks: {
        setCursor: [(u) => self.showReadout(u)],
      },
    };
    this.plot = new globalThis.uPlot(opts, [this.t, this.v], this.host);
    this.host.append(this.readout);
    this.lastDraw = performance.now();
  }

  // xRange shows the chosen range up to now, or less when the chart has
  // not seen that much yet: a young bridge fills the width with what it has.
  xRange(dataMin) {
    const hi = this.now();
    let lo = hi - this.rangeMs;
    if (typeof dataMin === 'number' && Number.isFinite(dataMin) && dataMin > lo) lo = dataMin;
    if (hi - lo < MIN_SPAN_MS) lo = hi - MIN_SPAN_MS;
    return [lo, hi];
  }

  setRange(ms) {
    this.rangeMs = ms;
    this.draw();
  }

  // push adds one reading; an equal timestamp replaces, an older one is
  // put in its place.
  push(ms, value) {
    if (!Number.isFinite(ms) || typeof value !== 'number' || !Number.isFinite(value)) return;
    const n = this.t.length;
    if (n === 0 || ms > this.t[n - 1]) {
      this.t.push(ms);
      this.v.push(value);
    } else {
      const i = lowerBound(this.t, ms);
      if (this.t[i] === ms) this.v[i] = value;
      else {
        this.t.splice(i, 0, ms);
        this.v.splice(i, 0, value);
      }
    }
    this.trim();
    this.schedule();
  }

  // merge takes history points [[ms, v], …] sorted by time: they replace
  // what the chart has within their span; older and newer points stay.
  merge(points) {
    const hist = points.filter((p) => Array.isArray(p) && Number.isFinite(p[0]) && Number.isFinite(p[1]));
    if (hist.length === 0) return;
    const first = hist[0][0];
    const last = hist[hist.length - 1][0];
    const t = [];
    const v = [];
    for (let i = 0; i < this.t.length && this.t[i] < first; i++) {
      t.push(this.t[i]);
      v.push(this.v[i]);
    }
    for (const [pt, pv] of hist) {
      t.push(pt);
      v.push(pv);
    }
    for (let i = lowerBound(this.t, last + 1); i < this.t.length; i++) {
      t.push(this.t[i]);
      v.push(this.v[i]);
    }
    this.t = t;
    this.v = v;
    this.trim();
    this.schedule();
  }

  trim() {
    const n = this.t.length;
    if (n === 0) return;
    let drop = lowerBound(this.t, this.t[n - 1] - KEEP_MS);
    drop = Math.max(drop, n - MAX_POINTS);
    if (drop > 0) {
      this.t.splice(0, drop);
      this.v.splice(0, drop);
    }
  }

  // schedule redraws on the next frame: several readings in one frame draw
  // once, and a hidden tab draws nothing until it is shown again.
  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  draw() {
    this.lastDraw = performance.now();
    this.host.setAttribute('aria-label', this.summary());
    if (!this.plot) return;
    this.plot.setData([this.t, this.v]);
  }

  // tick slides the time window when no reading came for a while.
  tick() {
    if (performance.now() - this.lastDraw > 5000) this.schedule();
  }

  summary() {
    const range = RANGES.find((r) => r.ms === this.rangeMs);
    const span = range ? range.label : `${Math.round(this.rangeMs / 60000)} min`;
    const from = lowerBound(this.t, this.now() - this.rangeMs);
    if (from >= this.v.length) return `${this.label}, last ${span}: no data`;
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = from; i < this.v.length; i++) {
      lo = Math.min(lo, this.v[i]);
      hi = Math.max(hi, this.v[i]);
    }
    return `${this.label}, last ${span}: from ${this.format(lo)} to ${this.format(hi)}`;
  }

  // showReadout names the point under the mouse pointer.
  showReadout(u) {
    const idx = u.cursor.idx;
    const [t, v] = u.data;
    if (idx === null || idx === undefined || idx >= t.length) {
      this.readout.textContent = '';
      this.readout.hidden = true;
      return;
    }
    const time = new Date(t[idx]).toLocaleTimeString();
    this.readout.textContent = `${this.format(v[idx])} · ${time}`;
    this.readout.hidden = false;
  }

  // redraw repaints with the current theme.
  redraw() {
    if (this.plot) this.plot.redraw(true, true);
  }

  // clear forgets every point: the bridge's clock was set, and the history
  // it re-dated replaces them.
  clear() {
    this.t = [];
    this.v = [];
    this.schedule();
  }

  destroy() {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.resizer.disconnect();
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}

// yRange fits the y axis to the data from the first reading on. uPlot's
// default makes room from 0 to twice a flat value (0–2000 hPa for one
// pressure reading); here the axis spans the data plus a tenth on each
// side, and at least half a percent of the value (a tenth of a unit near
// zero), so that a flat line sits in the middle and noise is not magnified.
export function yRange(min, max) {
  if (typeof min !== 'number' || typeof max !== 'number' || !Number.isFinite(min) || !Number.isFinite(max)) {
    return [0, 1];
  }
  const mid = (min + max) / 2;
  const span = Math.max(max - min, Math.abs(mid) * 0.005, 0.1);
  const half = span * 0.6; // the span and a tenth of it each side
  return [mid - half, mid + half];
}

// lowerBound returns the first index whose value is >= x in a sorted array.
function lowerBound(a, x) {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// aggbook's live page: one WebSocket to /v1/ws for quotes, ladder and venue transitions, the HTTP
// API for /v1/status (ages, resync counts) and /v1/sweep.  No framework and no build step.
//
// Messages only change `state`; the DOM and the chart are redrawn at most once per animation frame
// from it, so the page keeps up with any message rate (the browser skips frames, never messages).
// Prices and sizes are shown exactly as the service sent them (decimal text); only the chart turns
// the spread into a number, to plot it.
'use strict';

const BOOK_DEPTH = 10;
const CHART_WINDOW_MS = 120000;
const CHART_POINTS_KEPT = 20000;
const STATUS_POLL_MS = 1000;
const SILENCE_MS = 45000; // the service sends a heartbeat every 15 s by default
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 10000;
const EVENTS_KEPT = 60;

const $ = (id) => document.getElementById(id);

const state = {
  symbols: [], // configured symbols, from /v1/symbols
  selected: null,
  quotes: new Map(), // symbol -> {seq, data}: the quotes subscription without fees
  feeQuotes: new Map(), // symbol -> {seq, data}: with fees
  book: null, // {seq, data} of the selected symbol's ladder
  bookSub: null, // the acknowledged ladder subscription whose messages are shown
  bookRequest: null, // id of the ladder subscribe awaiting its ack
  subSeq: new Map(), // subscription id -> seq of its last message
  transitions: new Map(), // "symbol venue" -> the last `status` message
  status: null, // the last /v1/status body
  statusError: null,
  history: new Map(), // symbol -> {points, episodes, counts}
  events: [], // newest first
  conflated: 0,
  messages: 0,
  renders: 0,
  mostPerRender: 0, // the most messages one frame took in: above 1 means the page conflated
  sinceRender: 0,
  rate: {count: 0, since: performance.now(), perSecond: 0},
  conn: {state: 'connecting', attempt: 0, retryAt: 0, lastMessage: 0, why: ''},
};

// ------------------------------------------------------------------ rendering, once per frame
const dirty = new Set();
let frameRequested = false;

function invalidate(...parts) {
  for (const part of parts) dirty.add(part);
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(renderFrame);
  }
}

function renderFrame() {
  frameRequested = false;
  state.renders += 1;
  state.mostPerRender = Math.max(state.mostPerRender, state.sinceRender);
  state.sinceRender = 0;
  const parts = new Set(dirty);
  dirty.clear();
  if (parts.has('connection')) renderConnection();
  if (parts.has('symbols')) renderSymbols();
  if (parts.has('quote')) renderQuote();
  if (parts.has('book')) renderLadder();
  if (parts.has('venues')) renderVenues();
  if (parts.has('chart')) drawChart();
  if (parts.has('events')) renderEvents();
  renderFooter();
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function setData(el, name, value) {
  const text = value === null || value === undefined ? '' : String(value);
  if (el.dataset[name] !== text) el.dataset[name] = text;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ------------------------------------------------------------------ connection
let ws = null;
let reconnectTimer = null;
let requestId = 0;

function setConnection(name, why) {
  state.conn.state = name;
  if (why !== undefined) state.conn.why = why;
  document.body.dataset.connection = name;
  invalidate('connection');
}

function connect() {
  clearTimeout(reconnectTimer);
  reconnectTimer = null;
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const sock = new WebSocket(`${scheme}//${location.host}/v1/ws`);
  ws = sock;
  setConnection(state.conn.attempt ? 'reconnecting' : 'connecting');
  sock.onopen = () => {
    if (ws !== sock) return;
    state.conn.lastMessage = Date.now();
    if (state.conn.attempt) addEvent(null, null, 'connection', 'reconnected; subscribing again');
    state.conn.attempt = 0;
    setConnection('open', '');
    subscribeAll();
  };
  sock.onmessage = (event) => {
    if (ws !== sock) return;
    state.conn.lastMessage = Date.now();
    onMessage(event.data);
  };
  sock.onclose = (event) => {
    if (ws !== sock) return;
    lost(`connection closed (code ${event.code}${event.reason ? `, ${event.reason}` : ''})`);
  };
}

// Forget the socket and try again later, backing off: 0.5 s, 1 s, 2 s ... up to 10 s, jittered.
function lost(why) {
  const sock = ws;
  ws = null;
  if (sock && sock.readyState <= WebSocket.OPEN) sock.close();
  state.subSeq.clear();
  state.bookSub = null;
  state.bookRequest = null;
  for (const h of state.history.values()) h.points.push({t: performance.now(), v: null});
  state.conn.attempt += 1;
  const delay = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (state.conn.attempt - 1)) * (0.5 + Math.random() / 2);
  state.conn.retryAt = Date.now() + delay;
  addEvent(null, null, 'connection', `${why}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
  setConnection('reconnecting', why);
  reconnectTimer = setTimeout(connect, delay);
}

function send(message) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
}

function subscribeAll() {
  send({op: 'subscribe', channel: 'quotes', symbols: state.symbols, fees: false, id: `quotes-${++requestId}`});
  send({op: 'subscribe', channel: 'quotes', symbols: state.symbols, fees: true, id: `quotes-${++requestId}`});
  subscribeBook();
}

function subscribeBook() {
  if (state.bookSub) send({op: 'unsubscribe', subs: [state.bookSub], id: `unsub-${++requestId}`});
  state.subSeq.delete(state.bookSub);
  state.bookSub = null;
  state.book = null;
  state.bookRequest = `book-${++requestId}`;
  send({op: 'subscribe', channel: 'book', symbol: state.selected, depth: BOOK_DEPTH, id: state.bookRequest});
  invalidate('book');
}

// A silent connection is a dead one: the service sends heartbeats even when nothing changes.
setInterval(() => {
  if (ws && ws.readyState === WebSocket.OPEN && Date.now() - state.conn.lastMessage > SILENCE_MS) {
    lost(`no message for ${SILENCE_MS / 1000} s`);
  }
  if (state.conn.state !== 'open') invalidate('connection'); // the countdown
}, 1000);

// ------------------------------------------------------------------ messages
function onMessage(text) {
  let msg;
  try {
    msg = JSON.parse(text);
  } catch (err) {
    lost(`undecodable message (${err.message})`);
    return;
  }
  state.messages += 1;
  state.sinceRender += 1;
  state.rate.count += 1;
  switch (msg.type) {
    case 'snapshot':
    case 'update':
      onData(msg);
      break;
    case 'status':
      onStatus(msg);
      break;
    case 'ack':
      if (msg.op === 'subscribe' && msg.id === state.bookRequest) {
        state.bookSub = msg.subs[0].sub;
        state.bookRequest = null;
      }
      break;
    case 'error':
      addEvent(null, null, 'error', `${msg.code}: ${msg.message}`);
      console.error(`aggbook refused a request: ${msg.code}: ${msg.message}`);
      break;
    default:
      break; // heartbeat, pong, and anything newer than this page
  }
}

function onData(msg) {
  if (msg.channel === 'book' && msg.sub !== state.bookSub) return; // an older ladder subscription
  const last = state.subSeq.get(msg.sub);
  if (msg.type === 'update' && last !== undefined && msg.seq !== last + 1) {
    lost(`${msg.sub}: seq ${msg.seq} after ${last}`); // never happens unless something is broken
    return;
  }
  if (msg.type === 'snapshot' && msg.reason === 'conflated') {
    state.conflated += 1;
  }
  state.subSeq.set(msg.sub, msg.seq);
  if (msg.channel === 'quotes') {
    const fees = msg.data.fees === true;
    (fees ? state.feeQuotes : state.quotes).set(msg.symbol, {seq: msg.seq, data: msg.data});
    if (!fees) record(msg.symbol, msg.data);
    if (msg.symbol === state.selected) invalidate('quote', 'venues', 'chart');
    invalidate('symbols');
  } else if (msg.channel === 'book') {
    state.book = {seq: msg.seq, data: msg.data};
    invalidate('book');
  }
}

function onStatus(msg) {
  state.transitions.set(`${msg.symbol} ${msg.venue}`, msg);
  const why = msg.detail ? `${msg.reason}: ${msg.detail}` : msg.reason;
  addEvent(msg.symbol, msg.venue, msg.state, `${msg.previous} \u2192 ${msg.state} (${why})`);
  if (msg.symbol === state.selected) invalidate('venues');
}

function addEvent(symbol, venue, kind, text) {
  state.events.unshift({at: new Date(), symbol, venue, kind, text});
  state.events.length = Math.min(state.events.length, EVENTS_KEPT);
  invalidate('events');
}

// ------------------------------------------------------------------ spread history
function historyOf(symbol) {
  let h = state.history.get(symbol);
  if (!h) {
    h = {points: [], episodes: [], counts: {crossed: 0, locked: 0}};
    state.history.set(symbol, h);
  }
  return h;
}

function record(symbol, data) {
  const h = historyOf(symbol);
  const now = performance.now();
  const spread = data.spread === null ? null : Number(data.spread);
  h.points.push({t: now, v: Number.isFinite(spread) ? spread : null});
  const kind = data.crossed ? 'crossed' : data.locked ? 'locked' : null;
  const open = h.episodes.length ? h.episodes[h.episodes.length - 1] : null;
  if (open && open.end === null && open.kind !== kind) open.end = now;
  if (kind && !(open && open.end === null && open.kind === kind)) {
    h.episodes.push({kind, start: now, end: null});
    h.counts[kind] += 1;
  }
  const horizon = now - CHART_WINDOW_MS;
  let drop = 0;
  while (drop < h.points.length - 1 && h.points[drop + 1].t < horizon) drop += 1; // keep one point before the window
  if (h.points.length - drop > CHART_POINTS_KEPT) drop = h.points.length - CHART_POINTS_KEPT;
  if (drop) h.points.splice(0, drop);
  while (h.episodes.length && h.episodes[0].end !== null && h.episodes[0].end < horizon) h.episodes.shift();
}

// ------------------------------------------------------------------ symbols
function renderSymbols() {
  const nav = $('symbols');
  for (const symbol of state.symbols) {
    let button = nav.querySelector(`button[data-symbol="${symbol}"]`);
    if (!button) {
      button = el('button', 'symbol');
      button.type = 'button';
      button.dataset.symbol = symbol;
      button.append(el('span', 'name', symbol), el('span', 'bbo'));
      button.addEventListener('click', () => select(symbol));
      nav.append(button);
    }
    button.setAttribute('aria-pressed', symbol === state.selected ? 'true' : 'false');
    const q = state.quotes.get(symbol);
    const bbo = q ? `${q.data.bid ? q.data.bid.price : '\u2013'} / ${q.data.ask ? q.data.ask.price : '\u2013'}` : '';
    setText(button.querySelector('.bbo'), bbo);
  }
}

function select(symbol) {
  if (!state.symbols.includes(symbol) || symbol === state.selected) return;
  state.selected = symbol;
  if (location.hash !== `#${symbol}`) history.replaceState(null, '', `#${symbol}`);
  document.title = `${symbol} \u00b7 aggbook`;
  $('sweep-result').replaceChildren();
  $('sweep-result').dataset.state = 'idle';
  subscribeBook();
  invalidate('symbols', 'quote', 'venues', 'chart', 'book');
}

// ------------------------------------------------------------------ best bid and ask
function venueList(side, fee) {
  if (!side) return '';
  return side.venues
    .map((v) => (fee ? `${v.venue} (${v.price} before fees)` : `${v.venue} ${v.size}`))
    .join(', ');
}

function renderQuote() {
  const box = $('quote');
  const q = state.quotes.get(state.selected);
  const f = state.feeQuotes.get(state.selected);
  const data = q ? q.data : null;
  const fees = f ? f.data : null;
  for (const name of ['bid', 'ask']) {
    const side = data ? data[name] : null;
    setText($(`${name}-price`), side ? side.price : '\u2013');
    setText($(`${name}-size`), side ? side.size : '\u2013');
    setText($(`${name}-venues`), venueList(side, false));
    const feeSide = fees ? fees[name] : null;
    setText($(`${name}-fee-price`), feeSide ? feeSide.price : '\u2013');
    setText($(`${name}-fee-venues`), venueList(feeSide, true));
  }
  setText($('spread'), data && data.spread !== null ? data.spread : '\u2013');
  setText($('fee-spread'), fees && fees.spread !== null ? fees.spread : '\u2013');
  const cross = data ? (data.crossed ? 'crossed' : data.locked ? 'locked' : 'none') : 'none';
  setData($('cross'), 'cross', cross);
  setText($('cross'), cross === 'none' ? '' : cross);
  setData(box, 'symbol', state.selected);
  setData(box, 'seq', q ? q.seq : '');
  setData(box, 'feeSeq', f ? f.seq : '');
}

// ------------------------------------------------------------------ ladder
function ladderRow(body, index, cells) {
  let row = body.children[index];
  if (!row) {
    row = el('tr');
    for (const cls of cells.map((c) => c.cls)) row.append(el('td', cls));
    body.append(row);
  }
  cells.forEach((c, i) => setText(row.children[i], c.text));
  return row;
}

// the venues at a level, largest first (as sent); each venue's own size is in the cell's tooltip
function levelVenues(level) {
  return Object.keys(level.venues).join(' \u00b7 ');
}

function levelSizes(level) {
  return Object.entries(level.venues)
    .map(([venue, size]) => `${venue} ${size}`)
    .join('\n');
}

function renderLadder() {
  const box = $('ladder');
  const book = state.book;
  const bids = book ? book.data.bids : [];
  const asks = book ? book.data.asks : [];
  const largest = Math.max(1e-300, ...[...bids, ...asks].map((l) => Number(l.size)));
  const fill = (body, levels, bid) => {
    levels.forEach((level, i) => {
      const cells = [
        {cls: 'venues', text: levelVenues(level)},
        {cls: 'num size', text: level.size},
        {cls: 'num price', text: level.price},
      ];
      const row = ladderRow(body, i, bid ? cells : cells.reverse());
      row.dataset.price = level.price;
      row.querySelector('.venues').title = levelSizes(level);
      row.style.setProperty('--depth', `${Math.min(100, (100 * Number(level.size)) / largest).toFixed(1)}%`);
    });
    while (body.children.length > levels.length) body.lastElementChild.remove();
  };
  fill($('ladder-bids'), bids, true);
  fill($('ladder-asks'), asks, false);
  setData(box, 'symbol', book ? book.data.symbol : '');
  setData(box, 'seq', book ? book.seq : '');
  let info = book ? `${book.data.venues.length} venues, top ${BOOK_DEPTH} levels` : 'waiting for the ladder';
  const excluded = book ? Object.entries(book.data.excluded) : [];
  if (excluded.length) info += `; left out: ${excluded.map(([v, why]) => `${v} (${why})`).join(', ')}`;
  setText($('ladder-info'), info);
}

// ------------------------------------------------------------------ venues
function statusOf(venue, symbol) {
  if (!state.status) return null;
  const v = state.status.venues.find((item) => item.venue === venue);
  return v && v.symbols ? v.symbols[symbol] || null : null;
}

// a venue's top of book: the price, and the size under it
function showLevel(cell, level) {
  if (!cell.firstElementChild) cell.append(el('span', 'price'), el('span', 'size'));
  setText(cell.firstElementChild, level ? `${level.price} ` : '\u2013');
  setText(cell.lastElementChild, level ? `\u00d7 ${level.size}` : '');
}

function renderVenues() {
  const body = $('venue-rows');
  const q = state.quotes.get(state.selected);
  const venues = q ? q.data.venues : [];
  const seen = new Set();
  for (const v of venues) {
    seen.add(v.venue);
    let row = body.querySelector(`tr[data-venue="${v.venue}"]`);
    if (!row) {
      row = el('tr');
      row.dataset.venue = v.venue;
      for (const cls of ['venue', 'state', 'reason', 'num age', 'num resyncs', 'included', 'num level', 'num level', 'num fee']) {
        row.append(el('td', cls));
      }
      row.children[1].append(el('span', 'state-badge'));
      body.append(row);
    }
    const status = statusOf(v.venue, state.selected);
    const transition = state.transitions.get(`${state.selected} ${v.venue}`);
    // the state comes from the stream (newest); the reason from whichever source saw that state last
    let reason = '';
    let detail = '';
    if (transition && transition.state === v.state) {
      reason = transition.reason;
      detail = transition.detail;
    } else if (status && status.state === v.state) {
      reason = status.reason || '';
      detail = status.detail || '';
    }
    const cells = row.children;
    setText(cells[0], v.venue);
    const badge = cells[1].firstElementChild;
    setText(badge, v.state);
    setData(badge, 'state', v.state);
    setData(row, 'state', v.state);
    setText(cells[2], reason);
    cells[2].title = detail;
    const age = status ? status.last_update_age_seconds : null;
    setText(cells[3], age === null || age === undefined ? '\u2013' : `${age.toFixed(2)} s`);
    const resyncs = status ? status.resyncs : {};
    const total = Object.values(resyncs).reduce((a, b) => a + b, 0);
    setText(cells[4], status ? String(total) : '\u2013');
    cells[4].title = Object.entries(resyncs).map(([why, n]) => `${why}: ${n}`).join(', ');
    setData(row, 'resyncs', status ? total : '');
    setText(cells[5], v.included ? 'included' : `excluded: ${v.excluded_reason}`);
    setData(row, 'included', v.included);
    showLevel(cells[6], v.bid);
    showLevel(cells[7], v.ask);
    setText(cells[8], `${v.fee_bps} bps`);
  }
  for (const row of [...body.children]) if (!seen.has(row.dataset.venue)) row.remove();
  const info = state.statusError
    ? `status unavailable: ${state.statusError}`
    : state.status
      ? `uptime ${Math.round(state.status.uptime_seconds)} s; ages and resyncs from /v1/status every ${STATUS_POLL_MS / 1000} s`
      : '';
  setText($('status-info'), info);
}

async function pollStatus() {
  try {
    const response = await fetch('/v1/status', {cache: 'no-store'});
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    state.status = await response.json();
    state.statusError = null;
  } catch (err) {
    state.statusError = err.message;
  }
  invalidate('venues');
  setTimeout(pollStatus, STATUS_POLL_MS);
}

// ------------------------------------------------------------------ chart
let styles = null;
function cssColor(name) {
  return styles.getPropertyValue(name).trim() || '#888';
}

function niceStep(span) {
  const raw = span / 4;
  const power = 10 ** Math.floor(Math.log10(raw));
  const unit = raw / power;
  return (unit < 1.5 ? 1 : unit < 3.5 ? 2 : unit < 7.5 ? 5 : 10) * power;
}

function drawChart() {
  const canvas = $('chart');
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  styles = getComputedStyle(document.documentElement);
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const h = historyOf(state.selected);
  const now = performance.now();
  const start = now - CHART_WINDOW_MS;
  const left = 64;
  const right = 8;
  const top = 8;
  const bottom = 20;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const x = (t) => left + ((t - start) / CHART_WINDOW_MS) * plotW;
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = cssColor('--muted');

  for (const ep of h.episodes) {
    const a = Math.max(ep.start, start);
    const b = ep.end === null ? now : ep.end;
    if (b < start) continue;
    ctx.fillStyle = cssColor(ep.kind === 'crossed' ? '--crossed-band' : '--locked-band');
    ctx.fillRect(x(a), top, Math.max(2, x(b) - x(a)), plotH);
  }

  let lo = Infinity;
  let hi = -Infinity;
  for (const p of h.points) {
    if (p.v === null || p.t < start - 1000) continue;
    lo = Math.min(lo, p.v);
    hi = Math.max(hi, p.v);
  }
  ctx.fillStyle = cssColor('--muted');
  ctx.strokeStyle = cssColor('--grid');
  ctx.lineWidth = 1;
  for (let s = 0; s <= 120; s += 30) {
    const px = x(now - s * 1000);
    ctx.beginPath();
    ctx.moveTo(px, top);
    ctx.lineTo(px, top + plotH);
    ctx.stroke();
    ctx.textAlign = 'center';
    ctx.fillText(s ? `-${s} s` : 'now', Math.min(px, width - 16), height - 5);
  }
  if (lo === Infinity) {
    ctx.textAlign = 'left';
    ctx.fillText('no spread yet', left + 8, top + 16);
    return;
  }
  lo = Math.min(lo, 0);
  hi = Math.max(hi, 0);
  if (hi - lo === 0) hi = lo + 1;
  const pad = (hi - lo) * 0.1;
  lo -= lo < 0 ? pad : 0;
  hi += pad;
  const y = (v) => top + plotH - ((v - lo) / (hi - lo)) * plotH;
  const step = niceStep(hi - lo);
  const decimals = Math.max(0, -Math.floor(Math.log10(step)));
  ctx.textAlign = 'right';
  for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
    ctx.beginPath();
    ctx.moveTo(left, y(v));
    ctx.lineTo(left + plotW, y(v));
    ctx.strokeStyle = Math.abs(v) < step / 2 ? cssColor('--zero') : cssColor('--grid');
    ctx.stroke();
    ctx.fillText(v.toFixed(Math.min(decimals, 10)), left - 6, y(v) + 4);
  }

  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top, plotW, plotH);
  ctx.clip();
  ctx.beginPath();
  ctx.strokeStyle = cssColor('--line');
  ctx.lineWidth = 1.5;
  let pen = false;
  let lastY = 0;
  for (const p of h.points) {
    if (p.v === null) {
      pen = false;
      continue;
    }
    const px = x(p.t);
    const py = y(p.v);
    if (!pen) {
      ctx.moveTo(px, py);
      pen = true;
    } else {
      ctx.lineTo(px, lastY); // the spread holds until the next update: a step line
      ctx.lineTo(px, py);
    }
    lastY = py;
  }
  if (pen) ctx.lineTo(x(now), lastY);
  ctx.stroke();
  ctx.restore();

  const open = h.episodes.length && h.episodes[h.episodes.length - 1].end === null ? h.episodes[h.episodes.length - 1] : null;
  setText(
    $('chart-info'),
    `crossed episodes: ${h.counts.crossed}, locked episodes: ${h.counts.locked} (since the page opened)` +
      (open ? `; ${open.kind} now for ${((now - open.start) / 1000).toFixed(1)} s` : ''),
  );
}

// the time axis moves even when the spread does not
setInterval(() => invalidate('chart'), 250);

// ------------------------------------------------------------------ sweep calculator
function sweepRow(table, label, value) {
  if (value === undefined || value === null) return;
  const row = el('tr');
  row.append(el('th', '', label), el('td', 'num', String(value)));
  row.dataset.field = label;
  table.append(row);
}

async function runSweep(event) {
  event.preventDefault();
  const out = $('sweep-result');
  const symbol = state.selected;
  const side = $('sweep-side').value;
  const qty = $('sweep-qty').value.trim();
  const fees = $('sweep-fees').checked;
  const params = new URLSearchParams({side, qty, fees: String(fees)});
  out.dataset.state = 'pending';
  out.replaceChildren(el('p', 'muted', `sweeping ${qty} ${symbol}\u2026`));
  let body;
  let ok = false;
  try {
    const response = await fetch(`/v1/sweep/${encodeURIComponent(symbol)}?${params}`, {cache: 'no-store'});
    body = await response.json();
    ok = response.ok;
  } catch (err) {
    body = {error: {code: 'network', message: err.message}};
  }
  if (symbol !== state.selected) return; // the user moved on
  if (!ok) {
    out.dataset.state = 'error';
    out.replaceChildren(el('p', 'error', body.error ? body.error.message : 'the sweep failed'));
    return;
  }
  out.dataset.state = 'done';
  const summary = el('table', 'sweep-summary');
  sweepRow(summary, 'filled', `${body.filled} of ${body.requested}${body.complete ? '' : ' (incomplete)'}`);
  sweepRow(summary, 'notional', body.notional);
  sweepRow(summary, 'average price', body.average_price);
  sweepRow(summary, 'best price', body.best_price);
  sweepRow(summary, 'worst price', body.worst_price);
  sweepRow(summary, 'fee', body.fee);
  sweepRow(summary, 'total cost', body.total_cost);
  sweepRow(summary, 'net proceeds', body.net_proceeds);
  sweepRow(summary, 'average with fees', body.average_price_with_fees);
  sweepRow(summary, 'levels', body.levels);
  const alloc = el('table', 'sweep-alloc');
  const head = el('tr');
  for (const title of ['venue', 'qty', 'notional', 'average', 'worst', 'fee']) head.append(el('th', '', title));
  alloc.append(head);
  for (const a of body.allocation) {
    const row = el('tr');
    row.dataset.venue = a.venue;
    for (const value of [a.venue, a.qty, a.notional, a.average_price, a.worst_price, a.fee ?? '\u2013']) {
      row.append(el('td', 'num', String(value ?? '\u2013')));
    }
    alloc.append(row);
  }
  out.replaceChildren(summary, alloc);
  out.dataset.notional = body.notional;
  out.dataset.filled = body.filled;
}

// ------------------------------------------------------------------ connection banner, events, footer
function renderConnection() {
  const banner = $('banner');
  const c = state.conn;
  let text = '';
  if (c.state === 'connecting') text = 'Connecting to the service\u2026';
  if (c.state === 'reconnecting') {
    const wait = Math.max(0, Math.ceil((c.retryAt - Date.now()) / 1000));
    text = ws
      ? `Connection lost (${c.why}). Reconnecting now (attempt ${c.attempt})\u2026 The figures below are not live.`
      : `Connection lost (${c.why}). Reconnecting in ${wait} s (attempt ${c.attempt}). The figures below are not live.`;
  }
  setText(banner, text);
  setText($('conn'), c.state === 'open' ? 'live' : c.state);
  setData($('conn'), 'state', c.state);
}

function renderEvents() {
  const list = $('events');
  const items = state.events.map((e) => {
    const li = el('li');
    li.dataset.kind = e.kind;
    li.append(el('time', '', e.at.toLocaleTimeString()));
    if (e.symbol) li.append(el('span', 'sym', e.symbol));
    if (e.venue) li.append(el('span', 'ven', e.venue));
    li.append(el('span', 'text', e.text));
    return li;
  });
  list.replaceChildren(...items);
}

function renderFooter() {
  const now = performance.now();
  if (now - state.rate.since >= 1000) {
    state.rate.perSecond = (state.rate.count * 1000) / (now - state.rate.since);
    state.rate = {count: 0, since: now, perSecond: state.rate.perSecond};
  }
  setText(
    $('footer'),
    `${state.messages} messages (${state.rate.perSecond.toFixed(0)}/s), ${state.conflated} conflated snapshots \u00b7 ` +
      'prices are the exact decimal text the service sends \u00b7 API: /openapi.json',
  );
}

// ------------------------------------------------------------------ start
async function boot(attempt) {
  try {
    const response = await fetch('/v1/symbols', {cache: 'no-store'});
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    state.symbols = body.symbols.map((s) => s.symbol);
  } catch (err) {
    const delay = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
    setText($('banner'), `Cannot reach the service (${err.message}); trying again in ${Math.ceil(delay / 1000)} s.`);
    setTimeout(() => boot(attempt + 1), delay);
    return;
  }
  const wanted = decodeURIComponent(location.hash.slice(1)).toUpperCase();
  state.selected = state.symbols.includes(wanted) ? wanted : state.symbols[0];
  document.title = `${state.selected} \u00b7 aggbook`;
  window.addEventListener('hashchange', () => select(decodeURIComponent(location.hash.slice(1)).toUpperCase()));
  $('sweep-form').addEventListener('submit', runSweep);
  invalidate('symbols', 'quote', 'venues', 'chart', 'book', 'connection');
  connect();
  pollStatus();
}

// read-only figures for whoever looks (tests, the console): how busy the page is
window.aggbook = Object.freeze({
  stats: () => ({messages: state.messages, renders: state.renders, mostPerRender: state.mostPerRender,
    conflated: state.conflated, perSecond: state.rate.perSecond}),
});

boot(0);

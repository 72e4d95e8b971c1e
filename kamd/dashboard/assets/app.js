// kamd dashboard: plain JavaScript, no framework, no network access but
// kamd's own JSON-RPC websocket (/ws). Everything shown comes from the
// methods and events any client can use (docs/rpc.md).
'use strict';

const TOKEN_KEY = 'kamd_token';
const WINDOW_S = 15 * 60; // chart history
const $ = (id) => document.getElementById(id);

const S = {
  ws: null,
  nextId: 1,
  pending: new Map(),
  online: false,
  everOnline: false,
  offlineSince: null,
  retry: 0,
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  role: '',
  methods: new Set(),
  panel: 'overview',
  upSince: null,
  stats: null, // last stats snapshot {t, v}
  series: [], // [{t, v: {name: rate}}], null entries are gaps
  contacts: [], // flattened ul.dump
  trunks: [],
  ipsec: [],
  events: [],
  topics: new Set(),
  gen: 0, // connection generation: replies of an old connection are ignored
};

// ---- JSON-RPC over the websocket -----------------------------------------

function call(method, params) {
  return new Promise((resolve, reject) => {
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN) {
      reject(rpcError(-1, 'offline'));
      return;
    }
    const id = S.nextId++;
    S.pending.set(id, { resolve, reject });
    const req = { jsonrpc: '2.0', method, id };
    if (params !== undefined) req.params = params;
    S.ws.send(JSON.stringify(req));
  });
}

function rpcError(code, message) {
  const e = new Error(message);
  e.code = code;
  return e;
}

function connect() {
  const gen = ++S.gen;
  setConn('connecting');
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  // The token travels as a "bearer." subprotocol (browsers cannot set
  // headers on a websocket); kamd answers with "jsonrpc".
  const subs = ['jsonrpc'];
  if (S.token) subs.push('bearer.' + S.token);
  let ws;
  try {
    ws = new WebSocket(proto + '//' + location.host + '/ws', subs);
  } catch (e) {
    scheduleReconnect();
    return;
  }
  S.ws = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
    S.retry = 0;
    start(gen).catch((e) => {
      console.warn('dashboard: start failed', e);
      if (gen === S.gen) ws.close();
    });
  };
  ws.onmessage = (ev) => {
    if (gen !== S.gen) return;
    let m;
    try { m = JSON.parse(ev.data); } catch (e) { return; }
    if (Array.isArray(m)) { m.forEach(onMessage); return; }
    onMessage(m);
  };
  ws.onclose = () => {
    if (gen !== S.gen) return;
    for (const p of S.pending.values()) p.reject(rpcError(-1, 'connection closed'));
    S.pending.clear();
    S.ws = null;
    if (opened) {
      goOffline();
      scheduleReconnect();
      return;
    }
    // The handshake failed: find out whether kamd wants a (better) token
    // or is not there at all.
    probe().then((status) => {
      if (status === 401) {
        goOffline(true);
        showLogin(S.token ? 'The token was refused.' : '');
      } else {
        goOffline();
        scheduleReconnect();
      }
    });
  };
}

// probe asks POST /RPC what the failed websocket could not tell: 401 when
// a token is needed or wrong, 0 when kamd cannot be reached.
async function probe() {
  try {
    const h = { 'Content-Type': 'application/json' };
    if (S.token) h.Authorization = 'Bearer ' + S.token;
    const r = await fetch('/RPC', { method: 'POST', headers: h, cache: 'no-store',
      body: JSON.stringify({ jsonrpc: '2.0', method: 'core.whoami', id: 1 }) });
    return r.status;
  } catch (e) {
    return 0;
  }
}

function scheduleReconnect() {
  const delay = Math.min(5000, 500 * Math.pow(2, S.retry++));
  setTimeout(connect, delay);
}

function onMessage(m) {
  if (m.method === 'event' && m.params) {
    onEvent(m.params);
    return;
  }
  const p = S.pending.get(m.id);
  if (!p) return;
  S.pending.delete(m.id);
  if (m.error) p.reject(rpcError(m.error.code, m.error.message));
  else p.resolve(m.result);
}

// start runs on every (re)connection: learn the role and the methods,
// subscribe, then load every panel from scratch.
async function start(gen) {
  const [methods, who] = await Promise.all([call('system.listMethods'), call('core.whoami')]);
  if (gen !== S.gen) return;
  S.methods = new Set(methods);
  S.role = who.role;
  await call('events.subscribe', [['*', 'stats'], 1]);
  hideLogin();
  applyRole();
  await Promise.all([loadOverview(), loadHistory(), loadScript(), loadRegistrations(), loadTrunks(), loadIPsec()].map((p) => p.catch((e) => console.warn(e))));
  if (gen !== S.gen) return;
  applyPanels();
  S.online = true;
  S.everOnline = true;
  S.offlineSince = null;
  setConn('live');
  // Time to first data (tests/bench/dashboard reads it).
  if (!performance.getEntriesByName('kamd-first-data').length) performance.mark('kamd-first-data');
}

function goOffline(quiet) {
  if (S.online || !S.offlineSince) S.offlineSince = S.offlineSince || new Date();
  S.online = false;
  S.stats = null; // the next snapshot starts a new rate series
  if (S.series.length && S.series[S.series.length - 1] !== null) S.series.push(null);
  setConn(quiet ? 'login' : 'offline');
}

function setConn(state) {
  const b = document.body;
  b.classList.toggle('offline', state === 'offline' || state === 'login' || (state === 'connecting' && S.everOnline));
  b.classList.toggle('connecting', state === 'connecting');
  const c = $('conn');
  const banner = $('banner');
  c.className = 'badge conn conn-' + state;
  if (state === 'live') {
    c.textContent = 'live';
    banner.hidden = true;
  } else if (state === 'login') {
    c.textContent = 'token needed';
    banner.hidden = true;
  } else if (state === 'connecting' && !S.everOnline) {
    c.textContent = 'connecting…';
  } else {
    c.textContent = 'offline';
    if (S.everOnline) {
      banner.hidden = false;
      banner.textContent = 'kamd is offline since ' + fmtTime(S.offlineSince || new Date()) +
        '; reconnecting… The values below are as of then, not current.';
    }
  }
}

// ---- login ----------------------------------------------------------------

function showLogin(msg) {
  $('login').hidden = false;
  $('main').hidden = true;
  const e = $('login-error');
  e.hidden = !msg;
  e.textContent = msg || '';
  $('token').focus();
}

function hideLogin() {
  $('login').hidden = true;
  $('main').hidden = false;
  $('logout').hidden = !S.token;
}

$('login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  S.token = $('token').value.trim();
  $('token').value = '';
  sessionStorage.setItem(TOKEN_KEY, S.token);
  connect();
});

$('logout').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  S.token = '';
  if (S.ws) S.ws.close();
  location.reload();
});

// ---- role and panels ------------------------------------------------------

function isAdmin() { return S.role === 'admin'; }

function applyRole() {
  const r = $('role');
  r.hidden = false;
  r.textContent = isAdmin() ? 'admin' : 'read-only';
  document.body.classList.toggle('ro', !isAdmin());
  // State-changing controls are not rendered at all for ro (the server
  // refuses their calls anyway).
  for (const el of document.querySelectorAll('[data-admin]')) {
    if (!isAdmin()) el.remove();
  }
}

// Every module is compiled in, so a method being listed is not enough: a
// panel shows when its module is in use (uac has records, ims_ipsec_pcscf
// is enabled); usrloc comes with any registrar script.
const inUse = { trunks: () => S.trunks.length > 0, ipsec: () => S.ipsecEnabled };

function applyPanels() {
  for (const a of document.querySelectorAll('#tabs a')) {
    const need = a.dataset.needs;
    const use = inUse[a.dataset.panel];
    a.hidden = (!!need && !S.methods.has(need)) || (!!use && !use());
  }
  const want = (location.hash || '#overview').slice(1);
  if (want !== S.panel || document.querySelector('#panel-' + want).hidden) showPanel(want);
}

function showPanel(name) {
  const tab = document.querySelector('#tabs a[data-panel="' + name + '"]');
  if (!tab || tab.hidden) name = 'overview';
  S.panel = name;
  for (const p of document.querySelectorAll('.panel')) p.hidden = p.id !== 'panel-' + name;
  for (const a of document.querySelectorAll('#tabs a')) a.classList.toggle('active', a.dataset.panel === name);
  if (name === 'ipsec') loadIPsec().catch(() => {});
  if (name === 'registrations' && S.online) kickRegistrations();
  if (name === 'overview') drawCharts();
}

window.addEventListener('hashchange', () => showPanel(location.hash.slice(1)));

// ---- events ---------------------------------------------------------------

function onEvent(e) {
  if (e.topic === 'stats') {
    onStats(e.data, e.ts);
    return;
  }
  addEvent(e);
  const ev = e.data && e.data.event;
  switch (e.topic) {
    case 'usrloc':
      kickRegistrations();
      break;
    case 'uac':
      kickTrunks();
      break;
    case 'ims_ipsec_pcscf':
      kickIPsec();
      break;
    case 'script':
      if (ev === 'reload_failed') showScriptError(e.data.error);
      kickScript();
      break;
  }
}

// throttle runs fn at most once per ms; calls in between are merged.
function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  return () => {
    if (timer) return;
    const wait = Math.max(0, last + ms - Date.now());
    timer = setTimeout(() => {
      timer = null;
      last = Date.now();
      fn().catch((err) => console.warn(err));
    }, wait);
  };
}

const REG_SIGNALS = ['registrar:accepted_regs', 'usrloc:expired_contacts'];
const kickRegistrations = throttle(() => loadRegistrations(), 1000);
const kickTrunks = throttle(() => loadTrunks(), 1000);
const kickIPsec = throttle(() => loadIPsec(), 1000);
const kickScript = throttle(() => Promise.all([loadScript(), loadOverviewScript()]), 300);

// ---- overview -------------------------------------------------------------

async function loadOverview() {
  const [ver, up, socks] = await Promise.all([call('core.version'), call('core.uptime'), call('core.sockets_list')]);
  $('ov-version').textContent = ver.version + ' · ' + ver.go;
  S.upSince = new Date(up.up_since);
  const tb = $('ov-sockets').tBodies[0];
  tb.replaceChildren();
  for (const s of socks.socket || []) {
    tb.append(row([s.proto, s.address, String(s.port), s.advertise || '', s.runtime ? 'yes' : '']));
  }
  await loadOverviewScript();
  tick();
}

async function loadOverviewScript() {
  const st = await call('app_starlark.status');
  $('ov-script').textContent = 'v' + st.version + ' · ' + String(st.sha256).slice(0, 12);
  $('ov-script').title = st.path + '\n' + st.sha256;
}

const S_TRAFFIC = [
  { name: 'requests in', color: '#2b6cb0', f: (d) => d['core:rcv_requests'] },
  { name: 'replies in', color: '#38a169', f: (d) => d['core:rcv_replies'] },
  { name: 'replies out', color: '#805ad5', f: (d) => sum(d, 'sl:sent_replies', 'tm:rpl_sent', 'core:fwd_replies') },
];
// sl counts some codes on their own and only the rest in NXX_replies (Kamailio's rule).
const SL_4XX = ['sl:4xx_replies', 'sl:400_replies', 'sl:401_replies', 'sl:403_replies', 'sl:404_replies', 'sl:407_replies', 'sl:408_replies', 'sl:483_replies'];
const S_ERRORS = [
  { name: '4xx', color: '#dd6b20', f: (d) => sum(d, ...SL_4XX, 'tm:4xx') },
  { name: '5xx', color: '#e53e3e', f: (d) => sum(d, 'sl:5xx_replies', 'sl:500_replies', 'tm:5xx') },
  { name: 'drops', color: '#4a5568', f: (d) => sum(d, 'core:drop_requests', 'core:drop_replies') },
];
// Every statistic the charts read (stats.history's selection).
const CHART_STATS = ['core:rcv_requests', 'core:rcv_replies', 'sl:sent_replies', 'tm:rpl_sent', 'core:fwd_replies', ...SL_4XX,
  'tm:4xx', 'sl:5xx_replies', 'sl:500_replies', 'tm:5xx', 'core:drop_requests', 'core:drop_replies'];

function sum(d, ...keys) {
  let n = 0;
  let any = false;
  for (const k of keys) if (typeof d[k] === 'number') { n += d[k]; any = true; }
  return any ? n : undefined;
}

function onStats(data, ts) {
  const t = ts ? Date.parse(ts) : Date.now();
  $('ov-tx').textContent = data['tm:current'] !== undefined ? String(data['tm:current']) : 'n/a';
  const prev = S.stats;
  S.stats = { t, v: data };
  // usrloc publishes no event when a contact is saved: a change in the
  // registrar's and usrloc's counters in the 1 s snapshot is the signal.
  if (prev && REG_SIGNALS.some((k) => data[k] !== prev.v[k])) kickRegistrations();
  if (prev) {
    const p = ratePoint(prev, S.stats);
    if (p) S.series.push(p);
    else if (S.series.length && S.series[S.series.length - 1] !== null) S.series.push(null);
  }
  const cut = Date.now() - WINDOW_S * 1000 - 5000;
  while (S.series.length && (S.series[0] === null || S.series[0].t < cut)) S.series.shift();
  $('last-update').textContent = 'last update ' + fmtTime(new Date(t));
  if (S.panel === 'overview') drawCharts();
}

// ratePoint is the per-second rate of every chart series between two
// snapshots {t, v}, or null when they are too far apart.
function ratePoint(prev, cur) {
  const dt = (cur.t - prev.t) / 1000;
  if (!(dt > 0 && dt < 30)) return null;
  const v = {};
  for (const s of S_TRAFFIC.concat(S_ERRORS)) {
    const a = s.f(cur.v);
    const b = s.f(prev.v);
    // A counter that went down was reset: no rate for this step.
    v[s.name] = a === undefined || b === undefined || a < b ? null : (a - b) / dt;
  }
  return { t: cur.t, v };
}

// loadHistory fills the charts with kamd's last 15 minutes (stats.history,
// 5 s samples), keeping what this page saw before from an earlier process.
async function loadHistory() {
  if (!S.methods.has('stats.history')) return;
  const h = await call('stats.history', CHART_STATS);
  const snaps = (h.samples || []).map((smp) => {
    const v = {};
    h.names.forEach((n, i) => { if (smp.values[i] !== null) v[n] = smp.values[i]; });
    return { t: Date.parse(smp.ts), v };
  });
  if (!snaps.length) return;
  const pts = [];
  for (let i = 1; i < snaps.length; i++) {
    const p = ratePoint(snaps[i - 1], snaps[i]);
    pts.push(p);
  }
  const older = S.series.filter((p) => p && p.t < snaps[0].t);
  S.series = older.length ? older.concat([null], pts) : pts;
  if (S.panel === 'overview') drawCharts();
}

function drawCharts() {
  drawChart($('chart-traffic'), S_TRAFFIC);
  drawChart($('chart-errors'), S_ERRORS);
}

const SVG = 'http://www.w3.org/2000/svg';

// drawChart draws the series as SVG polylines over the last 15 minutes;
// a null entry (offline, counter reset) breaks the lines.
function drawChart(box, defs) {
  // The x axis spans the last 15 minutes, or less while the page has not
  // seen that much yet (at least a minute), so that early points are readable.
  const W = 900, H = 160, now = Date.now();
  const first = S.series.find((p) => p !== null);
  const span = Math.min(WINDOW_S * 1000, Math.max(60000, first ? now - first.t : 0));
  const t0 = now - span;
  let max = 1;
  for (const p of S.series) if (p) for (const d of defs) if (p.v[d.name] > max) max = p.v[d.name];
  max = niceMax(max);
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
  svg.setAttribute('preserveAspectRatio', 'none');
  for (const f of [0.25, 0.5, 0.75]) {
    const l = document.createElementNS(SVG, 'line');
    l.setAttribute('x1', 0); l.setAttribute('x2', W);
    l.setAttribute('y1', H * f); l.setAttribute('y2', H * f);
    l.setAttribute('class', 'grid');
    svg.append(l);
  }
  const legend = document.createElement('div');
  legend.className = 'legend';
  for (const d of defs) {
    let pts = [];
    let last = null;
    const flush = () => {
      if (pts.length > 1) {
        const pl = document.createElementNS(SVG, 'polyline');
        pl.setAttribute('points', pts.join(' '));
        pl.setAttribute('stroke', d.color);
        pl.setAttribute('fill', 'none');
        pl.setAttribute('vector-effect', 'non-scaling-stroke');
        svg.append(pl);
      }
      pts = [];
    };
    for (const p of S.series) {
      if (!p || p.v[d.name] === null || p.v[d.name] === undefined) { flush(); continue; }
      const x = ((p.t - t0) / span) * W;
      const y = H - (p.v[d.name] / max) * H;
      pts.push(x.toFixed(1) + ',' + y.toFixed(1));
      last = p.v[d.name];
    }
    flush();
    const item = document.createElement('span');
    const sw = document.createElement('i');
    sw.style.background = d.color;
    item.append(sw, document.createTextNode(d.name + ' ' + (S.online && last !== null ? fmtRate(last) : '–')));
    legend.append(item);
  }
  const axis = document.createElement('div');
  axis.className = 'axis';
  axis.textContent = fmtTime(new Date(t0)) + ' – now · max ' + fmtRate(max) + '/s';
  box.replaceChildren(svg, legend, axis);
}

function niceMax(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmtRate(v) { return v >= 100 ? v.toFixed(0) : v.toFixed(1); }

// ---- registrations (usrloc) -----------------------------------------------

// AoRs the registrations panel loads (one ul.dump page).
const REG_PAGE = 500;

async function loadRegistrations() {
  if (!S.methods.has('ul.dump')) return;
  // One page only (ul.dump's limit): a full dump of a large table would be
  // answered 507 past rpc_max_response_bytes, and would encode the whole
  // table at every refresh of every open dashboard. Stats counts it all.
  let d;
  for (let limit = REG_PAGE; ; limit = Math.floor(limit / 2)) {
    try {
      d = await call('ul.dump', [null, limit]);
      break;
    } catch (e) {
      // 507: the page is still too large (many contacts per AoR, a small
      // rpc_max_response_bytes): ask for fewer AoRs, as kamctl does.
      if (e.code !== 507 || limit <= 1) throw e;
    }
  }
  const now = Date.now();
  const out = [];
  let total = 0;
  let shown = 0;
  for (const dom of d.Domains || []) {
    const table = dom.Domain.Domain;
    total += (dom.Domain.Stats && dom.Domain.Stats.Records) || 0;
    shown += (dom.Domain.AoRs || []).length;
    for (const a of dom.Domain.AoRs || []) {
      for (const c of a.Info.Contacts || []) {
        const k = c.Contact;
        let until = null;
        if (typeof k.Expires === 'number') until = now + k.Expires * 1000;
        else if (k.Expires === 'expired') until = now;
        out.push({ table, aor: a.Info.AoR, contact: k.Address, until, received: notSet(k.Received),
          ua: notSet(k['User-Agent']), socket: notSet(k.Socket) });
      }
    }
  }
  S.contacts = out;
  S.regMore = d.Next ? 'showing the first ' + shown + ' of ' + total + ' AoRs (search covers these)' : '';
  renderRegistrations();
}

function notSet(v) { return v === '[not set]' || v === undefined || v === null ? '' : String(v); }

function renderRegistrations() {
  const q = $('reg-search').value.trim().toLowerCase();
  const tb = $('reg-table').tBodies[0];
  tb.replaceChildren();
  let n = 0;
  const aors = new Set();
  for (const c of S.contacts) {
    if (q && !(c.aor.toLowerCase().includes(q) || c.contact.toLowerCase().includes(q))) continue;
    n++;
    aors.add(c.aor);
    const tr = row([c.aor, c.contact, '', c.received, c.ua, c.socket]);
    tr.dataset.aor = c.aor;
    const exp = tr.cells[2];
    if (c.until === null) exp.textContent = 'permanent';
    else exp.dataset.until = String(c.until);
    const act = document.createElement('td');
    act.className = 'admin-only';
    if (isAdmin()) {
      act.append(button('Remove', 'remove contact', () => act2(call('ul.rm_contact', [c.table, c.aor, c.contact]), kickRegistrations)));
    }
    tr.append(act);
    tb.append(tr);
  }
  $('reg-count').textContent = aors.size + ' AoRs, ' + n + ' contacts' + (q ? ' matching' : '') + (S.regMore ? ' · ' + S.regMore : '');
  tick();
}

$('reg-search').addEventListener('input', renderRegistrations);

// ---- trunks (uac) ---------------------------------------------------------

async function loadTrunks() {
  if (!S.methods.has('uac.reg_dump')) return;
  S.trunks = await call('uac.reg_dump');
  renderTrunks();
  applyPanels();
}

function renderTrunks() {
  const tb = $('trunk-table').tBodies[0];
  tb.replaceChildren();
  for (const r of S.trunks) {
    const last = r.last_code ? r.last_code + ' ' + (r.last_reason || '') : (r.last_reason || '');
    const tr = row([r.l_uuid, r.l_username + '@' + r.l_domain, r.r_username + '@' + r.r_domain, r.auth_proxy, '', last, '', String(r.failures)]);
    tr.dataset.uuid = r.l_uuid;
    const st = document.createElement('span');
    st.className = 'state state-' + r.state;
    st.textContent = r.state;
    tr.cells[4].append(st);
    tr.cells[5].className = 'last-code';
    if (r.next_refresh > 0 && r.state !== 'disabled') tr.cells[6].dataset.until = String(r.next_refresh * 1000);
    const act = document.createElement('td');
    act.className = 'admin-only actions';
    if (isAdmin()) {
      const id = ['l_uuid', r.l_uuid];
      act.append(
        button('Refresh', 'send a REGISTER now', () => act2(call('uac.reg_register', id), kickTrunks)),
        button('Enable', 'enable and register', () => act2(call('uac.reg_enable', id), kickTrunks)),
        button('Disable', 'unregister and disable', () => act2(call('uac.reg_disable', id), kickTrunks)),
        button('Unregister', 'send Expires: 0', () => act2(call('uac.reg_unregister', id), kickTrunks)),
        button('Reload', 'reload this record from the database (uac.reg_refresh)', () => act2(call('uac.reg_refresh', [r.l_uuid]), kickTrunks)));
    }
    tr.append(act);
    tb.append(tr);
  }
  tick();
}

// ---- IPsec (ims_ipsec_pcscf) ---------------------------------------------

async function loadIPsec() {
  if (!S.methods.has('ipsec.list')) return;
  let list;
  let err = '';
  try {
    list = await call('ipsec.list');
  } catch (e) {
    err = e.message;
    list = [];
  }
  const st = await call('ipsec.stats').catch(() => null);
  S.ipsec = list || [];
  S.ipsecEnabled = !!(st && st.enabled);
  let sum = err ? 'kernel: ' + err + ' · ' : '';
  if (st) {
    sum += 'sets: ' + Object.entries(st.sets || {}).map(([k, v]) => k + ' ' + v).join(', ');
    if (st.pairs_total !== undefined) sum += ' · SPI pairs ' + st.pairs_used + '/' + st.pairs_total;
    if (st.kernel_states !== undefined) sum += ' · kernel states ' + st.kernel_states;
  }
  $('ipsec-summary').textContent = sum;
  renderIPsec();
  applyPanels();
}

function renderIPsec() {
  const tb = $('ipsec-table').tBodies[0];
  tb.replaceChildren();
  for (const s of S.ipsec) {
    const tr = row([s.ue + (s.aor ? ' (' + s.aor + ')' : ''), '', s.ue_ip + ' ' + s.port_uc + '/' + s.port_us, s.pcscf_ip + ' ' + s.port_pc + '/' + s.port_ps,
      [s.spi_uc, s.spi_us, s.spi_pc, s.spi_ps].join('/'), s.alg + (s.ealg ? ' ' + s.ealg : ''), '', '']);
    tr.dataset.ue = s.ue;
    const st = document.createElement('span');
    st.className = 'state state-' + s.state;
    st.textContent = s.state;
    tr.cells[1].append(st);
    const exp = Date.parse(s.expires);
    if (!isNaN(exp)) tr.cells[6].dataset.until = String(exp);
    const sas = document.createElement('table');
    sas.className = 'sub';
    sas.append(row(['SA', 'dir', 'SPI', 'packets', 'bytes', 'integrity failed', 'replay'], 'th'));
    for (const sa of s.sas || []) {
      sas.append(row([sa.name, sa.dir, String(sa.spi), sa.in_kernel ? String(sa.packets) : 'not in kernel', String(sa.bytes), String(sa.integrity_failed), String(sa.replay)]));
    }
    tr.cells[7].append(sas);
    const act = document.createElement('td');
    act.className = 'admin-only';
    if (isAdmin()) act.append(button('Destroy', 'remove the SAs from the kernel', () => act2(call('ipsec.destroy', [s.ue]), kickIPsec)));
    tr.append(act);
    tb.append(tr);
  }
  tick();
}

// No event carries the kernel's counters: poll while the panel is shown.
setInterval(() => { if (S.online && S.panel === 'ipsec') loadIPsec().catch(() => {}); }, 1000);
// Contacts removed or added over RPC (kamctl ul.rm) change no counter:
// refresh every 5 s while the panel is shown.
setInterval(() => { if (S.online && S.panel === 'registrations') kickRegistrations(); }, 5000);

// ---- script (app_starlark) ------------------------------------------------

async function loadScript() {
  const st = await call('app_starlark.status');
  const cur = $('script-current');
  cur.replaceChildren();
  const v = document.createElement('span');
  v.id = 'script-version';
  v.textContent = 'version ' + st.version;
  cur.append(v, document.createTextNode(' · ' + st.path + ' · sha256 ' + st.sha256.slice(0, 16) + '… · loaded ' + fmtTime(new Date(st.loaded_at))));
  const tb = $('script-prev').tBodies[0];
  tb.replaceChildren();
  for (const p of st.previous || []) tb.append(row([String(p.version), p.sha256.slice(0, 16) + '…', fmtTime(new Date(p.loaded_at)), p.path]));
  const rb = $('btn-rollback');
  if (rb) rb.disabled = !(st.previous && st.previous.length);
}

function showScriptError(msg) {
  const e = $('script-error');
  e.hidden = !msg;
  e.textContent = msg || '';
  if (msg) $('script-msg').hidden = true;
}

function showScriptMsg(msg) {
  const m = $('script-msg');
  m.hidden = false;
  m.textContent = msg;
  showScriptError('');
}

if ($('btn-reload')) {
  $('btn-reload').addEventListener('click', async () => {
    try {
      const r = await call('app_starlark.reload');
      showScriptMsg('reloaded: version ' + r.old + ' → ' + r.new);
    } catch (e) {
      // The refused reload's error names file:line:col; the old version keeps serving.
      showScriptError('reload refused (' + e.code + '): ' + e.message);
    }
    kickScript();
  });
  $('btn-rollback').addEventListener('click', async () => {
    try {
      const r = await call('app_starlark.rollback');
      showScriptMsg('rolled back: version ' + r.old + ' → ' + r.new);
    } catch (e) {
      showScriptError('rollback refused (' + e.code + '): ' + e.message);
    }
    kickScript();
  });
}

// ---- events ---------------------------------------------------------------

const MAX_EVENTS = 300;

function addEvent(e) {
  S.events.unshift(e);
  if (S.events.length > MAX_EVENTS) S.events.length = MAX_EVENTS;
  if (!S.topics.has(e.topic)) {
    S.topics.add(e.topic);
    const o = document.createElement('option');
    o.value = e.topic;
    o.textContent = e.topic;
    $('ev-topic').append(o);
  }
  if (S.panel === 'events') renderEventsSoon();
}

let evTimer = null;
function renderEventsSoon() {
  if (evTimer) return;
  evTimer = setTimeout(() => { evTimer = null; renderEvents(); }, 200);
}

function renderEvents() {
  const topic = $('ev-topic').value;
  const q = $('ev-filter').value.trim().toLowerCase();
  const tb = $('ev-table').tBodies[0];
  tb.replaceChildren();
  for (const e of S.events) {
    if (topic && e.topic !== topic) continue;
    const data = JSON.stringify(e.data);
    if (q && !data.toLowerCase().includes(q)) continue;
    const tr = row([fmtTime(new Date(e.ts)), e.topic, (e.data && e.data.event) || '', data]);
    tr.dataset.topic = e.topic;
    tb.append(tr);
  }
}

$('ev-topic').addEventListener('change', renderEvents);
$('ev-filter').addEventListener('input', renderEvents);
$('ev-clear').addEventListener('click', () => { S.events = []; renderEvents(); });
document.querySelector('#tabs a[data-panel="events"]').addEventListener('click', () => setTimeout(renderEvents, 0));

// ---- helpers --------------------------------------------------------------

function row(cells, tag) {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement(tag || 'td');
    td.textContent = c === undefined || c === null ? '' : String(c); // never innerHTML: values come from SIP
    tr.append(td);
  }
  return tr;
}

function button(label, title, fn) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.title = title;
  b.dataset.admin = '';
  b.addEventListener('click', fn);
  return b;
}

async function act2(p, then) {
  try {
    await p;
  } catch (e) {
    alertError(e);
  }
  then();
}

function alertError(e) {
  const b = $('banner');
  b.hidden = false;
  b.textContent = 'error ' + e.code + ': ' + e.message;
  setTimeout(() => { if (S.online) b.hidden = true; }, 5000);
}

function fmtTime(d) {
  return d.toLocaleTimeString([], { hour12: false });
}

function fmtDur(s) {
  s = Math.max(0, Math.round(s));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), x = s % 60;
  if (d) return d + 'd ' + h + 'h ' + m + 'm';
  if (h) return h + 'h ' + m + 'm ' + x + 's';
  if (m) return m + 'm ' + x + 's';
  return x + 's';
}

// tick updates the countdowns and the uptime once a second; while offline
// they stop (the page shows what it knew, marked as not current).
function tick() {
  if (!S.online && S.everOnline) return;
  const now = Date.now();
  if (S.upSince) $('ov-uptime').textContent = fmtDur((now - S.upSince.getTime()) / 1000);
  for (const el of document.querySelectorAll('[data-until]')) {
    const left = (Number(el.dataset.until) - now) / 1000;
    el.textContent = left <= 0 ? 'expired' : fmtDur(left);
    el.classList.toggle('soon', left > 0 && left < 30);
  }
}
setInterval(tick, 1000);

// Test hook: the page's own JSON-RPC client, so that a test can forge a
// call exactly as a modified page would.
window.kamd = { call, state: S };

connect();

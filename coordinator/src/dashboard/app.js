// wasm@home dashboard: hash routes, short polling, plain SVG charts.
// Read-only: it only ever GETs.
'use strict';

const POLL_MS = 1500;
const API = '/api/v1/dashboard';
const WORKERS_PER_PAGE = 100;

// ---- formatting ----

const esc = s => String(s ?? '').replace(/[&<>"']/g, c =>
  ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const int = new Intl.NumberFormat('en-US');
const fmtInt = n => int.format(Math.round(n || 0));
function fmtNum(x) {
  if (x == null || !isFinite(x)) return '—';
  if (Number.isInteger(x)) return int.format(x);
  const a = Math.abs(x);
  if (a >= 1000) return int.format(Math.round(x));
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  if (a >= 0.01) return x.toFixed(2);
  return x.toPrecision(2);
}
function fmtDuration(ms) {
  if (ms == null) return '—';
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60 ? (s % 60) + ' s' : ''}`.trim();
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60 ? (m % 60) + ' min' : ''}`.trim();
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}
function fmtAgo(ms) {
  if (ms < 1500) return 'just now';
  return fmtDuration(ms) + ' ago';
}
const shortId = id => String(id).slice(0, 8);
const pct = (part, total) => total > 0 ? Math.min(100, 100 * part / total) : 0;
const clock = ms => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
const jobName = j => j.name || shortId(j.id);

// ---- charts: small SVG renderers ----

const W = 900;

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function axes(h, pad, max, fmt) {
  let out = '';
  for (let i = 0; i <= 4; i++) {
    const v = max * i / 4;
    const y = pad.t + (h - pad.t - pad.b) * (1 - i / 4);
    out += `<line class="grid-line" x1="${pad.l}" x2="${W - pad.r}" y1="${y}" y2="${y}"/>`;
    out += `<text x="${pad.l - 8}" y="${y + 4}" text-anchor="end">${esc(fmt(v))}</text>`;
  }
  return out;
}

// Bars, one per value; `label(i)` is the tooltip, `ticks` [[index, text]].
function barChart(values, { height = 190, label, ticks = [], partialLast = false }) {
  const pad = { t: 10, r: 8, b: 24, l: 48 };
  const max = niceMax(Math.max(0, ...values));
  const n = values.length;
  const iw = W - pad.l - pad.r, ih = height - pad.t - pad.b;
  const bw = iw / n;
  let bars = '';
  values.forEach((v, i) => {
    const bh = ih * v / max;
    const x = pad.l + i * bw;
    const cls = partialLast && i === n - 1 ? 'bar-rect partial' : 'bar-rect';
    bars += `<g><rect class="hit" x="${x}" y="${pad.t}" width="${bw}" height="${ih}"><title>${esc(label(i, v))}</title></rect>`;
    bars += `<rect class="${cls}" x="${x + bw * .12}" y="${pad.t + ih - bh}" width="${bw * .76}" height="${bh}" rx="1.5" pointer-events="none"/></g>`;
  });
  const xt = ticks.map(([i, t]) =>
    `<text x="${pad.l + (i + .5) * bw}" y="${height - 6}" text-anchor="middle">${esc(t)}</text>`).join('');
  return `<svg class="chart" viewBox="0 0 ${W} ${height}" role="img">${axes(height, pad, max, fmtNum)}${bars}${xt}</svg>`;
}

// A rising line with the area under it; points [[x, y]], x in [0, 1].
function lineChart(points, { height = 190, yMax, xTicks = [], tips = [] }) {
  const pad = { t: 10, r: 8, b: 24, l: 56 };
  const max = niceMax(yMax ?? Math.max(0, ...points.map(p => p[1])));
  const iw = W - pad.l - pad.r, ih = height - pad.t - pad.b;
  const X = x => pad.l + x * iw, Y = y => pad.t + ih * (1 - y / max);
  const path = points.map((p, i) => `${i ? 'L' : 'M'}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join('');
  const area = points.length
    ? `<path class="area" d="${path}L${X(points[points.length - 1][0]).toFixed(1)},${Y(0)}L${X(points[0][0]).toFixed(1)},${Y(0)}Z"/>`
    : '';
  const hits = tips.map(([x0, x1, t]) =>
    `<rect class="hit" x="${X(x0)}" y="${pad.t}" width="${Math.max(1, X(x1) - X(x0))}" height="${ih}"><title>${esc(t)}</title></rect>`).join('');
  const xt = xTicks.map(([x, t], i) =>
    `<text x="${X(x)}" y="${height - 6}" text-anchor="${i === 0 ? 'start' : i === xTicks.length - 1 ? 'end' : 'middle'}">${esc(t)}</text>`).join('');
  return `<svg class="chart" viewBox="0 0 ${W} ${height}" role="img">${axes(height, pad, max, fmtNum)}${hits}${area}<path class="line" d="${path}"/>${xt}</svg>`;
}

// ---- pieces ----

const statePill = s => `<span class="pill ${esc(s)}">${esc(s)}</span>`;

function progressBar(j, big) {
  const settled = j.units_accepted + j.units_failed;
  const p = j.units_total ? pct(settled, j.units_total) : (j.state === 'done' ? 100 : 0);
  const shown = p === 100 || p === 0 ? p.toFixed(0) : p >= 99.9 ? '99.9' : p.toFixed(1);
  return `<div class="progress"><div class="bar${big ? ' big' : ''}">` +
    `<i class="acc" style="width:${pct(j.units_accepted, j.units_total)}%"></i>` +
    `<i class="fail" style="width:${pct(j.units_failed, j.units_total)}%"></i>` +
    `<i class="busy" style="width:${pct(j.units_in_progress, j.units_total)}%"></i>` +
    `</div><span class="pct" data-pct="${shown}">${shown}%</span></div>`;
}

// The time left is the coordinator's one estimate (time_left.rs), the
// same on every page and in `coordinator status`: never computed here.
function etaText(j) {
  if (j.state === 'splitting') return 'splitting…';
  if (j.state === 'reducing') return 'reducing…';
  if (j.state !== 'running') return j.finished_ms ? 'took ' + fmtDuration(j.finished_ms - j.created_ms) : '—';
  if (j.time_left_ms != null) return fmtDuration(j.time_left_ms);
  return j.rate_per_s === 0 ? 'no progress lately' : 'estimating…';
}

const submitterName = s => s ?? '—';
function byWhom(j) {
  return `<span data-submitter="${esc(j.submitter ?? '')}">${esc(submitterName(j.submitter))}</span>` +
    `<div class="faint" data-priority="${j.priority}">priority ${j.priority}</div>`;
}

// Each submitter's part of the last hour's work (bar) and the share it
// is owed now (tick), as horizontal bars.
function shareChart(list) {
  const rowH = 28, pad = { t: 6, r: 56, b: 22, l: 170 };
  const h = pad.t + pad.b + rowH * list.length;
  const iw = W - pad.l - pad.r;
  let out = '';
  for (let i = 0; i <= 4; i++) {
    const x = pad.l + iw * i / 4;
    out += `<line class="grid-line" x1="${x}" x2="${x}" y1="${pad.t}" y2="${h - pad.b}"/>` +
      `<text x="${x}" y="${h - 6}" text-anchor="middle">${i * 25}%</text>`;
  }
  list.forEach((s, i) => {
    const y = pad.t + i * rowH, mid = y + rowH / 2;
    const w = iw * s.part_of_work;
    const tip = `${submitterName(s.name)}: ${(100 * s.part_of_work).toFixed(1)}% of the hour's work` +
      (s.owed ? `, owed ${(100 * s.owed).toFixed(1)}% (share ${s.share})` : ', no job running');
    out += `<g><rect class="hit" x="${pad.l}" y="${y}" width="${iw}" height="${rowH}"><title>${esc(tip)}</title></rect>` +
      `<text x="${pad.l - 10}" y="${mid + 4}" text-anchor="end">${esc(submitterName(s.name))}</text>` +
      `<rect class="bar-rect" x="${pad.l}" y="${y + 6}" width="${w}" height="${rowH - 12}" rx="2" pointer-events="none"/>` +
      (s.owed ? `<line class="owed" x1="${pad.l + iw * s.owed}" x2="${pad.l + iw * s.owed}" y1="${y + 2}" y2="${y + rowH - 2}" pointer-events="none"/>` : '') +
      `<text x="${pad.l + w + 6}" y="${mid + 4}">${(100 * s.part_of_work).toFixed(0)}%</text></g>`;
  });
  return `<svg class="chart" id="submitters-chart" viewBox="0 0 ${W} ${h}" role="img">${out}</svg>`;
}

function submittersCard(d) {
  const s = d.submitters;
  if (!s || !s.submitters.length) {
    return `<div class="card" id="submitters"><h2>Submitters</h2><p class="empty">No submitters yet.</p></div>`;
  }
  const rows = s.submitters.map(x => `<tr data-submitter="${esc(x.name ?? '')}" data-part="${x.part_of_work}" data-owed="${x.owed}">` +
    `<td><b>${esc(submitterName(x.name))}</b>${x.revoked ? ' <span class="badge">revoked</span>' : ''}</td>` +
    `<td class="num">${fmtInt(x.share)}</td>` +
    `<td class="num">${fmtInt(x.running_jobs)}</td>` +
    `<td class="num">${fmtInt(x.units)}</td>` +
    `<td class="num">${fmtNum(x.fuel / 1e9)}</td>` +
    `<td class="num">${(100 * x.part_of_work).toFixed(1)}%</td>` +
    `<td class="num">${x.owed ? (100 * x.owed).toFixed(1) + '%' : '—'}</td></tr>`).join('');
  const weighed = s.weighted_by === 'fuel'
    ? 'by fuel (units accepted × their job\'s mean fuel per unit)'
    : 'by units accepted (no fuel estimate yet)';
  return `<div class="card" id="submitters">
    <div class="chart-head"><h2>Submitters</h2><span class="muted">the last hour's work, ${weighed} · tick: the share owed now · every 10 s</span></div>
    ${shareChart(s.submitters)}
    <div class="table-wrap"><table><thead><tr><th>Submitter</th><th class="num">Share</th><th class="num">Jobs running</th>
      <th class="num">Units (hour)</th><th class="num">Fuel (10<sup>9</sup>, hour)</th><th class="num">Part of work</th><th class="num">Owed</th></tr></thead>
      <tbody>${rows}</tbody></table></div>
  </div>`;
}

function stat(label, value, note) {
  return `<div class="card stat"><div class="label">${label}</div><div class="value">${value}</div>` +
    `<div class="note">${note || '&nbsp;'}</div></div>`;
}

function meterRows(rows) {
  const max = Math.max(1, ...rows.map(r => r[1]));
  return `<div class="rows">` + rows.map(([name, n, cls]) =>
    `<span>${esc(name)}</span><div class="track"><i class="${cls || ''}" style="width:${pct(n, max)}%"></i></div>` +
    `<span class="n" data-count="${esc(name)}">${fmtInt(n)}</span>`).join('') + `</div>`;
}

// ---- pages ----

function overviewPage(d) {
  const running = d.jobs.filter(j => j.state === 'running' || j.state === 'splitting' || j.state === 'reducing');
  const t = d.throughput;
  const n = t.buckets.length;
  const ticks = [0, 15, 30, 45].map(k => [k, k === 0 ? `−${n} min` : `−${n - k} min`]).concat([[n - 1, 'now']]);
  const chart = barChart(t.buckets, {
    partialLast: true,
    ticks,
    label: (i, v) => `${clock(t.from_ms + i * t.bucket_ms)}${i === n - 1 ? ' (so far)' : ''}: ${fmtInt(v)} results`,
  });
  const rows = d.jobs.map(j => `<tr class="rowlink" data-job="${esc(j.id)}" data-state="${esc(j.state)}" onclick="location.hash='#/job/${esc(j.id)}'">` +
    `<td><a class="name" href="#/job/${esc(j.id)}">${esc(jobName(j))}</a><div class="id">${esc(j.id)}</div></td>` +
    `<td>${statePill(j.state)}</td>` +
    `<td class="nowrap">${byWhom(j)}</td>` +
    `<td>${progressBar(j)}</td>` +
    `<td class="num">${fmtInt(j.units_accepted)} <span class="faint">/ ${fmtInt(j.units_total)}</span>` +
    `${j.units_failed ? `<div class="bad">${fmtInt(j.units_failed)} failed</div>` : ''}</td>` +
    `<td class="num">${fmtInt(j.replicas_in_progress)}</td>` +
    `<td class="num">${j.rate_per_s == null ? '—' : fmtNum(j.rate_per_s) + '/s'}</td>` +
    `<td class="num" data-time-left="${j.time_left_ms ?? ''}">${etaText(j)}</td></tr>`).join('');
  return `
  <div class="grid g4">
    ${stat('Throughput now', `${fmtNum(t.per_s_now)} <small>results/s</small>`, `${fmtInt(t.last_hour)} in the last hour`)}
    ${stat('Workers online', `${fmtInt(d.workers_online)} <small>of ${fmtInt(d.workers)}</small>`, `${fmtInt(d.slots_online)} slots`)}
    ${stat('Replicas in flight', fmtInt(d.replicas_in_progress), 'leased, not yet returned')}
    ${stat('Jobs running', `${fmtInt(running.length)} <small>of ${fmtInt(d.jobs.length)}</small>`,
      `${fmtInt(d.jobs.filter(j => j.state === 'done').length)} done`)}
  </div>
  <div class="card">
    <div class="chart-head"><h2>Results returned per minute</h2><span class="muted">last hour · the last bar is the minute under way</span></div>
    ${chart}
  </div>
  <div class="card">
    <h2>Jobs</h2>
    ${d.jobs.length ? `<div class="table-wrap"><table id="jobs">
      <thead><tr><th>Job</th><th>State</th><th>Submitter</th><th>Progress</th><th class="num">Units accepted</th>
      <th class="num">In flight</th><th class="num">Rate</th><th class="num">Time left</th></tr></thead>
      <tbody>${rows}</tbody></table></div>` : '<p class="empty">No jobs yet. Submit one with <code>coordinator submit job.toml</code>.</p>'}
  </div>
  ${submittersCard(d)}`;
}

function jobPage(d) {
  const j = d.job, u = d.units, r = d.replicas;
  const settled = j.units_accepted + j.units_failed;
  // Accepted units over time, cumulative.
  const s = d.accepted;
  let sum = 0;
  const span = Math.max(1, (j.finished_ms ?? d.now_ms) - s.from_ms);
  const pts = [[0, 0]];
  const tips = [];
  s.counts.forEach((c, i) => {
    const x0 = Math.min(1, i * s.bucket_ms / span), x1 = Math.min(1, (i + 1) * s.bucket_ms / span);
    sum += c;
    pts.push([x1, sum]);
    tips.push([x0, x1, `${fmtDuration(i * s.bucket_ms)}–${fmtDuration((i + 1) * s.bucket_ms)}: +${fmtInt(c)}, ${fmtInt(sum)} accepted`]);
  });
  const chart = lineChart(pts, {
    yMax: Math.max(sum, 1),
    tips,
    xTicks: [[0, 'start'], [.5, fmtDuration(span / 2)], [1, j.finished_ms ? fmtDuration(span) + ' (end)' : fmtDuration(span) + ' (now)']],
  });
  const errors = d.errors.length
    ? `<div class="table-wrap"><table class="errors"><thead><tr><th>Kind</th><th class="num">Replicas</th>
       <th class="num">Agreed</th><th>Example</th></tr></thead><tbody>` +
      d.errors.map(e => `<tr data-error="${esc(e.kind)}"><td><span class="badge">${esc(e.kind)}</span></td>` +
        `<td class="num">${fmtInt(e.count)}</td><td class="num">${fmtInt(e.agreed)}</td>` +
        `<td class="msg" title="${esc(e.example)}">${esc(e.example || '')}</td></tr>`).join('') +
      `</tbody></table></div>` +
      (d.unit_error ? `<p class="muted">A failed unit: <code>${esc(d.unit_error)}</code></p>` : '')
    : `<p class="empty">No errors.${d.unit_error ? ` A failed unit: <code>${esc(d.unit_error)}</code>` : ''}</p>`;
  const output = d.output_url
    ? `<p><a class="download" id="download" href="${esc(d.output_url)}" download="${esc(j.id)}.out">Download output</a></p>
       <dl class="kv"><dt>Blob</dt><dd class="mono">${esc(j.output)}</dd>
       ${j.output_version > 1 ? `<dt>Version</dt><dd id="output-version">${fmtInt(j.output_version)} <span class="muted">— backtracking redid units and reduced again</span></dd>` : ''}
       ${j.finished_ms ? `<dt>Finished</dt><dd>${new Date(j.finished_ms).toLocaleString()}</dd>` : ''}</dl>`
    : `<p class="empty">${j.state === 'failed' ? 'The job failed: no output.' : j.state === 'cancelled' ? 'The job was cancelled.' : 'Available when the job is done.'}</p>`;
  return `
  <a class="back" href="#/">← All jobs</a>
  <div class="title"><h1>${esc(jobName(j))}</h1>${statePill(j.state)}</div>
  <div class="meta"><span class="mono">${esc(j.id)}</span>
    <span id="job-submitter">by <b data-submitter="${esc(j.submitter ?? '')}">${esc(submitterName(j.submitter))}</b>, priority <b data-priority="${j.priority}">${j.priority}</b></span>
    <span>quorum ${j.quorum}, up to ${j.max_replicas} replicas${j.adaptive ? ', adaptive' : ''}</span>
    <span>submitted ${fmtAgo(d.now_ms - j.created_ms)}</span></div>
  ${j.error ? `<div class="card bad">${esc(j.error)}</div>` : ''}
  <div class="card" id="job-progress">
    <div class="chart-head"><h2>Progress</h2><span class="muted" id="job-time-left" data-time-left="${j.time_left_ms ?? ''}">${j.rate_per_s != null ? fmtNum(j.rate_per_s) + ' units/s · ' : ''}${j.state === 'running' ? 'time left: ' : ''}${etaText(j)}</span></div>
    ${progressBar(j, true)}
    <div class="legend">
      <span><i class="sw wait"></i>waiting <b>${fmtInt(u.waiting)}</b>${u.waiting_for_seasoned ? ` <span class="muted" id="waiting-for-seasoned" title="a quorum agrees, but only young accounts voted: each waits for a worker of an account old enough (trust.min_account_age_secs)">(${fmtInt(u.waiting_for_seasoned)} for a seasoned account)</span>` : ''}</span>
      <span><i class="sw busy"></i>in progress <b>${fmtInt(u.in_progress)}</b></span>
      <span><i class="sw acc"></i>accepted <b data-units="accepted">${fmtInt(u.accepted)}</b></span>
      <span><i class="sw fail"></i>failed <b>${fmtInt(u.failed)}</b></span>
      <span>total <b>${fmtInt(u.total)}</b> · ${fmtInt(settled)} settled</span>
    </div>
  </div>
  <div class="card">
    <div class="chart-head"><h2>Accepted units over time</h2><span class="muted">${fmtInt(u.accepted)} of ${fmtInt(u.total)} accepted</span></div>
    ${chart}
  </div>
  <div class="grid g2">
    <div class="card"><h2>Replica outcomes</h2>
      ${meterRows([['valid', r.valid], ['invalid', r.invalid, 'fail'], ['errored', r.errored, 'warn'],
        ['timed out', r.timed_out, 'warn'], ['discarded', r.discarded, 'wait'],
        ['awaiting quorum', r.returned, 'busy'], ['in progress', r.in_progress, 'busy']])}
      <p class="muted" style="margin:12px 0 0">${fmtInt(r.total)} replicas for ${fmtInt(u.total)} units.</p></div>
    <div class="card"><h2>Output</h2>${output}</div>
  </div>
  <div class="card"><h2>Errors by kind</h2>${errors}</div>`;
}

let workersPage = 1;
function workersView(d) {
  const byWorker = new Map();
  for (const r of d.running) {
    if (!byWorker.has(r.worker_id)) byWorker.set(r.worker_id, []);
    byWorker.get(r.worker_id).push(r);
  }
  const online = w => d.now_ms - w.last_seen_ms <= d.online_window_ms || w.running > 0;
  const pages = Math.max(1, Math.ceil(d.workers.length / WORKERS_PER_PAGE));
  const page = Math.min(workersPage, pages);
  const shown = d.workers.slice((page - 1) * WORKERS_PER_PAGE, page * WORKERS_PER_PAGE);
  const rows = shown.map(w => {
    const units = (byWorker.get(w.id) || []).map(r => {
      const held = d.now_ms - r.leased_ms, lease = Math.max(1, r.deadline_ms - r.leased_ms);
      // Progress is fuel used (from the worker's last heartbeat) over the
      // job's mean fuel per unit; before either is known, time held.
      const known = r.fuel_used != null && r.fuel_estimate;
      const done = known ? Math.min(99, 100 * r.fuel_used / r.fuel_estimate) : pct(held, lease);
      const label = known ? `${Math.floor(done)}%` : fmtDuration(held);
      const fuel = r.fuel_used != null ? `, ${fmtNum(r.fuel_used)} fuel as of ${fmtAgo(d.now_ms - r.progress_ms)}` : '';
      return `<a class="chip" data-progress="${known ? Math.floor(done) : ''}" href="#/job/${esc(r.job_id)}" title="${esc(r.job_name)}, unit ${r.unit_index}: leased ${fmtAgo(held)}${fuel}, lease ends in ${fmtDuration(r.deadline_ms - d.now_ms)}">` +
        `${esc(r.job_name || shortId(r.job_id))} #${r.unit_index} · ${label}<i style="width:${done}%"></i></a>`;
    }).join('');
    return `<tr data-worker="${esc(w.id)}">` +
      `<td class="nowrap"><span class="on-dot${online(w) ? ' on' : ''}" title="${online(w) ? 'online' : 'offline'}"></span><b>${esc(w.name || shortId(w.id))}</b>${w.paused ? ' <span class="badge" title="paused by its volunteer or while the computer is in use">paused</span>' : ''}<div class="id" title="${esc(w.id)}">${esc(shortId(w.id))}</div></td>` +
      `<td class="nowrap">${esc(w.arch)} · ${esc(w.os)}</td>` +
      `<td class="num">${w.slots}</td>` +
      `<td class="num">${fmtAgo(d.now_ms - w.last_seen_ms)}</td>` +
      `<td>${w.trusted ? '<span class="badge trusted">trusted</span>' : `<span class="badge" title="${w.consecutive_valid} valid in a row">${w.consecutive_valid} in a row</span>`}</td>` +
      `<td class="num">${fmtInt(w.valid)}</td>` +
      `<td class="num${w.invalid ? ' bad' : ''}">${fmtInt(w.invalid)}</td>` +
      `<td class="num${w.errors ? ' bad' : ''}">${fmtInt(w.errors)}</td>` +
      `<td class="num">${fmtInt(w.timeouts)}</td>` +
      `<td class="num" data-credit="${w.credit}">${fmtNum(w.credit)}</td>` +
      `<td><div class="chips">${units || (w.running ? fmtInt(w.running) : '<span class="faint">idle</span>')}</div></td></tr>`;
  }).join('');
  const onlineCount = d.workers.filter(online).length;
  const slots = d.workers.filter(online).reduce((a, w) => a + w.slots, 0);
  const pager = pages > 1 ? `<div class="pager">page ${page} of ${pages}
      <a href="#/workers/${page - 1}" class="${page <= 1 ? 'off' : ''}">← prev</a>
      <a href="#/workers/${page + 1}" class="${page >= pages ? 'off' : ''}">next →</a></div>` : '';
  return `
  <div class="grid g4">
    ${stat('Workers', fmtInt(d.workers.length), 'registered')}
    ${stat('Online', fmtInt(onlineCount), `seen in the last ${fmtDuration(d.online_window_ms)} or running a unit`)}
    ${stat('Slots online', fmtInt(slots), 'units they run at once')}
    ${stat('Units running', fmtInt(d.running.length) + (d.running_truncated ? '+' : ''), 'replicas leased now')}
  </div>
  <div class="card"><h2>Workers</h2>
  ${d.workers.length ? `<div class="table-wrap"><table id="workers"><thead><tr><th>Worker</th><th>Platform</th><th class="num">Slots</th>
    <th class="num">Last contact</th><th>Trust</th><th class="num">Valid</th><th class="num">Invalid</th>
    <th class="num">Errors</th><th class="num">Timeouts</th><th class="num">Credit</th><th>Running units (progress)</th></tr></thead>
    <tbody>${rows}</tbody></table></div>${pager}` : '<p class="empty">No worker has registered yet. Start one with <code>worker run --coordinator URL</code>.</p>'}
  </div>`;
}

function leaderTable(title, list, key, unit, kind) {
  const max = Math.max(1e-12, ...list.map(l => l[key]));
  const other = key === 'credit' ? 'recent_credit' : 'credit';
  const rows = list.map((l, i) => `<tr data-leader="${esc(l.id)}">` +
    `<td class="rank">${i + 1}</td>` +
    `<td><b>${esc(l.name || shortId(l.id))}</b><div class="id">${kind === 'worker' && l.account ? 'account ' + esc(l.account) : kind === 'account' ? fmtInt(l.count) + (l.count === 1 ? ' worker' : ' workers') + ' · ' + esc(shortId(l.id)) : esc(shortId(l.id))}</div></td>` +
    `<td class="num"><div class="meter"><div class="track"><i style="width:${pct(l[key], max)}%"></i></div>` +
    `<b data-credit="${l[key]}">${fmtNum(l[key])}</b></div></td>` +
    `<td class="num muted">${fmtNum(l[other])}${other === 'recent_credit' ? '/day' : ''}</td></tr>`).join('');
  return `<div class="card"><h2>${title}</h2>${list.length
    ? `<table><thead><tr><th></th><th>${kind === 'worker' ? 'Worker' : 'Account'}</th><th class="num">${unit}</th>
       <th class="num">${other === 'credit' ? 'Total' : 'Recent'}</th></tr></thead><tbody>${rows}</tbody></table>`
    : '<p class="empty">Nobody yet.</p>'}</div>`;
}

function leaderboardPage(d) {
  return `
  <h1 style="margin-bottom:4px">Leaderboard</h1>
  <p class="sub" style="margin:0 0 20px">Credit is verified work: one credit is 10<sup>9</sup> units of fuel (about a core-second)
   of a replica that agreed with its unit's accepted result. Recent credit is credits per day, averaged with a half-life of a week.</p>
  <div class="grid g2" id="leaderboard">
    ${leaderTable('Accounts · total credit', d.accounts_by_credit, 'credit', 'Credit', 'account')}
    ${leaderTable('Accounts · recent credit', d.accounts_by_recent, 'recent_credit', 'Per day', 'account')}
    ${leaderTable('Workers · total credit', d.workers_by_credit, 'credit', 'Credit', 'worker')}
    ${leaderTable('Workers · recent credit', d.workers_by_recent, 'recent_credit', 'Per day', 'worker')}
  </div>`;
}

// ---- routing and polling ----

function route() {
  const h = location.hash.replace(/^#\/?/, '');
  let m;
  if ((m = h.match(/^job\/([0-9a-fA-F-]{36})$/))) return { name: 'job', url: `${API}/jobs/${m[1]}`, render: jobPage, nav: 'overview' };
  if ((m = h.match(/^workers(?:\/(\d+))?$/))) {
    workersPage = Math.max(1, parseInt(m[1] || '1', 10));
    return { name: 'workers', url: `${API}/workers`, render: workersView, nav: 'workers' };
  }
  if (h === 'leaderboard') return { name: 'leaderboard', url: `${API}/leaderboard?limit=20`, render: leaderboardPage, nav: 'leaderboard' };
  return { name: 'overview', url: `${API}/overview`, render: overviewPage, nav: 'overview' };
}

const view = document.getElementById('view');
const live = document.getElementById('live');
let timer = null, generation = 0, lastHtml = '';

function setLive(ok, text) {
  live.className = 'live ' + (ok ? 'ok' : 'down');
  live.querySelector('span').textContent = text;
}

async function tick() {
  clearTimeout(timer);
  const gen = ++generation;
  const r = route();
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('on', a.dataset.route === r.nav);
  document.body.dataset.page = r.name;
  try {
    const res = await fetch(r.url, { cache: 'no-store' });
    if (gen !== generation) return;
    if (!res.ok) {
      let msg = `${res.status}`;
      try { msg = (await res.json()).message || msg; } catch (_) { /* not JSON */ }
      if (gen !== generation) return;
      show(`<a class="back" href="#/">← Overview</a><div class="card"><p class="empty">${esc(msg)}</p></div>`);
      setLive(true, 'Live');
    } else {
      const data = await res.json();
      if (gen !== generation) return;
      show(r.render(data));
      setLive(true, 'Live · updated ' + new Date().toLocaleTimeString());
    }
  } catch (e) {
    if (gen !== generation) return;
    setLive(false, 'Cannot reach the coordinator; retrying');
  }
  timer = setTimeout(tick, POLL_MS);
}

// Replaces the page only when it changed, so a selection or hover survives
// refreshes that bring nothing new.
function show(html) {
  if (html === lastHtml) return;
  lastHtml = html;
  view.innerHTML = html;
}

window.addEventListener('hashchange', () => { lastHtml = ''; window.scrollTo(0, 0); tick(); });
document.addEventListener('visibilitychange', () => { if (!document.hidden) tick(); });
tick();

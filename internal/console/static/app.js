// The sluice admin console: polls the admin APIs every 2s and keeps the
// last 10 minutes in memory. Counters become rates and histograms become
// quantiles from the difference between two polls, as Prometheus's rate()
// and histogram_quantile() would compute them.
"use strict";
(function () {
  const POLL_MS = 2000, KEEP_S = 600;
  const $ = (id) => document.getElementById(id);
  const colors = ["#58a6ff", "#3fb950", "#d29922", "#f85149", "#bc8cff", "#39c5cf", "#ff9bce", "#8b98a5"];
  const state = { prev: null, pools: null, jobs: null, failures: null, polls: 0, decisions: [], lastDecision: {}, prevPoolsT: 0 };
  const series = { t: [], rps2: [], rps4: [], rps5: [], p50: [], p99: [], t50: [], t99: [], tin: [], tout: [], queue: {}, desired: {}, ready: {} };

  function fmt(v, unit) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    if (unit === "s") return v < 1 ? (v * 1000).toFixed(v < 0.01 ? 1 : 0) + " ms" : v.toFixed(2) + " s";
    if (unit === "%") return (v * 100).toFixed(v < 0.01 ? 2 : 1) + "%";
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(v >= 1e7 ? 0 : 1) + "M";
    if (Math.abs(v) >= 1000) return (v / 1000).toFixed(1) + "k";
    return v >= 10 || v === 0 ? v.toFixed(0) : v.toFixed(1);
  }
  function esc(s) { return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c])); }
  // With admin.token set, the API needs it as a Bearer token: the page asks
  // for it once and keeps it for this tab only (sessionStorage).
  async function get(path) {
    const token = sessionStorage.getItem("sluice-admin-token");
    const r = await fetch(path, { cache: "no-store", headers: token ? { Authorization: "Bearer " + token } : {} });
    if (r.status === 401) {
      $("auth").hidden = false;
      throw new Error("the admin API needs its token");
    }
    if (!r.ok) throw new Error(path + ": " + r.status);
    return r.json();
  }
  $("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("sluice-admin-token", $("token").value);
    $("token").value = "";
    $("auth").hidden = true;
    poll();
  });

  // quantile of the histogram of observations between two cumulative
  // snapshots, interpolated linearly inside the bucket as Prometheus does.
  function quantile(q, a, b) {
    if (!b) return null;
    const n = b.count - (a ? a.count : 0);
    if (n <= 0) return null;
    const rank = q * n;
    let prevCount = 0, prevBound = 0;
    for (let i = 0; i < b.bounds.length; i++) {
      const c = b.buckets[i] - (a && a.buckets.length === b.buckets.length ? a.buckets[i] : 0);
      if (c >= rank) {
        const inBucket = c - prevCount;
        return inBucket <= 0 ? b.bounds[i] : prevBound + (b.bounds[i] - prevBound) * ((rank - prevCount) / inBucket);
      }
      prevCount = c; prevBound = b.bounds[i];
    }
    return b.bounds[b.bounds.length - 1];
  }
  function addHist(acc, h) {
    if (!h) return acc;
    if (!acc) return { bounds: h.bounds.slice(), buckets: h.buckets.slice(), count: h.count, sum: h.sum };
    if (acc.bounds.length !== h.bounds.length) return acc;
    h.buckets.forEach((v, i) => { acc.buckets[i] += v; });
    acc.count += h.count; acc.sum += h.sum;
    return acc;
  }
  function selected(stats) {
    const want = $("pool").value;
    return Object.entries(stats.pools).filter(([name]) => !want || name === want);
  }
  function sumPools(stats) {
    const out = { c2: 0, c4: 0, c5: 0, total: 0, dur: null, ttft: null, tin: 0, tout: 0, queue: 0 };
    for (const [, p] of selected(stats)) {
      for (const [code, v] of Object.entries(p.requests)) {
        out.total += v;
        if (code[0] === "5") out.c5 += v; else if (code[0] === "4") out.c4 += v; else out.c2 += v;
      }
      out.dur = addHist(out.dur, p.duration);
      out.ttft = addHist(out.ttft, p.ttft);
      out.tin += p.tokens.prompt || 0;
      out.tout += p.tokens.completion || 0;
      out.queue += p.queue_depth;
    }
    return out;
  }
  function push(arr, v) { arr.push(v === null || Number.isNaN(v) ? null : v); }
  function keyed(obj, key) { if (!obj[key]) obj[key] = series.t.map(() => null); return obj[key]; }

  function record(stats) {
    const prev = state.prev;
    state.prev = stats;
    if (!prev) return false;
    const dt = (stats.time - prev.time) / 1000;
    if (dt <= 0) return false;
    const a = sumPools(prev), b = sumPools(stats);
    const rate = (x, y) => Math.max(0, y - x) / dt;
    series.t.push(stats.time / 1000);
    push(series.rps2, rate(a.c2, b.c2)); push(series.rps4, rate(a.c4, b.c4)); push(series.rps5, rate(a.c5, b.c5));
    push(series.p50, quantile(0.5, a.dur, b.dur)); push(series.p99, quantile(0.99, a.dur, b.dur));
    push(series.t50, quantile(0.5, a.ttft, b.ttft)); push(series.t99, quantile(0.99, a.ttft, b.ttft));
    push(series.tin, rate(a.tin, b.tin)); push(series.tout, rate(a.tout, b.tout));
    const seen = new Set();
    for (const [name, p] of selected(stats)) {
      keyed(series.queue, name).push(p.queue_depth); seen.add("q" + name);
      if (p.desired !== undefined && p.desired !== null) {
        keyed(series.desired, name).push(p.desired); keyed(series.ready, name).push(p.ready); seen.add("r" + name);
      }
    }
    for (const [k, arr] of Object.entries(series.queue)) if (!seen.has("q" + k)) arr.push(null);
    for (const k of Object.keys(series.desired)) if (!seen.has("r" + k)) { series.desired[k].push(null); series.ready[k].push(null); }
    const cutoff = stats.time / 1000 - KEEP_S;
    while (series.t.length && series.t[0] < cutoff) {
      series.t.shift();
      for (const k of ["rps2", "rps4", "rps5", "p50", "p99", "t50", "t99", "tin", "tout"]) series[k].shift();
      for (const g of [series.queue, series.desired, series.ready]) for (const arr of Object.values(g)) arr.shift();
    }
    const total = rate(a.total, b.total);
    $("kpi-rps").textContent = fmt(total);
    $("kpi-err").textContent = total > 0 ? fmt(rate(a.c5, b.c5) / total, "%") : "0%";
    $("kpi-p99").textContent = fmt(series.p99[series.p99.length - 1], "s");
    $("kpi-ttft").textContent = fmt(series.t99[series.t99.length - 1], "s");
    $("kpi-tps").textContent = fmt(rate(a.tin + a.tout, b.tin + b.tout));
    $("kpi-queue").textContent = fmt(b.queue);
    renderTenants(prev, stats, dt);
    state.backendRates = backendRates(prev, stats, dt);
    return true;
  }

  // Charts.
  const charts = {};
  function opts(el, ser, unit) {
    return {
      width: el.clientWidth, height: 170,
      cursor: { points: { size: 5 } }, legend: { live: false },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max || 0, unit === "s" ? 0.01 : 1) * 1.1] } },
      axes: [
        { stroke: "#8b98a5", grid: { stroke: "#263039" }, ticks: { stroke: "#263039" }, space: 70 },
        { stroke: "#8b98a5", grid: { stroke: "#263039" }, ticks: { stroke: "#263039" }, size: 70, values: (u, vals) => vals.map((v) => fmt(v, unit)) },
      ],
      series: [{}].concat(ser.map((s, i) => ({ label: s, stroke: colors[i % colors.length], width: 1.5, spanGaps: false, points: { show: false }, value: (u, v) => fmt(v, unit) }))),
    };
  }
  function draw(id, labels, data, unit, extra) {
    const el = $(id);
    const key = labels.join("|");
    let c = charts[id];
    if (!c || c.key !== key) {
      if (c) c.plot.destroy();
      const o = opts(el, labels, unit);
      if (extra) extra(o);
      c = charts[id] = { key, plot: new uPlot(o, data, el) };
    } else {
      c.plot.setData(data);
    }
  }
  function markDecisions(o) {
    o.hooks = { draw: [(u) => {
      const ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = "#d29922"; ctx.setLineDash([4, 4]); ctx.lineWidth = 1;
      for (const d of state.decisions) {
        if (d.t < u.scales.x.min || d.t > u.scales.x.max) continue;
        const x = Math.round(u.valToPos(d.t, "x", true));
        ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
      }
      ctx.restore();
    }] };
  }
  function render() {
    const t = series.t;
    draw("c-rps", ["2xx/3xx", "4xx", "5xx"], [t, series.rps2, series.rps4, series.rps5], "");
    draw("c-lat", ["latency p50", "latency p99", "first token p50", "first token p99"], [t, series.p50, series.p99, series.t50, series.t99], "s");
    draw("c-tok", ["prompt", "completion"], [t, series.tin, series.tout], "");
    const qn = Object.keys(series.queue).sort();
    draw("c-queue", qn.length ? qn : ["queue"], [t].concat(qn.length ? qn.map((k) => series.queue[k]) : [t.map(() => null)]), "");
    const rn = Object.keys(series.desired).sort();
    const labels = [], data = [t];
    for (const k of rn) { labels.push("desired " + k, "ready " + k); data.push(series.desired[k], series.ready[k]); }
    if (!labels.length) { labels.push("no autoscaled pool"); data.push(t.map(() => null)); }
    draw("c-rep", labels, data, "", markDecisions);
  }

  // Tables.
  function backendRates(a, b, dt) {
    const out = {};
    for (const [pool, bs] of Object.entries(b.backends || {})) {
      for (const [url, codes] of Object.entries(bs)) {
        const before = (a.backends[pool] || {})[url] || {};
        let n = 0, bad = 0;
        for (const [code, v] of Object.entries(codes)) {
          const d = Math.max(0, v - (before[code] || 0));
          n += d;
          if (!/^[23]/.test(code)) bad += d;
        }
        out[pool + " " + url] = { rate: n / dt, errors: n > 0 ? bad / n : 0 };
      }
    }
    return out;
  }
  function renderBackends() {
    if (!state.pools) return;
    const f = $("filter").value.trim().toLowerCase();
    const rows = [];
    let up = 0, total = 0;
    const order = { unhealthy: 0, ejected: 1, starting: 2, draining: 3, healthy: 4 };
    for (const p of state.pools) {
      for (const b of p.backends) {
        total++; if (b.state === "healthy") up++;
        if (f && !(p.name + " " + b.url + " " + b.state + " " + b.breaker).toLowerCase().includes(f)) continue;
        rows.push({ p, b });
      }
    }
    rows.sort((x, y) => (order[x.b.state] ?? 5) - (order[y.b.state] ?? 5) || x.p.name.localeCompare(y.p.name) || x.b.url.localeCompare(y.b.url));
    const rates = state.backendRates || {};
    $("backends").tBodies[0].innerHTML = rows.map(({ p, b }) => {
      const r = rates[p.name + " " + b.url] || { rate: 0, errors: 0 };
      return `<tr><td>${esc(p.name)}</td><td>${esc(b.url)}</td><td><span class="badge s-${esc(b.state)}">${esc(b.state)}</span></td>` +
        `<td><span class="badge s-${esc(b.breaker)}">${esc(b.breaker.replace("_", "-"))}</span></td><td class="n">${b.in_flight}</td>` +
        `<td class="n">${b.ewma_ms ? fmt(b.ewma_ms / 1000, "s") : "–"}</td><td class="n">${fmt(r.rate)}</td><td class="n">${fmt(r.errors, "%")}</td>` +
        `<td class="n">${b.ejections}</td><td class="err">${esc(b.last_error || "")}</td></tr>`;
    }).join("");
    $("bcount").textContent = rows.length + " of " + total;
    $("kpi-up").textContent = up + "/" + total;
  }
  function renderTenants(a, b, dt) {
    const rows = Object.entries(b.tenants || {}).sort(([x], [y]) => x.localeCompare(y)).map(([name, t]) => {
      const before = (a.tenants || {})[name] || { tokens: {}, limited: {} };
      const sum = (o) => Object.values(o || {}).reduce((s, v) => s + v, 0);
      const tpm = Math.max(0, sum(t.tokens) - sum(before.tokens)) / dt * 60;
      const limited = Math.max(0, sum(t.limited) - sum(before.limited)) / dt * 60;
      const L = t.limits || {};
      const share = L.tpm ? Math.min(1, tpm / L.tpm) : 0;
      const lim = [L.rpm ? "rpm " + L.rpm : "", L.tpm ? "tpm " + fmt(L.tpm) : "", L.concurrency ? "concurrency " + L.concurrency : ""].filter(Boolean).join(" · ") || "none";
      const by = Object.entries(t.limited || {}).filter(([, v]) => v > 0).map(([k, v]) => k + " " + fmt(v)).join(", ");
      return `<tr><td>${esc(name)}</td><td>${L.tpm ? `<span class="bar"><i class="${share > 0.9 ? "hot" : ""}" style="width:${(share * 100).toFixed(0)}%"></i></span>` : ""}${fmt(tpm)}</td>` +
        `<td class="n" title="${esc(by ? "total: " + by : "")}">${fmt(limited)}</td><td>${esc(lim)}</td></tr>`;
    });
    $("tenants").tBodies[0].innerHTML = rows.join("") || `<tr><td colspan="4" class="hint">no tenant traffic yet</td></tr>`;
  }
  function renderJobs() {
    const j = state.jobs;
    const body = $("jobs").tBodies[0];
    if (!j) { body.innerHTML = `<tr><td class="hint">the job system is not running</td></tr>`; return; }
    const rows = Object.entries(j.jobs || {}).map(([k, v]) => `<tr><td>${esc(k)}</td><td class="n">${v}</td></tr>`);
    const pending = Object.entries(j.pending_by_pool || {}).map(([k, v]) => `${esc(k)} ${v}`).join(", ");
    rows.push(`<tr><td>dispatching / concurrency</td><td class="n">${j.in_flight} / ${j.concurrency}</td></tr>`);
    if (j.queue_wait_seconds) rows.push(`<tr><td>queue wait p50 / p99</td><td class="n">${fmt(j.queue_wait_seconds.p50, "s")} / ${fmt(j.queue_wait_seconds.p99, "s")}</td></tr>`);
    if (j.run_seconds) rows.push(`<tr><td>run time p50 / p99</td><td class="n">${fmt(j.run_seconds.p50, "s")} / ${fmt(j.run_seconds.p99, "s")}</td></tr>`);
    if (pending) rows.push(`<tr><td>pending by pool</td><td class="n">${pending}</td></tr>`);
    body.innerHTML = rows.join("");
    $("kpi-jobs").textContent = fmt((j.jobs || {}).queued || 0);
  }
  // This replica's latest failed jobs, newest first: what identifies the
  // job and why it failed, never its body.
  function renderFailures() {
    const f = state.failures;
    const body = $("failures").tBodies[0];
    if (!f) { body.innerHTML = `<tr><td colspan="8" class="hint">the job system is not running</td></tr>`; $("fcount").textContent = ""; return; }
    body.innerHTML = f.failures.map((x) =>
      `<tr data-job="${esc(x.id)}"><td>${esc(new Date(x.time).toLocaleTimeString())}</td><td>${esc(x.id)}</td><td>${esc(x.tenant || "–")}</td>` +
      `<td>${esc(x.pool)}</td><td>${esc(x.model || "–")}</td><td class="n">${x.attempts}</td><td class="n">${x.status || "–"}</td><td class="err">${esc(x.error)}</td></tr>`).join("") ||
      `<tr><td colspan="8" class="hint">no job failed on this gateway recently</td></tr>`;
    $("fcount").textContent = f.failures.length ? `latest ${f.failures.length} (this gateway keeps ${f.kept})` : "";
  }
  function noteDecisions(pools) {
    for (const p of pools) {
      const d = p.autoscaler;
      if (!d) continue;
      // A decision changes the count when it differs from the previous
      // decision's, or from the replicas it found (current).
      const last = state.lastDecision[p.name];
      const from = last ? last.desired : d.current;
      if (from !== d.desired && (!last || last.time !== d.time)) {
        state.decisions.push({ t: Date.parse(d.time) / 1000, pool: p.name, from, to: d.desired, reason: d.reason });
      }
      state.lastDecision[p.name] = d;
    }
    const cutoff = Date.now() / 1000 - KEEP_S;
    state.decisions = state.decisions.filter((d) => d.t >= cutoff);
    $("decisions").innerHTML = state.decisions.slice(-20).reverse().map((d) =>
      `<li>${new Date(d.t * 1000).toLocaleTimeString()} <b>${esc(d.pool)} ${d.from} → ${d.to}</b> ${esc(d.reason)}</li>`).join("");
  }
  function poolOptions(stats) {
    const sel = $("pool");
    const have = new Set([...sel.options].map((o) => o.value));
    for (const name of Object.keys(stats.pools).sort()) {
      if (!have.has(name)) sel.add(new Option(name, name));
    }
  }

  async function poll() {
    try {
      const [stats, pools] = await Promise.all([get("/api/stats"), get("/api/pools")]);
      // The job system may be off (503): its panels say so.
      const [jobs, failures] = await Promise.all([get("/api/jobs/stats").catch(() => null), get("/api/jobs/failures").catch(() => null)]);
      state.pools = pools.pools; state.jobs = jobs; state.failures = failures;
      poolOptions(stats);
      noteDecisions(pools.pools);
      if (record(stats)) render();
      renderBackends(); renderJobs(); renderFailures();
      state.polls++;
      $("status").textContent = "updated " + new Date().toLocaleTimeString();
      $("status").className = "status";
    } catch (e) {
      $("status").textContent = "unreachable: " + e.message;
      $("status").className = "status bad";
    }
  }
  $("filter").addEventListener("input", renderBackends);
  $("pool").addEventListener("change", () => {
    state.prev = null;
    for (const k of Object.keys(series)) series[k] = Array.isArray(series[k]) ? [] : {};
  });
  window.addEventListener("resize", () => { for (const c of Object.values(charts)) { const el = c.plot.root.parentElement; c.plot.setSize({ width: el.clientWidth, height: 170 }); } });
  // For tests and the curious: how many polls and chart points there are.
  window.sluiceConsole = { get polls() { return state.polls; }, get points() { return series.t.length; }, get decisions() { return state.decisions.length; } };
  poll();
  setInterval(poll, POLL_MS);
})();

// The live journey dashboard: fetches api/dashboard every few seconds and redraws in place
// (Plotly.react for charts, tables rebuilt with textContent: no HTML from data is parsed).
"use strict";

const REFRESH_MS = Number(document.body.dataset.refreshMs) || 5000;
const COLORS = { web: "#2e5bff", chat: "#12b76a", email: "#f79009", call_center: "#9e77ed" };
const STAGE_COLORS = ["#2e5bff", "#12b76a", "#f79009", "#9e77ed", "#f04438", "#0ba5ec", "#667085"];
const PLOT = { displayModeBar: false, responsive: true };
const query = new URLSearchParams(location.search);
const filters = {
  range: query.get("range") || "1h",
  channel: query.get("channel") || "all",
  segment: query.get("segment") || "all",
};
let timer = null;
let inFlight = false;
let pending = false;

const $ = (id) => document.getElementById(id);
const int = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US"));
const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%");
const num = (v, d = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
const secs = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(v < 10 ? 1 : 0) + " s");
const signed = (v, d = 1) => (v > 0 ? "+" : "") + Number(v).toFixed(d);
const time = (iso) => (iso ? iso.replace("T", " ").replace(/(\.\d+)?Z$/, "").slice(0, 16) + " UTC" : "–");
const stageColor = (stages, s) => STAGE_COLORS[Math.max(0, stages.indexOf(s)) % STAGE_COLORS.length];

function empty(layout, traces, text) {
  if (traces.length && traces.some((t) => (t.y || t.link?.value || []).some((v) => v !== null))) return layout;
  return { ...layout, xaxis: { visible: false }, yaxis: { visible: false },
    annotations: [{ text, showarrow: false, font: { color: "#667085", size: 14 }, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }] };
}

function cell(row, text, cls, field) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  if (field) td.dataset.field = field;
  row.appendChild(td);
  return td;
}

function fillTable(id, rows, render, emptyText) {
  const body = $(id).querySelector("tbody");
  const fresh = document.createElement("tbody");
  for (const r of rows) fresh.appendChild(render(r));
  if (!rows.length) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = cell(tr, emptyText || "none in this range");
    td.colSpan = $(id).querySelectorAll("thead th").length;
    fresh.appendChild(tr);
  }
  body.replaceWith(fresh);
}

function panelError(panel, message) {
  const p = $(panel).querySelector(".panel-error");
  p.hidden = !message;
  p.textContent = message ? "unavailable: " + message : "";
}

function renderFunnel(data) {
  const rows = data.funnel;
  fillTable("funnel-table", rows, (r) => {
    const tr = document.createElement("tr");
    tr.dataset.stage = r.stage;
    const d = r.detector;
    cell(tr, r.stage, "text", "stage");
    cell(tr, int(r.entries), "", "entries");
    cell(tr, int(r.in_stage), "", "in_stage");
    cell(tr, int(r.conversions), "", "conversions");
    cell(tr, int(r.dropoffs), "", "dropoffs");
    cell(tr, pct(r.conversion_rate), "", "conversion_rate");
    cell(tr, pct(r.dropoff_rate), "", "dropoff_rate");
    cell(tr, d ? pct(d.dropoff_rate) : "–", "", "detector_rate");
    cell(tr, d ? pct(d.baseline_rate) : "–", "", "baseline");
    const change = d && d.change !== null ? signed(100 * d.change) + " pp" +
      (d.relative_change !== null ? " (" + signed(100 * d.relative_change, 0) + "%)" : "") : "–";
    cell(tr, change, d && d.change > 0 ? "up" : d && d.change < 0 ? "down" : "", "change");
    const status = !d ? "no detector" : d.firing ? "FIRING" : d.suppressed ? d.suppressed : "ok";
    cell(tr, status, d && d.firing ? "text firing" : "text", "status");
    return tr;
  });
  $("funnel-range").textContent = time(data.range.start) + " → " + time(data.range.end);
  const trace = {
    type: "funnel", y: rows.map((r) => r.stage), x: rows.map((r) => r.entries),
    textinfo: "value", customdata: rows.map((r) => pct(r.conversion_rate)),
    marker: { color: rows.map((r) => stageColor(data.stages, r.stage)) },
    hovertemplate: "%{y}: %{x} entries, conversion %{customdata}<extra></extra>",
  };
  Plotly.react("c-funnel", [trace], { margin: { l: 100, r: 10, t: 10, b: 20 } }, PLOT);
}

function renderDropoff(data) {
  const traces = [];
  for (const stage of data.stages) {
    const pts = data.dropoff_series.filter((p) => p.stage === stage);
    if (!pts.length) continue;
    traces.push({
      type: "scatter", mode: "lines+markers", name: stage, x: pts.map((p) => p.t),
      y: pts.map((p) => p.dropoff_rate), connectgaps: false,
      line: { color: stageColor(data.stages, stage) },
      marker: { symbol: pts.map((p) => (p.final ? "circle" : "circle-open")), size: 6 },
      customdata: pts.map((p) => [p.dropoffs, p.conversions]),
      hovertemplate: stage + " %{x}: %{y:.1%} (%{customdata[0]} drop-offs, %{customdata[1]} conversions)<extra></extra>",
    });
  }
  for (const [state, symbol, color] of [["fired", "triangle-up", "#b42318"], ["resolved", "triangle-down", "#067647"]]) {
    const alerts = data.alerts_in_range.filter((a) => a.state === state);
    if (!alerts.length) continue;
    traces.push({
      type: "scatter", mode: "markers", name: "alert " + state, x: alerts.map((a) => a.window_start),
      y: alerts.map((a) => a.dropoff_rate), marker: { symbol, size: 13, color },
      text: alerts.map((a) => a.stage + "/" + a.channel + ": " + a.summary),
      hovertemplate: "%{text}<extra>alert " + state + "</extra>",
    });
  }
  const layout = {
    margin: { l: 50, r: 10, t: 10, b: 40 }, yaxis: { tickformat: ".0%", rangemode: "tozero" },
    xaxis: { range: [data.range.start, data.range.end], type: "date" }, legend: { orientation: "h" },
  };
  Plotly.react("c-dropoff", traces, empty(layout, traces, "no outcomes in this range"), PLOT);
}

function renderSankey(data) {
  const labels = ["new journey", ...data.stages];
  const index = (s) => (s === "" ? 0 : labels.indexOf(s) >= 0 ? labels.indexOf(s) : labels.push(s) - 1);
  const links = data.journey_map.map((l) => ({ s: index(l.from_stage), t: index(l.to_stage), l }));
  const trace = {
    type: "sankey", arrangement: "snap",
    node: { label: labels, pad: 18, thickness: 16, color: labels.map((s) => (s === "new journey" ? "#98a2b3" : stageColor(data.stages, s))) },
    link: {
      source: links.map((x) => x.s), target: links.map((x) => x.t), value: links.map((x) => x.l.journeys),
      label: links.map((x) => x.l.channel), color: links.map((x) => (COLORS[x.l.channel] || "#98a2b3") + "66"),
      hovertemplate: "%{source.label} → %{target.label} via %{label}: %{value}<extra></extra>",
    },
  };
  const traces = links.length ? [trace] : [];
  Plotly.react("c-sankey", traces, empty({ margin: { l: 10, r: 10, t: 10, b: 10 } }, traces, "no stage transitions in this range"), PLOT);
  const legend = $("sankey-legend");
  legend.replaceChildren(...Object.entries(COLORS).map(([ch, color]) => {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = color;
    span.append(swatch, ch);
    return span;
  }));
}

function renderMix(target, rows, key, stages) {
  const values = [...new Set(rows.map((r) => r[key]))];
  const traces = stages.filter((s) => rows.some((r) => r.stage === s)).map((stage) => ({
    type: "bar", name: stage, x: values,
    y: values.map((v) => (rows.find((r) => r[key] === v && r.stage === stage) || { entries: 0 }).entries),
    marker: { color: stageColor(stages, stage) },
  }));
  const layout = { barmode: "stack", margin: { l: 50, r: 10, t: 10, b: 40 }, legend: { orientation: "h" } };
  Plotly.react(target, traces, empty(layout, traces, "no stage entries in this range"), PLOT);
}

function renderExperience(data) {
  const rows = data.experience;
  fillTable("experience-table", rows, (r) => {
    const tr = document.createElement("tr");
    tr.dataset.stage = r.stage;
    cell(tr, r.stage, "text");
    cell(tr, num(r.csat_avg, 2)); cell(tr, int(r.csat_responses));
    cell(tr, num(r.nps, 0)); cell(tr, int(r.nps_responses));
    cell(tr, secs(r.wait_avg_seconds)); cell(tr, secs(r.wait_p90_seconds)); cell(tr, int(r.waits));
    return tr;
  });
  const x = rows.map((r) => r.stage);
  const traces = [
    { type: "bar", name: "CSAT avg (1-5)", x, y: rows.map((r) => r.csat_avg), offsetgroup: 1, marker: { color: "#2e5bff" } },
    { type: "bar", name: "NPS (-100 to 100)", x, y: rows.map((r) => r.nps), yaxis: "y2", offsetgroup: 2, marker: { color: "#12b76a" } },
    { type: "scatter", mode: "markers", name: "hold avg (s)", x, y: rows.map((r) => r.wait_avg_seconds), yaxis: "y3", marker: { color: "#f79009", size: 10, symbol: "diamond" } },
    { type: "scatter", mode: "markers", name: "hold p90 (s)", x, y: rows.map((r) => r.wait_p90_seconds), yaxis: "y3", marker: { color: "#f04438", size: 10, symbol: "diamond-tall" } },
  ];
  const layout = {
    barmode: "group", margin: { l: 40, r: 10, t: 10, b: 40 }, legend: { orientation: "h" },
    xaxis: { domain: [0, 0.76] },
    yaxis: { title: { text: "CSAT" }, range: [0, 5] },
    yaxis2: { title: { text: "NPS" }, overlaying: "y", side: "right", anchor: "x", range: [-100, 100], showgrid: false },
    yaxis3: { title: { text: "hold (s)" }, overlaying: "y", side: "right", anchor: "free", position: 0.93, rangemode: "tozero", showgrid: false },
  };
  const none = rows.length ? layout : { ...empty({ margin: layout.margin }, [], "no CSAT, NPS or hold times in this range"), showlegend: false };
  Plotly.react("c-experience", rows.length ? traces : [], none, PLOT);
}

function renderTables(data) {
  fillTable("painpoints-table", data.painpoints.rows || [], (p) => {
    const tr = document.createElement("tr");
    cell(tr, p.rank); cell(tr, p.stage, "text"); cell(tr, p.kind, "text");
    cell(tr, int(p.dropped_with) + " / " + int(p.journeys_with));
    cell(tr, pct(p.dropoff_with)); cell(tr, pct(p.dropoff_without));
    cell(tr, num(p.lift, 2) + " [" + num(p.lift_low, 2) + ", " + num(p.lift_high, 2) + "]");
    cell(tr, p.lift_within_type === null ? "–" : num(p.lift_within_type, 2));
    return tr;
  }, "no kind has enough decided journeys yet");
  fillTable("alerts-table", data.recent_alerts, (a) => {
    const tr = document.createElement("tr");
    cell(tr, time(a.evaluated_at), "text"); cell(tr, a.state, a.state === "fired" ? "text firing" : "text");
    cell(tr, a.stage, "text"); cell(tr, a.channel, "text"); cell(tr, pct(a.dropoff_rate));
    cell(tr, pct(a.baseline_rate)); cell(tr, num(a.zscore, 1));
    tr.title = a.summary;
    return tr;
  }, "no alert yet");
  fillTable("dead-table", data.dead_letters.reasons, (d) => {
    const tr = document.createElement("tr");
    cell(tr, d.reason, "text"); cell(tr, d.stage, "text"); cell(tr, int(d.messages)); cell(tr, time(d.last_at));
    return tr;
  });
  $("dead-total").textContent = int(data.dead_letters.total) + " in the range";
}

function renderFreshness(data) {
  const f = data.freshness;
  $("t-eps").textContent = num(f.events_per_second, 1);
  $("t-lag").textContent = secs(f.ingest_lag_seconds);
  $("t-newest").textContent = time(f.newest_event_at);
  $("t-final").textContent = time(f.newest_final_window);
  const firing = f.feed ? f.feed.firing : null;
  $("t-firing").textContent = firing === null ? "–" : String(firing);
  $("t-firing").className = "v" + (firing ? " firing" : "");
  $("t-dead").textContent = int(data.dead_letters.total);
  const list = $("warnings");
  list.replaceChildren(...(f.warnings || []).map((w) => { const li = document.createElement("li"); li.textContent = w; return li; }));
  list.hidden = !(f.warnings || []).length;
}

function renderOptions(data) {
  const group = $("f-channel");
  if (!group.children.length) {
    for (const ch of data.options.channels) {
      const b = document.createElement("button");
      b.type = "button"; b.textContent = ch; b.dataset.channel = ch;
      b.addEventListener("click", () => setFilter("channel", ch));
      group.appendChild(b);
    }
  }
  for (const b of group.children) b.setAttribute("aria-pressed", String(b.dataset.channel === filters.channel));
  const select = $("f-segment");
  const known = [...select.options].map((o) => o.value).join("|");
  const want = [...new Set([...data.options.segments, filters.segment])];
  if (known !== want.join("|")) {
    select.replaceChildren(...want.map((s) => new Option(s, s)));
  }
  select.value = filters.segment;
  $("f-range").value = filters.range;
}

const PANELS = { funnel: "p-funnel", dropoff_series: "p-dropoff", alerts_in_range: "p-dropoff",
  journey_map: "p-sankey", channel_mix: "p-channels", segment_mix: "p-segments",
  experience: "p-experience", painpoints: "p-painpoints", recent_alerts: "p-alerts", dead_letters: "p-dead" };

function render(data) {
  for (const panel of new Set(Object.values(PANELS))) panelError(panel, "");
  for (const [name, message] of Object.entries(data.errors)) if (PANELS[name]) panelError(PANELS[name], message);
  renderOptions(data);
  renderFreshness(data);
  renderFunnel(data);
  renderDropoff(data);
  renderSankey(data);
  renderMix("c-channels", data.channel_mix, "channel", data.stages);
  renderMix("c-segments", data.segment_mix, "segment", data.stages);
  renderExperience(data);
  renderTables(data);
  const own = Object.entries(data.timings_ms).filter(([name]) => name !== "painpoints");
  const slowest = own.sort((a, b) => b[1] - a[1])[0];
  const ranking = data.timings_ms.painpoints;
  $("timings").textContent = "ClickHouse: " + own.reduce((a, b) => a + b[1], 0).toFixed(0) + " ms for this refresh" +
    (slowest ? " (slowest: " + slowest[0] + " " + slowest[1].toFixed(0) + " ms)" : "") +
    (ranking ? "; pain-point ranking " + ranking.toFixed(0) + " ms, remade every 2 min in the background" : "");
}

async function refresh() {
  if (inFlight) {
    pending = true; // the filters changed meanwhile: ask again when this one is done
    return;
  }
  inFlight = true;
  const status = $("status");
  const params = new URLSearchParams(filters);
  try {
    const resp = await fetch("api/dashboard?" + params, { headers: { Accept: "application/json" } });
    if (resp.status === 401) throw new Error("authentication required: open the page with ?token=… or log in");
    const data = await resp.json();
    if (!resp.ok) throw new Error(data.error || "ClickHouse unreachable (" + resp.status + ")");
    render(data);
    Object.assign(status.dataset, {
      generatedAt: data.generated_at, channel: data.filters.channel || "all",
      segment: data.filters.segment || "all", range: data.filters.range,
      rangeStart: data.range.start, rangeEnd: data.range.end,
    });
    status.textContent = "updated " + time(data.generated_at).slice(11) + " · every " + REFRESH_MS / 1000 + " s";
    status.className = "status";
  } catch (err) {
    status.textContent = "not updated: " + err.message;
    status.className = "status error";
  } finally {
    inFlight = false;
  }
  if (pending) {
    pending = false;
    await refresh();
  }
}

function setFilter(name, value) {
  filters[name] = value;
  const q = new URLSearchParams(filters);
  history.replaceState(null, "", "?" + q);
  clearTimeout(timer);
  refresh().then(schedule);
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(() => refresh().then(schedule), REFRESH_MS);
}

$("f-range").addEventListener("change", (e) => setFilter("range", e.target.value));
$("f-segment").addEventListener("change", (e) => setFilter("segment", e.target.value));
refresh().then(schedule);

// Pulse operator dashboard: polls /v1/stats and /v1/feed every second; draws throughput, latency
// percentiles, model quality and dead letters; shows a clicked decision's explanation as bar charts.
// Clicking a decision pauses the feed (at 500 decisions/s it would scroll the row away at the next poll)
// until "Resume live feed" (or Escape) is pressed.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const HISTORY = 120;
const history = {t: [], events: [], decisions: [], ingest: [], p50: [], p95: [], p99: [], auc: [], sentiment: [], hits: []};
let previous = null;
let selected = null;

async function api(path) {
  const response = await fetch(path, {headers: TOKEN ? {Authorization: `Bearer ${TOKEN}`} : {}});
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

const total = (counts) => Object.values(counts || {}).reduce((a, b) => a + b, 0);

// Percentile q of the observations that fell into the histogram between two scrapes (linear in a bucket).
function windowPercentile(now, before, q) {
  if (!now) return null;
  const old = new Map((before ? before.buckets : []).map(([le, n]) => [String(le), n]));
  const buckets = now.buckets.map(([le, n]) => [le === null ? Infinity : le, n - (old.get(String(le)) || 0)]);
  const count = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (count <= 0) return null;
  const rank = q * count;
  let lower = 0, below = 0;
  for (const [le, n] of buckets) {
    if (n >= rank) {
      if (!Number.isFinite(le)) return lower;
      return lower + (le - lower) * ((rank - below) / Math.max(n - below, 1e-9));
    }
    lower = le; below = n;
  }
  return lower;
}

function push(name, value) {
  history[name].push(value);
  if (history[name].length > HISTORY) history[name].shift();
}

function renderStats(stats) {
  const engine = stats.engine;
  const seconds = previous ? stats.ts - previous.ts : 0;
  const rate = (now, before) => (previous && seconds > 0 ? Math.max(0, now - before) / seconds : null);
  const events = rate(total(engine.events), total(previous?.engine.events));
  const decisions = rate(total(engine.decisions), total(previous?.engine.decisions));
  const ingest = rate(total(stats.ingest), total(previous?.ingest));
  const latencyNow = engine.latency.event_to_decision;
  const latencyBefore = previous?.engine.latency.event_to_decision;
  const ms = (q) => { const v = windowPercentile(latencyNow, latencyBefore, q); return v === null ? null : v * 1000; };
  push("events", events); push("decisions", decisions); push("ingest", ingest);
  push("p50", ms(0.5)); push("p95", ms(0.95)); push("p99", ms(0.99));
  const quality = engine.quality;
  push("auc", quality["churn.auc"] ?? null); push("sentiment", quality["sentiment.accuracy"] ?? null);
  push("hits", quality["recommender.hit_rate"] ?? null);
  previous = stats;

  const fmt = (v, unit = "") => (v === null || v === undefined ? "–" : PulseCharts.formatNumber(v) + unit);
  document.getElementById("kpi-events").textContent = fmt(events);
  document.getElementById("kpi-decisions").textContent = fmt(decisions);
  document.getElementById("kpi-latency").textContent = `${fmt(history.p50.at(-1), " ms")} / ${fmt(history.p99.at(-1), " ms")}`;
  document.getElementById("kpi-lag").textContent = count(engine.consumer_lag);
  document.getElementById("kpi-ws").textContent = count(stats.gateway.connections);
  const problems = stats.engine_errors.length ? ` — engine metrics unreachable: ${stats.engine_errors.join("; ")}` : "";
  document.getElementById("status").textContent =
    `${engine.engines} engine(s), Redis ${stats.gateway.redis_connected ? "up" : "DOWN"}${problems}`;

  PulseCharts.line(document.getElementById("chart-throughput"), [
    {name: "events", values: history.events}, {name: "decisions", values: history.decisions},
    {name: "ingest", values: history.ingest}]);
  PulseCharts.line(document.getElementById("chart-latency"), [
    {name: "p50", values: history.p50}, {name: "p95", values: history.p95}, {name: "p99", values: history.p99}],
    {unit: " ms"});
  PulseCharts.line(document.getElementById("chart-quality"), [
    {name: "churn AUC", values: history.auc}, {name: "sentiment acc.", values: history.sentiment},
    {name: "reco hit-rate", values: history.hits}], {fixedMax: 1});

  const drifts = Object.entries(engine.drifts || {});
  document.getElementById("drifts").textContent = "drift alarms (ADWIN, since start): " +
    (drifts.length ? drifts.map(([model, n]) => `${model} ${n}`).join(" · ") : "–");

  const rows = Object.entries(engine.dead_letters).sort((a, b) => b[1] - a[1]);
  const rejected = Object.entries(stats.ingest).filter(([key]) => !key.startsWith("accepted"));
  document.getElementById("dead-letters").innerHTML = rows.length + rejected.length
    ? [...rows.map(([reason, n]) => `<tr><td>${reason}</td><td>${n}</td></tr>`),
       ...rejected.map(([key, n]) => `<tr><td>ingest ${key}</td><td>${n}</td></tr>`)].join("")
    : `<tr><td class="muted">none yet</td></tr>`;
}

// A count (messages, connections) as a whole number with thousands separators.
const count = (v) => (v === null || v === undefined ? "–" : Math.round(v).toLocaleString("en-US"));

function setPaused(paused) {
  document.getElementById("feed-state").textContent = paused
    ? "(paused on the selected decision)" : "(live: click one to explain it)";
  document.getElementById("feed-resume").classList.toggle("hidden", !paused);
  document.getElementById("feed").classList.toggle("paused", paused);
  if (!paused) {
    selected = null;
    document.querySelectorAll("#feed li.selected").forEach((li) => li.classList.remove("selected"));
  }
}

function renderFeed(decisions) {
  if (selected !== null) return;  // paused: the selected row stays where it was clicked
  const feed = document.getElementById("feed");
  feed.replaceChildren(...decisions.map((d) => {
    const li = document.createElement("li");
    li.dataset.decisionId = d.decision_id;
    const top = d.recommendations && d.recommendations[0] ? d.recommendations[0].item_id : "–";
    li.textContent = `${d.user_id}  ${d.event_type} → ${d.action.name}  top ${top}`;
    li.onclick = () => {
      document.querySelectorAll("#feed li.selected").forEach((other) => other.classList.remove("selected"));
      li.classList.add("selected");
      showExplanation(d);
    };
    return li;
  }));
}

function barSection(panel, title, contributions, limit = 12) {
  const items = Object.entries(contributions || {})
    .map(([label, value]) => ({label, value})).filter((item) => item.value !== 0)
    .sort((a, b) => Math.abs(b.value) - Math.abs(a.value)).slice(0, limit);
  const section = document.createElement("div");
  section.className = "explanation-section";
  const h = document.createElement("h3");
  h.textContent = title;
  if (items.length) {
    section.append(h, PulseCharts.bars(items));
  } else {  // e.g. a message whose words the sentiment model has no weight for yet
    const note = document.createElement("p");
    note.className = "empty";
    note.textContent = "no factor contributed (all contributions are 0)";
    section.append(h, note);
  }
  panel.append(section);
}

// The stored decision (GET /v1/explanations/ID); the feed's copy when Redis no longer holds it (each user
// keeps their last few, and decisions made without consent are never stored).
async function showExplanation(fromFeed) {
  selected = fromFeed.decision_id;
  setPaused(true);
  const panel = document.getElementById("explanation");
  let d = fromFeed, note = "";
  try {
    d = await api(`/v1/explanations/${encodeURIComponent(fromFeed.decision_id)}`);
  } catch (error) {
    note = ` (not stored: ${error.message}; shown from the feed)`;
  }
  panel.replaceChildren();
  const h = document.createElement("h2");
  h.textContent = `Explanation of ${d.decision_id}`;
  const summary = document.createElement("p");
  summary.id = "explanation-summary";
  const churn = d.churn ? ` churn p=${d.churn.probability.toFixed(3)};` : "";
  summary.textContent = `${d.user_id}: ${d.event_type} → ${d.action.name} (${d.action.reason});${churn}${note}`;
  panel.append(h, summary);
  if (d.churn) barSection(panel, `Churn: contributions to the logit (intercept ${d.churn.explanation.intercept.toFixed(3)})`,
                          d.churn.explanation.contributions);
  const message = d.sentiment && d.sentiment.message;
  if (message) barSection(panel, `Message sentiment ${message.score.toFixed(3)}: word contributions`,
                          message.explanation.contributions);
  (d.recommendations || []).slice(0, 3).forEach((rec, i) =>
    barSection(panel, `Recommendation #${i + 1} ${rec.item_id} (score ${rec.score.toFixed(3)}): components`, rec.components));
}

async function tick() {
  try {
    const [stats, feed] = await Promise.all([api("/v1/stats"), api("/v1/feed?limit=25")]);
    renderStats(stats);
    renderFeed(feed);
  } catch (error) {
    document.getElementById("status").textContent = `error: ${error.message}`;
  }
}

document.getElementById("feed-resume").onclick = () => { setPaused(false); tick(); };
document.addEventListener("keydown", (event) => { if (event.key === "Escape" && selected !== null) setPaused(false); });
tick();
setInterval(tick, 1000);

// Pulse dashboard: the experiments panel. Polls GET /v1/experiments; shows each arm's metrics with their 95%
// intervals, draws every arm's lift over the control as intervals around 0, and the sample-ratio check.
// How to read it: docs/experiments.md.
"use strict";

const PulseExperiments = (() => {
  const TOKEN = new URLSearchParams(location.search).get("token") || "";
  const POLL_MS = 3000;
  const SVG = "http://www.w3.org/2000/svg";
  const COLUMNS = [
    ["click_rate", "click / decision", pct],
    ["cart_rate", "cart / decision", pct],
    ["purchase_rate", "purchase / decision", pct],
    ["revenue_per_user", "revenue / user", num],
    ["offer_acceptance", "offers accepted", pct],
    ["sessions_per_user", "sessions / user", num],
  ];
  const LIFT_METRICS = ["click_rate", "cart_rate", "purchase_rate", "attributed_rate", "revenue_per_user",
                        "sessions_per_user", "offer_acceptance"];

  function pct(v) { return (100 * v).toFixed(v < 0.1 ? 2 : 1) + "%"; }
  function num(v) { return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2); }
  function signedPct(v) { return (v >= 0 ? "+" : "") + (100 * v).toFixed(1) + "%"; }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "class") node.className = value; else node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    return node;
  }

  // A value with its interval: "3.41% [3.02, 3.80]".
  function withInterval(estimate, format) {
    if (!estimate) return el("span", {class: "muted"}, "–");
    return el("span", {}, format(estimate.value), " ",
              el("small", {class: "muted"}, `[${format(estimate.low)}, ${format(estimate.high)}]`));
  }

  function srmBanner(experiment) {
    const srm = experiment.srm;
    const state = srm.alarm ? "alarm" : srm.checked ? "ok" : "waiting";
    const p = srm.p_value === null || srm.p_value === undefined ? "" : ` (chi-square p = ${srm.p_value.toPrecision(2)})`;
    const text = srm.alarm ? `Sample ratio mismatch: ${srm.reason}${p}. Do not trust the lifts until assignment is fixed.`
      : srm.checked ? `Assignment OK: users per arm match the configured shares${p}.`
      : `Sample-ratio check: ${srm.reason}.`;
    return el("div", {class: `srm ${state}`, id: "experiment-srm", "data-state": state}, text);
  }

  function armsTable(experiment) {
    const head = el("tr", {}, el("th", {}, "arm"), el("th", {}, "share: set / users"), el("th", {}, "users"),
                    el("th", {}, "decisions (share)"), ...COLUMNS.map(([, label]) => el("th", {}, label)));
    const rows = experiment.arms.map((arm) => {
      const kind = arm.control ? " (control)" : arm.personalized === false ? " (holdout)" : "";
      const share = arm.configured_share === null || arm.configured_share === undefined ? "–" : pct(arm.configured_share);
      const userShare = arm.user_share === null ? "–" : pct(arm.user_share);
      return el("tr", {"data-arm": arm.name},
        el("td", {}, el("b", {}, arm.name), kind),
        el("td", {}, `${share} / ${userShare}`),
        el("td", {class: "users"}, String(arm.users)),
        el("td", {}, String(arm.decisions), " ", withInterval(arm.decision_share, pct)),
        ...COLUMNS.map(([metric, , format]) => el("td", {"data-metric": metric}, withInterval(arm.metrics[metric], format))));
    });
    return el("table", {class: "arms"}, el("thead", {}, head), el("tbody", {}, ...rows));
  }

  // One row per (arm, metric): the lift's interval as a line, its estimate as a dot, 0 as the axis.
  function liftChart(experiment) {
    const rows = [];
    for (const arm of experiment.arms) {
      if (!arm.lift) continue;
      for (const metric of LIFT_METRICS) {
        const lift = arm.lift[metric];
        if (lift && lift.relative) rows.push({arm: arm.name, metric, lift});
      }
    }
    if (!rows.length) return el("p", {class: "muted"}, "No lift yet: every arm needs settled decisions.");
    const width = 760, labelW = 230, valueW = 180, rowH = 20, top = 18;
    const plotW = width - labelW - valueW;
    const height = top + rows.length * rowH + 6;
    const bound = 1.1 * Math.max(0.05, ...rows.map((r) => Math.min(Math.max(Math.abs(r.lift.relative.low),
                                                                       Math.abs(r.lift.relative.high)), 2)));
    const x = (v) => labelW + plotW / 2 + (Math.max(-bound, Math.min(bound, v)) / bound) * (plotW / 2);
    const chart = svg("svg", {id: "lift-chart", viewBox: `0 0 ${width} ${height}`, width, height});
    chart.append(svg("line", {x1: x(0), x2: x(0), y1: top - 4, y2: height, stroke: "#94a3b8"}));
    for (const [v, anchor] of [[-bound, "start"], [0, "middle"], [bound, "end"]]) {
      const tick = svg("text", {x: x(v), y: 11, "font-size": 10, "text-anchor": anchor, fill: "#64748b"});
      tick.textContent = signedPct(v);
      chart.append(tick);
    }
    rows.forEach((row, i) => {
      const y = top + i * rowH + rowH / 2;
      const {relative, significant, enough_users: enough} = row.lift;
      const state = significant ? (relative.value > 0 ? "up" : "down") : enough ? "flat" : "small";
      const color = {up: "#16a34a", down: "#dc2626", flat: "#64748b", small: "#cbd5e1"}[state];
      const group = svg("g", {class: `lift ${state}${significant ? " significant" : ""}`, "data-arm": row.arm,
                              "data-metric": row.metric, "data-value": relative.value, "data-low": relative.low,
                              "data-high": relative.high, "data-significant": significant});
      const label = svg("text", {x: labelW - 6, y: y + 4, "font-size": 11, "text-anchor": "end"});
      label.textContent = `${row.arm}: ${row.metric.replaceAll("_", " ")}`;
      const interval = svg("line", {class: "interval", x1: x(relative.low), x2: x(relative.high), y1: y, y2: y,
                                    stroke: color, "stroke-width": 3, "stroke-linecap": "round"});
      if (!enough) interval.setAttribute("stroke-dasharray", "4 3");
      const dot = svg("circle", {cx: x(relative.value), cy: y, r: 4, fill: color});
      const value = svg("text", {x: width - 2, y: y + 4, "font-size": 11, "text-anchor": "end", fill: color});
      value.textContent = `${signedPct(relative.value)} [${signedPct(relative.low)}, ${signedPct(relative.high)}]`;
      group.append(label, interval, dot, value);
      chart.append(group);
    });
    return chart;
  }

  function render(report) {
    const body = document.getElementById("experiments-body");
    const source = report.source || {};
    const lag = source.lag === null || source.lag === undefined ? "lag –" : `lag ${source.lag}`;
    document.getElementById("experiments-source").textContent =
      `(${report.outcomes} outcomes read from ${source.topic}, ${lag}${source.error ? "; " + source.error : ""})`;
    const [experiment, ...earlier] = report.experiments;
    if (!experiment) {
      body.replaceChildren(el("p", {class: "muted"}, "No experiment yet."));
      return;
    }
    const method = report.method;
    const actedOn = experiment.arms.some((row) => row.metrics.click_rate && row.metrics.click_rate.value > 0);
    const hint = experiment.arms.some((row) => row.decisions > 0) && !actedOn
      ? [el("p", {class: "muted", id: "experiment-hint"}, "No outcome named its decision yet: conversions count the " +
            "clicks, carts and purchases that carry the decision_id of the decision shown (send it with them).")]
      : [];
    body.replaceChildren(
      el("p", {id: "experiment-title"}, el("b", {}, experiment.name), ` ${experiment.version || ""} — lifts against `,
         el("b", {}, experiment.control || "–"), `; significant only with ≥ ${method.min_users} users per arm`),
      srmBanner(experiment),
      armsTable(experiment),
      ...hint,
      el("h3", {}, "Lift over the control (95% intervals)"),
      liftChart(experiment),
      el("p", {class: "muted small"}, `Intervals: ${method.interval}.`),
      ...(earlier.length ? [el("p", {class: "muted small"},
          `Earlier experiments in the log: ${earlier.map((e) => `${e.name} (${e.users} users)`).join(", ")}`)] : []));
  }

  async function tick() {
    try {
      const response = await fetch("/v1/experiments", {headers: TOKEN ? {Authorization: `Bearer ${TOKEN}`} : {}});
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      render(await response.json());
    } catch (error) {
      document.getElementById("experiments-source").textContent = `(error: ${error.message})`;
    }
  }

  tick();
  setInterval(tick, POLL_MS);
  return {render};
})();

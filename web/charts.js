// Tiny dependency-free charts for the Pulse dashboard: time-series lines on <canvas>, signed bars in SVG.
"use strict";

const PulseCharts = (() => {
  const PALETTE = ["#3b82f6", "#ef4444", "#10b981", "#f59e0b", "#8b5cf6", "#64748b"];

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const step = Math.pow(10, Math.floor(Math.log10(value)));
    for (const m of [1, 2, 5, 10]) if (m * step >= value) return m * step;
    return 10 * step;
  }

  // series: [{name, values: [number|null]}]; all share the x axis (one point per poll).
  function line(canvas, series, {unit = "", fixedMax = null} = {}) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    canvas.width = width * ratio; canvas.height = height * ratio;
    const ctx = canvas.getContext("2d");
    ctx.scale(ratio, ratio);
    ctx.clearRect(0, 0, width, height);
    const left = 48, right = 8, top = 22, bottom = 18;
    const plotW = width - left - right, plotH = height - top - bottom;
    const all = series.flatMap((s) => s.values).filter((v) => v !== null && Number.isFinite(v));
    const max = fixedMax ?? niceMax(Math.max(0, ...all));
    ctx.font = "11px sans-serif";
    ctx.strokeStyle = "#e2e8f0"; ctx.fillStyle = "#64748b"; ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + plotH - (plotH * i) / 4;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + plotW, y); ctx.stroke();
      ctx.fillText(formatNumber((max * i) / 4) + unit, 2, y + 4);
    }
    let legendX = left;
    series.forEach((s, index) => {
      const color = s.color || PALETTE[index % PALETTE.length];
      const n = s.values.length;
      ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
      let pen = false;
      s.values.forEach((v, i) => {
        if (v === null || !Number.isFinite(v)) { pen = false; return; }
        const x = left + (n <= 1 ? plotW : (plotW * i) / (n - 1));
        const y = top + plotH - (plotH * Math.min(v, max)) / max;
        if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
        pen = true;
      });
      ctx.stroke();
      const last = [...s.values].reverse().find((v) => v !== null && Number.isFinite(v));
      const label = `${s.name} ${last === undefined ? "–" : formatNumber(last) + unit}`;
      ctx.fillStyle = color; ctx.fillRect(legendX, 6, 10, 10);
      ctx.fillStyle = "#0f172a"; ctx.fillText(label, legendX + 14, 15);
      legendX += ctx.measureText(label).width + 30;
    });
  }

  // items: [{label, value}] signed; returns an <svg> with one <rect class="bar"> per item.
  function bars(items, {width = 420, rowHeight = 18} = {}) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    const labelW = 150, valueW = 56, plotW = width - labelW - valueW;
    const height = Math.max(1, items.length) * rowHeight + 4;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("width", width); svg.setAttribute("height", height);
    const maxAbs = Math.max(1e-12, ...items.map((item) => Math.abs(item.value)));
    const zero = labelW + plotW / 2;
    const axis = document.createElementNS(ns, "line");
    Object.entries({x1: zero, x2: zero, y1: 0, y2: height, stroke: "#94a3b8"}).forEach(([k, v]) => axis.setAttribute(k, v));
    svg.appendChild(axis);
    items.forEach((item, i) => {
      const y = i * rowHeight + 2;
      const w = (Math.abs(item.value) / maxAbs) * (plotW / 2);
      const rect = document.createElementNS(ns, "rect");
      rect.setAttribute("class", "bar");
      rect.setAttribute("data-label", item.label);
      rect.setAttribute("data-value", item.value);
      rect.setAttribute("x", item.value >= 0 ? zero : zero - w);
      rect.setAttribute("y", y); rect.setAttribute("width", Math.max(w, 1)); rect.setAttribute("height", rowHeight - 4);
      rect.setAttribute("fill", item.value >= 0 ? "#ef4444" : "#3b82f6");
      svg.appendChild(rect);
      const text = (x, content, anchor) => {
        const t = document.createElementNS(ns, "text");
        t.setAttribute("x", x); t.setAttribute("y", y + rowHeight - 7); t.setAttribute("font-size", "11");
        t.setAttribute("text-anchor", anchor); t.textContent = content; svg.appendChild(t);
      };
      text(labelW - 4, item.label.length > 24 ? item.label.slice(0, 23) + "…" : item.label, "end");
      text(width - 2, formatNumber(item.value), "end");
    });
    return svg;
  }

  function formatNumber(v) {
    const a = Math.abs(v);
    if (a >= 1000) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    if (a >= 0.01 || a === 0) return v.toFixed(2);
    return v.toExponential(1);
  }

  return {line, bars, formatNumber};
})();

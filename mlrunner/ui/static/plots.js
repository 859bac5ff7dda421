/* Plots: curves of a metric's histories (Plotly; mean +- std bands over a param such as
   seed), a scatter of a metric against a param (Plotly; log axes), and a parallel-
   coordinates plot drawn here on a canvas, whose brushes filter the table. */
(function () {
  "use strict";
  const MLR = window.MLR;
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  MLR.color = (i) => PALETTE[i % PALETTE.length];
  /* Plotly reads a few HTML tags and entities in its texts (names, titles, category
     labels): escaped, a value shows as it is. Numbers pass unchanged. */
  const T = (MLR.plotText = function (v) {
    return typeof v === "string" ? v.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;") : v;
  });
  const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["sendDataToCloud"] };

  /* Series of one metric grouped: by `colour` (legend) and, with `band`, mean/std over that
     param among series equal in every other param. */
  MLR.groupCurves = function (series, params, colour, band) {
    const groups = new Map();
    for (const s of series) {
      const key = JSON.stringify(params.filter((p) => p !== band).map((p) => s.params[p]));
      if (!groups.has(key)) groups.set(key, { params: s.params, members: [] });
      groups.get(key).members.push(s);
    }
    const out = [];
    for (const g of groups.values()) {
      const steps = new Map();
      for (const s of g.members)
        s.step.forEach((x, i) => {
          const v = s.value[i];
          if (v === null || v === undefined) return;
          if (!steps.has(x)) steps.set(x, []);
          steps.get(x).push(v);
        });
      const xs = Array.from(steps.keys()).sort((a, b) => a - b);
      const mean = [], std = [];
      for (const x of xs) {
        const v = steps.get(x);
        const m = v.reduce((a, b) => a + b, 0) / v.length;
        mean.push(m);
        std.push(v.length > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - m) * (b - m), 0) / (v.length - 1)) : 0);
      }
      const label = params.filter((p) => p !== band).map((p) => p + "=" + MLR.fmt(g.params[p])).join(", ") || "all";
      out.push({ label: label, colourValue: colour ? g.params[colour] : label, n: g.members.length, x: xs, mean: mean, std: std });
    }
    return out;
  };

  MLR.drawCurves = async function (node, series, params, metric, colour, band) {
    const Plotly = await MLR.loadPlotly();
    const groups = MLR.groupCurves(series, params, colour, band || null);
    const colours = new Map();
    const traces = [];
    const shown = new Set();
    for (const g of groups) {
      const ck = JSON.stringify(g.colourValue);
      if (!colours.has(ck)) colours.set(ck, MLR.color(colours.size));
      const c = colours.get(ck);
      const name = colour ? colour + "=" + MLR.fmt(g.colourValue) : g.label;
      if (band && g.n > 1) {
        const upper = g.mean.map((m, i) => m + g.std[i]), lower = g.mean.map((m, i) => m - g.std[i]);
        traces.push({ x: g.x.concat(g.x.slice().reverse()), y: upper.concat(lower.reverse()), fill: "toself", fillcolor: c, opacity: 0.18,
          line: { width: 0 }, hoverinfo: "skip", showlegend: false, type: "scatter", mode: "lines" }); // prettier-ignore
      }
      traces.push({ x: g.x, y: g.mean, type: "scatter", mode: "lines", line: { color: c, width: 1.6 }, name: T(name),
        legendgroup: name, showlegend: !shown.has(name), hovertext: T(g.label + (band && g.n > 1 ? " (mean of " + g.n + ")" : "")),
        hoverinfo: "x+y+text" }); // prettier-ignore
      shown.add(name);
    }
    const layout = { margin: { l: 56, r: 16, t: 28, b: 40 }, height: 340, title: { text: T(metric), font: { size: 13 } },
      xaxis: { title: { text: "step" } }, yaxis: { title: { text: T(metric) } }, legend: { font: { size: 11 } }, uirevision: metric }; // prettier-ignore
    await Plotly.react(node, traces, layout, CONFIG);
    node.dataset.traces = String(traces.length);
  };

  MLR.drawScatter = async function (node, rows, x, y, logx, logy) {
    const Plotly = await MLR.loadPlotly();
    const byStatus = new Map();
    for (const r of rows) {
      const s = r._status || "-";
      if (!byStatus.has(s)) byStatus.set(s, { x: [], y: [], text: [] });
      const t = byStatus.get(s);
      t.x.push(T(r[x]));
      t.y.push(T(r[y]));
      t.text.push(T(r._name));
    }
    const traces = Array.from(byStatus.entries()).map(([s, t], i) => ({ type: "scatter", mode: "markers", name: T(s), x: t.x, y: t.y,
      text: t.text, hoverinfo: "x+y+text", marker: { size: 6, opacity: 0.75, color: MLR.color(i) } })); // prettier-ignore
    const layout = { margin: { l: 56, r: 16, t: 28, b: 40 }, height: 340, title: { text: T(y + " vs " + x), font: { size: 13 } },
      xaxis: { title: { text: T(x) }, type: logx ? "log" : "-" }, yaxis: { title: { text: T(y) }, type: logy ? "log" : "-" } }; // prettier-ignore
    await Plotly.react(node, traces, layout, CONFIG);
    node.dataset.points = String(rows.length);
  };

  /* Parallel coordinates on a canvas. axes: keys of the rows; onBrush(set of rows | null). */
  function Parcoords(host, onBrush) {
    this.canvas = MLR.el("canvas", { class: "pc", "aria-label": "parallel coordinates" });
    host.append(this.canvas);
    this.onBrush = onBrush;
    this.brushes = {};
    this.rows = [];
    this.axes = [];
    this.canvas.addEventListener("mousedown", (e) => this.down(e));
    window.addEventListener("mousemove", (e) => this.move(e));
    window.addEventListener("mouseup", (e) => this.up(e));
  }
  Parcoords.prototype.set = function (rows, axes) {
    this.rows = rows;
    const keep = {};
    for (const k of axes) if (this.brushes[k]) keep[k] = this.brushes[k];
    this.brushes = keep;
    this.axes = axes.map((key) => {
      const vals = rows.map((r) => r[key]).filter((v) => v !== null && v !== undefined);
      const numeric = vals.length > 0 && vals.every((v) => typeof v === "number");
      if (numeric) {
        let lo = Math.min(...vals), hi = Math.max(...vals);
        if (lo === hi) { lo -= 1; hi += 1; } // prettier-ignore
        return { key: key, numeric: true, lo: lo, hi: hi };
      }
      const cats = Array.from(new Set(vals.map(MLR.fmt))).sort((a, b) => MLR.compare(a, b));
      return { key: key, numeric: false, cats: cats, index: new Map(cats.map((c, i) => [c, i])) };
    });
    this.draw();
  };
  Parcoords.prototype.frac = function (axis, v) {
    if (v === null || v === undefined) return null;
    if (axis.numeric) return typeof v === "number" ? (v - axis.lo) / (axis.hi - axis.lo) : null;
    const i = axis.index.get(MLR.fmt(v));
    return axis.cats.length < 2 ? 0.5 : i / (axis.cats.length - 1);
  };
  Parcoords.prototype.layout = function () {
    const w = Math.max(320, this.canvas.parentNode.clientWidth || 800), h = 300;
    const dpr = window.devicePixelRatio || 1;
    if (this.canvas.width !== w * dpr || this.canvas.height !== h * dpr) {
      this.canvas.width = w * dpr;
      this.canvas.height = h * dpr;
      this.canvas.style.width = w + "px";
      this.canvas.style.height = h + "px";
    }
    const n = this.axes.length;
    this.top = 34;
    this.bottom = h - 24;
    this.xs = this.axes.map((_, i) => (n < 2 ? w / 2 : 60 + (i * (w - 120)) / (n - 1)));
    return dpr;
  };
  Parcoords.prototype.y = function (f) {
    return this.bottom - f * (this.bottom - this.top);
  };
  Parcoords.prototype.selected = function (row) {
    for (const [key, [a, b]] of Object.entries(this.brushes)) {
      const axis = this.axes.find((x) => x.key === key);
      const f = axis ? this.frac(axis, row[key]) : null;
      if (f === null || f < a || f > b) return false;
    }
    return true;
  };
  Parcoords.prototype.draw = function () {
    const dpr = this.layout();
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    const brushing = Object.keys(this.brushes).length > 0;
    const on = [], off = [];
    for (const r of this.rows) (!brushing || this.selected(r) ? on : off).push(r);
    const line = (r) => {
      ctx.beginPath();
      let pen = false;
      this.axes.forEach((axis, i) => {
        const f = this.frac(axis, r[axis.key]);
        if (f === null) { pen = false; return; } // prettier-ignore
        const y = this.y(f);
        if (pen) ctx.lineTo(this.xs[i], y);
        else ctx.moveTo(this.xs[i], y);
        pen = true;
      });
      ctx.stroke();
    };
    ctx.lineWidth = 1;
    ctx.strokeStyle = "rgba(150,150,150,0.12)";
    off.forEach(line);
    ctx.strokeStyle = on.length > 2000 ? "rgba(31,119,180,0.15)" : "rgba(31,119,180,0.45)";
    on.forEach(line);
    ctx.fillStyle = "#222";
    ctx.font = "12px system-ui, sans-serif";
    ctx.textAlign = "center";
    this.axes.forEach((axis, i) => {
      const x = this.xs[i];
      ctx.strokeStyle = "#444";
      ctx.beginPath();
      ctx.moveTo(x, this.top);
      ctx.lineTo(x, this.bottom);
      ctx.stroke();
      ctx.fillStyle = "#222";
      ctx.fillText(axis.key.length > 22 ? axis.key.slice(0, 21) + "\u2026" : axis.key, x, 14);
      ctx.fillStyle = "#666";
      const ticks = axis.numeric ? [[0, axis.lo], [1, axis.hi]] : axis.cats.length <= 12 ? axis.cats.map((c, j) => [axis.cats.length < 2 ? 0.5 : j / (axis.cats.length - 1), c]) : [[0, axis.cats[0]], [1, axis.cats[axis.cats.length - 1]]]; // prettier-ignore
      ctx.textAlign = "left";
      for (const [f, label] of ticks) {
        const t = MLR.fmt(label);
        ctx.fillText(t.length > 14 ? t.slice(0, 13) + "\u2026" : t, x + 4, this.y(f) + 4);
      }
      ctx.textAlign = "center";
      const b = this.brushes[axis.key];
      if (b) {
        ctx.fillStyle = "rgba(255,160,0,0.30)";
        ctx.fillRect(x - 8, this.y(b[1]), 16, this.y(b[0]) - this.y(b[1]));
      }
    });
    this.canvas.dataset.lines = String(this.rows.length);
    this.canvas.dataset.selected = String(brushing ? on.length : this.rows.length);
    return on;
  };
  Parcoords.prototype.axisAt = function (e) {
    const rect = this.canvas.getBoundingClientRect();
    const x = e.clientX - rect.left, y = e.clientY - rect.top;
    for (let i = 0; i < this.xs.length; i++) if (Math.abs(this.xs[i] - x) < 14) return { i: i, y: y };
    return null;
  };
  Parcoords.prototype.fracAt = function (y) {
    return Math.min(1, Math.max(0, (this.bottom - y) / (this.bottom - this.top)));
  };
  Parcoords.prototype.down = function (e) {
    const hit = this.axisAt(e);
    if (!hit) return;
    e.preventDefault();
    this.drag = { key: this.axes[hit.i].key, from: this.fracAt(hit.y), moved: false };
  };
  Parcoords.prototype.move = function (e) {
    if (!this.drag) return;
    const rect = this.canvas.getBoundingClientRect();
    const f = this.fracAt(e.clientY - rect.top);
    if (Math.abs(f - this.drag.from) > 0.01) this.drag.moved = true;
    if (this.drag.moved) {
      this.brushes[this.drag.key] = [Math.min(f, this.drag.from), Math.max(f, this.drag.from)];
      this.draw();
    }
  };
  Parcoords.prototype.up = function () {
    if (!this.drag) return;
    if (!this.drag.moved) delete this.brushes[this.drag.key]; /* a click clears that axis */
    this.drag = null;
    const on = this.draw();
    this.onBrush(Object.keys(this.brushes).length ? new Set(on) : null);
  };
  Parcoords.prototype.clear = function () {
    this.brushes = {};
    this.draw();
    this.onBrush(null);
  };
  MLR.Parcoords = Parcoords;
})();

/* The experiments table (params that vary, metric summaries, ledger columns; sort, filter
   by text and by param values, a summary per metric) and its plots: curves, parallel
   coordinates (brushing filters the table), scatter. */
(function () {
  "use strict";
  const MLR = window.MLR;
  const el = MLR.el;
  const LEDGER = [["_status", "status"], ["_git_commit", "commit"], ["_duration_s", "duration"], ["_resource", "gpu"],
    ["_started_at", "started"], ["_attempts", "attempts"], ["_steps", "steps"]]; // prettier-ignore
  const MAX_LINES = 400;

  function select(label, options, value, onchange, extra) {
    const s = el("select", Object.assign({ "aria-label": label, onchange: (e) => onchange(e.target.value) }, extra || {}),
      options.map(([v, t]) => el("option", { value: v, text: t }))); // prettier-ignore
    s.value = value;
    return el("label", { class: "ctl" }, el("span", { text: label }), s);
  }

  function ledgerCell(key, row) {
    const v = row[key];
    if (key === "_status") return MLR.badge(v);
    if (key === "_git_commit") return v ? String(v).slice(0, 10) + (row._git_dirty ? "*" : "") : "";
    if (key === "_duration_s") return MLR.duration(v);
    if (key === "_started_at") return MLR.time(v);
    return MLR.fmt(v);
  }

  MLR.pages.experiments = async function (app) {
    document.title = "Experiments - mlrunner";
    const summary = {};
    let meta = null, rows = [], curveCache = {};
    const picked = new Set();
    const filters = {};
    let text = "";
    const controls = el("div", { class: "controls" });
    const count = el("span", { class: "count", role: "status" });
    const compareBtn = el("button", { type: "button", text: "Compare 2 selected", disabled: true,
      onclick: () => { const [a, b] = Array.from(picked); MLR.go("/compare?a=" + encodeURIComponent(a) + "&b=" + encodeURIComponent(b)); } }); // prettier-ignore
    const tableHost = el("div", { class: "exp-table" });
    const curvesBox = el("div", { class: "plot", id: "curves" }), curveCtl = el("div", { class: "controls" });
    const pcBox = el("div", { class: "pc-box" }), pcCtl = el("div", { class: "controls" });
    const scBox = el("div", { class: "plot", id: "scatter" }), scCtl = el("div", { class: "controls" });
    const problems = el("div");
    app.append(el("h1", { text: "Experiments" }), problems, controls, el("div", { class: "bar-line" }, count, compareBtn), tableHost,
      MLR.section("Curves", curveCtl, curvesBox), MLR.section("Parallel coordinates (drag on an axis to filter; click it to clear)", pcCtl, pcBox),
      MLR.section("Scatter", scCtl, scBox)); // prettier-ignore
    let table = null;
    const pc = new MLR.Parcoords(pcBox, () => refresh());
    const plot = { metric: null, colour: null, band: null, pcMetric: null, x: null, y: null, logx: false, logy: false };

    let retries = 0;
    const load = async function () {
      const q = Object.entries(summary).filter(([, k]) => k).map(([m, k]) => "summary=" + encodeURIComponent(m + "=" + k)).join("&");
      const [m, r] = await Promise.all([MLR.api("/api/columns" + (q ? "?" + q : "")), MLR.api("/api/experiments" + (q ? "?" + q : ""))]);
      meta = m;
      rows = r;
      build();
      /* A table kept from a while ago is shown at once while the server examines the dirs
         again: ask once more for the new one. */
      if (MLR.mode === "server" && meta.stale && retries++ < 5) MLR.timers.push(setTimeout(() => load().catch(showError), 1500));
    };

    function columns() {
      const cols = [{ key: "_pick", label: "", width: 30, nosort: true, render: (r) => el("input", { type: "checkbox", "aria-label": "select " + r._name, checked: picked.has(r._name),
        onchange: (e) => { if (e.target.checked) picked.add(r._name); else picked.delete(r._name); compareBtn.disabled = picked.size !== 2; } }) }]; // prettier-ignore
      cols.push({ key: "_name", label: "name", width: MLR.widthOf("name", rows.map((r) => r._name)), render: (r) => MLR.link(MLR.expPath(r._name), r._name) });
      for (const k of meta.params.concat(meta.metrics)) cols.push({ key: k, label: k, width: MLR.widthOf(k, rows.map((r) => r[k])), cls: meta.metrics.includes(k) ? "num" : "" });
      for (const [k, label] of LEDGER) if (meta.ledger.includes(k)) cols.push({ key: k, label: label, width: k === "_started_at" ? 150 : k === "_git_commit" ? 112 : 96, render: (r) => ledgerCell(k, r) });
      return cols;
    }

    function build() {
      MLR.clear(problems).append(...(meta.errors || []).slice(0, 5).map((e) => el("div", { class: "warn", text: e })));
      MLR.clear(controls);
      const search = el("input", { type: "search", placeholder: "filter: any text", "aria-label": "filter", value: text });
      search.addEventListener("input", () => { text = search.value.toLowerCase(); refresh(); }); // prettier-ignore
      controls.append(search);
      for (const p of meta.params) {
        const vals = Array.from(new Set(rows.map((r) => MLR.fmt(r[p])))).sort(MLR.compare).slice(0, 500);
        controls.append(select(p, [["", "all"]].concat(vals.map((v) => [v, v])), filters[p] || "", (v) => { filters[p] = v; refresh(); }, { "data-param": p })); // prettier-ignore
      }
      for (const m of meta.history_metrics.filter((x) => meta.metrics.includes(x))) {
        const kinds = [["", "last"]].concat(meta.summary_kinds.filter((k) => k !== "last").map((k) => [k, k]));
        controls.append(select(m + " summary", kinds, summary[m] || "", (v) => { summary[m] = v; load().catch(showError); }, { disabled: MLR.mode === "report", "data-summary": m })); // prettier-ignore
      }
      const numeric = meta.metrics.filter((k) => rows.some((r) => typeof r[k] === "number"));
      const lossy = (list) => list.find((m) => /loss/i.test(m)) || list[0] || null;
      plot.metric = meta.history_metrics.includes(plot.metric) ? plot.metric : lossy(meta.history_metrics);
      if (plot.band === null) plot.band = meta.params.includes("seed") ? "seed" : "";
      if (plot.colour === null) plot.colour = meta.params.find((p) => p !== plot.band) || "";
      plot.pcMetric = numeric.includes(plot.pcMetric) ? plot.pcMetric : lossy(numeric);
      plot.x = plot.x || meta.params[0] || numeric[0] || null;
      plot.y = numeric.includes(plot.y) ? plot.y : lossy(numeric);
      const paramOpts = [["", "none"]].concat(meta.params.map((p) => [p, p]));
      MLR.clear(curveCtl).append(
        select("metric", meta.history_metrics.map((m) => [m, m]), plot.metric || "", (v) => { plot.metric = v; drawCurves(); }),
        select("colour by", paramOpts, plot.colour, (v) => { plot.colour = v; drawCurves(); }),
        select("band (mean \u00b1 std) over", paramOpts, plot.band, (v) => { plot.band = v; drawCurves(); })); // prettier-ignore
      MLR.clear(pcCtl).append(select("metric", numeric.map((m) => [m, m]), plot.pcMetric || "", (v) => { plot.pcMetric = v; refresh(); }),
        el("button", { type: "button", text: "Clear brushes", onclick: () => pc.clear() })); // prettier-ignore
      const axisOpts = meta.params.concat(numeric).map((k) => [k, k]);
      const box = (label, key) => el("label", { class: "ctl" }, el("input", { type: "checkbox", checked: plot[key], onchange: (e) => { plot[key] = e.target.checked; drawScatter(); } }), el("span", { text: label })); // prettier-ignore
      MLR.clear(scCtl).append(select("x", axisOpts, plot.x || "", (v) => { plot.x = v; drawScatter(); }),
        select("y", numeric.map((m) => [m, m]), plot.y || "", (v) => { plot.y = v; drawScatter(); }), box("log x", "logx"), box("log y", "logy")); // prettier-ignore
      const cols = columns();
      if (!table) table = new MLR.VTable(tableHost, cols, { height: "60vh", rowData: (r) => ({ name: r._name }) });
      else table.setColumns(cols);
      curveCache = {};
      refresh();
    }

    let visible = [];
    let timer = null, pcTimer = null;
    function refresh() {
      if (text && rows.length && rows[0]._text === undefined)
        for (const row of rows) row._text = Object.values(row).map(MLR.fmt).join("\u0001").toLowerCase();
      const base = rows.filter((r) => (!text || r._text.includes(text)) && Object.entries(filters).every(([p, v]) => !v || MLR.fmt(r[p]) === v));
      const axes = meta.params.concat(plot.pcMetric ? [plot.pcMetric] : []);
      if (Object.keys(pc.brushes).length > 0) {
        pc.set(base, axes);
        visible = base.filter((r) => pc.selected(r));
      } else {
        visible = base;
        clearTimeout(pcTimer);
        pcTimer = setTimeout(() => pc.set(base, axes), 0); /* the table first, then the lines */
      }
      table.setRows(visible);
      count.textContent = visible.length + " of " + rows.length + " experiments";
      if (meta.as_of) count.title = "table as of " + new Date(meta.as_of * 1000).toLocaleTimeString();
      count.dataset.shown = String(visible.length);
      clearTimeout(timer);
      timer = setTimeout(() => { drawCurves(); drawScatter(); }, 250); // prettier-ignore
    }

    async function drawCurves() {
      if (!plot.metric) {
        MLR.clear(curvesBox).append(el("p", { class: "muted", text: "No history (metrics.jsonl, TensorBoard or a regex with history) to plot." }));
        return;
      }
      try {
        const metric = plot.metric;
        if (!curveCache[metric]) curveCache[metric] = await MLR.api("/api/curves?metric=" + encodeURIComponent(metric));
        const names = new Set(visible.map((r) => r._name));
        let series = curveCache[metric].series.filter((s) => names.has(s.name));
        const note = series.length > MAX_LINES && !plot.band ? "showing " + MAX_LINES + " of " + series.length + " curves: choose a band to aggregate" : "";
        if (note) series = series.slice(0, MAX_LINES);
        await MLR.drawCurves(curvesBox, series, curveCache[metric].params, metric, plot.colour, plot.band);
        curvesBox.dataset.note = note;
      } catch (e) {
        MLR.clear(curvesBox).append(MLR.errorBox(e));
      }
    }
    async function drawScatter() {
      if (!plot.x || !plot.y) return;
      try {
        await MLR.drawScatter(scBox, visible, plot.x, plot.y, plot.logx, plot.logy);
      } catch (e) {
        MLR.clear(scBox).append(MLR.errorBox(e));
      }
    }
    function showError(e) {
      MLR.clear(problems).append(MLR.errorBox(e));
    }
    await load();
  };
})();

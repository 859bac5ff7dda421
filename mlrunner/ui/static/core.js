/* mlrunner ui: shared helpers. Every text from the data goes in with textContent (never
   innerHTML), so a param value or a log line is shown, never run. */
(function () {
  "use strict";
  const MLR = (window.MLR = window.MLR || {});
  const body = document.body;
  MLR.mode = body.dataset.mode || "server";
  MLR.report = null;
  if (MLR.mode === "report") {
    MLR.report = JSON.parse(document.getElementById("mlr-data").textContent);
  }
  MLR.pages = {};
  MLR.timers = [];

  /* el("a", {class: "x", text: "y", href: "/z", onclick: fn}, child, ...) */
  MLR.el = function (tag, props, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k === "value") node.value = v;
      else if (k === "checked") node.checked = !!v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return node;
  };
  MLR.clear = function (node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  };

  MLR.fmt = function (v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return String(v);
      const a = Math.abs(v);
      return a !== 0 && (a < 1e-4 || a >= 1e6) ? v.toExponential(4) : String(+v.toPrecision(6));
    }
    if (typeof v === "string") return v;
    if (typeof v === "boolean") return v ? "true" : "false";
    return JSON.stringify(v);
  };
  MLR.duration = function (s) {
    if (s === null || s === undefined || !isFinite(s)) return "";
    s = Math.max(0, Math.round(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (h) return h + "h" + String(m).padStart(2, "0") + "m" + String(r).padStart(2, "0") + "s";
    if (m) return m + "m" + String(r).padStart(2, "0") + "s";
    return r + "s";
  };
  MLR.time = function (iso) {
    if (!iso) return "";
    if (typeof iso === "number") iso = new Date(iso * 1000).toISOString();
    return String(iso).replace("T", " ").slice(0, 19);
  };
  MLR.epoch = function (iso) {
    if (iso === null || iso === undefined) return null;
    return typeof iso === "number" ? iso : Date.parse(iso) / 1000;
  };
  MLR.badge = function (status) {
    return MLR.el("span", { class: "badge st-" + String(status || "none").replace(/[^a-z_-]/g, ""), text: status || "-" });
  };

  /* Navigation: real URLs on the server, #/path in the report (a file has no server). */
  MLR.href = function (path) {
    return MLR.mode === "report" ? "#" + path : path;
  };
  MLR.link = function (path, text, cls) {
    return MLR.el("a", { href: MLR.href(path), text: text, class: cls, "data-nav": path });
  };
  MLR.route = function () {
    if (MLR.mode === "report") return location.hash.slice(1) || "/";
    return location.pathname + location.search;
  };
  MLR.go = function (path) {
    if (MLR.mode === "report") {
      location.hash = path;
      return;
    }
    history.pushState(null, "", path);
    MLR.render();
  };
  MLR.every = function (ms, fn) {
    MLR.timers.push(setInterval(fn, ms));
  };
  MLR.expPath = function (name) {
    return "/experiments/" + encodeURIComponent(name);
  };

  MLR.api = async function (path, opts) {
    if (MLR.mode === "report") return MLR.reportApi(path);
    const res = await fetch(path, Object.assign({ cache: "no-store" }, opts || {}));
    if (!res.ok) {
      let message = res.status + " " + res.statusText;
      try {
        message = (await res.json()).error || message;
      } catch (e) {
        /* not JSON */
      }
      const err = new Error(message);
      err.status = res.status;
      throw err;
    }
    return res.json();
  };
  function notFound(what) {
    const err = new Error(what + " is not in this report");
    err.status = 404;
    throw err;
  }
  MLR.reportApi = async function (path) {
    const d = MLR.report;
    const u = new URL(path, "http://report.invalid/");
    const parts = u.pathname.split("/").slice(2).map(decodeURIComponent);
    const q = u.searchParams;
    if (parts[0] === "runs" && parts.length === 1) return d.runs;
    if (parts[0] === "runs" && parts.length === 2) return d.run_docs[parts[1]] || notFound("run " + parts[1]);
    if (parts[0] === "runs" && parts[2] === "attempts") return d.attempts[parts[1]] || notFound("run " + parts[1]);
    if (parts[0] === "experiments" && parts.length === 1) return d.rows;
    if (parts[0] === "columns") return d.columns;
    if (parts[0] === "curves") return d.curves[q.get("metric")] || notFound("metric " + q.get("metric"));
    if (parts[0] === "experiments" && parts.length === 2) return MLR.reportDetail(parts[1]);
    if (parts[0] === "compare") return MLR.diffDetails(MLR.reportDetail(q.get("a")), MLR.reportDetail(q.get("b")));
    return notFound(path);
  };
  MLR.reportDetail = function (name) {
    const d = MLR.report;
    const det = Object.prototype.hasOwnProperty.call(d.details, name) ? d.details[name] : null;
    if (!det) notFound("experiment " + name);
    const patch = det.patch_ref ? d.patches[det.patch_ref] : null;
    return Object.assign({}, det, {
      env: det.env_ref ? d.envs[det.env_ref] : null,
      patch: patch ? patch.text : null,
      patch_truncated: patch ? patch.truncated : false,
    });
  };

  /* What `mlrunner diff` shows, from two details (the report has no server to ask). */
  MLR.diffDetails = function (a, b) {
    const out = { experiments: [a.name, b.name] };
    const differ = function (x, y) {
      const keys = Array.from(new Set(Object.keys(x || {}).concat(Object.keys(y || {})))).sort();
      const d = {};
      for (const k of keys) {
        const va = x && k in x ? x[k] : null, vb = y && k in y ? y[k] : null;
        if (JSON.stringify(va) !== JSON.stringify(vb)) d[k] = [va, vb];
      }
      return Object.keys(d).length ? d : null;
    };
    const strip = function (cmds) {
      const o = {};
      for (const [k, v] of Object.entries(cmds || {}))
        o[k] = String(v).replace(/^CUDA_VISIBLE_DEVICES=\S*\s+/, "").replace(/\s*>\s*\S+\s+2>&1\s*$/, "");
      return o;
    };
    const params = differ(a.params, b.params);
    if (params) out.params = params;
    const commands = differ(strip(a.commands), strip(b.commands));
    if (commands) out.commands = commands;
    const metrics = differ(a.metrics, b.metrics);
    if (metrics) out.metrics = metrics;
    const ga = (a.git || {}).tree || (a.git || {}).commit, gb = (b.git || {}).tree || (b.git || {}).commit;
    if (ga !== gb || a.patch !== b.patch)
      out.code = { files: null, error: "the code differs; its file-by-file diff needs the server (mlrunner ui)" };
    const ea = a.env || {}, eb = b.env || {};
    const env = {};
    const pk = differ(ea.packages, eb.packages);
    if (pk) env.packages = pk;
    for (const k of ["python", "platform", "gpus", "driver", "cpu", "host"]) {
      if (JSON.stringify(ea[k]) !== JSON.stringify(eb[k])) env[k] = [ea[k], eb[k]];
    }
    if (Object.keys(env).length) out.env = env;
    return out;
  };

  let plotly = null;
  MLR.loadPlotly = function () {
    if (window.Plotly) return Promise.resolve(window.Plotly);
    if (!plotly) {
      plotly = new Promise(function (resolve, reject) {
        const s = document.createElement("script");
        s.src = body.dataset.plotly;
        s.onload = function () {
          resolve(window.Plotly);
        };
        s.onerror = function () {
          reject(new Error("Plotly.js could not be loaded from " + s.src));
        };
        document.head.append(s);
      });
    }
    return plotly;
  };

  MLR.section = function (title, ...kids) {
    return MLR.el("section", { class: "card" }, MLR.el("h2", { text: title }), ...kids);
  };
  MLR.kv = function (obj, opts) {
    const rows = Object.entries(obj || {}).map(function ([k, v]) {
      return MLR.el("tr", {}, MLR.el("th", { text: k }), MLR.el("td", { class: "mono", text: MLR.fmt(v) }));
    });
    return rows.length ? MLR.el("table", { class: "kv" }, MLR.el("tbody", {}, rows)) : MLR.el("p", { class: "muted", text: (opts && opts.empty) || "none" });
  };
  MLR.errorBox = function (err) {
    return MLR.el("div", { class: "error", role: "alert", text: String((err && err.message) || err) });
  };
})();

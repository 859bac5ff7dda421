/* An experiment's detail (params, commands, attempts, log tailed live, git snapshot,
   environment) and the comparison of two experiments (`mlrunner diff`, side by side). */
(function () {
  "use strict";
  const MLR = window.MLR;
  const el = MLR.el;
  const TAIL = 256 * 1024;

  function attemptsTable(attempts) {
    const head = ["#", "status", "exit", "signal", "gpu", "started", "ended", "duration", "failure", "run"];
    return el("table", { class: "grid" },
      el("thead", {}, el("tr", {}, head.map((h) => el("th", { text: h })))),
      el("tbody", {}, attempts.map((a) => el("tr", {},
        el("td", { text: a.number }), el("td", {}, MLR.badge(a.status)), el("td", { text: MLR.fmt(a.exit_code) }),
        el("td", { text: MLR.fmt(a.signal) }), el("td", { text: MLR.fmt(a.resource) }), el("td", { text: MLR.time(a.started_at) }),
        el("td", { text: MLR.time(a.ended_at) }), el("td", { text: a.ended_at ? MLR.duration(a.ended_at - a.started_at) : "" }),
        el("td", { text: MLR.fmt(a.failure_class) }), el("td", {}, a.run_id ? MLR.link("/runs/" + a.run_id, "#" + a.run_id) : ""))))); // prettier-ignore
  }

  function patchFiles(patch) {
    const files = [];
    let cur = null;
    for (const line of (patch || "").split("\n")) {
      const m = /^diff --git a\/(.*) b\/(.*)$/.exec(line);
      if (m) files.push((cur = { path: m[2], status: "M" }));
      else if (cur && line.startsWith("new file mode")) cur.status = "A (new or untracked)";
      else if (cur && line.startsWith("deleted file mode")) cur.status = "D";
    }
    return files;
  }

  /* The log of one command: its last 256 KiB, then what it appends while it runs. */
  function logView(name, command, running, reportTail) {
    const pre = el("pre", { class: "log", "data-command": command });
    const note = el("p", { class: "muted" });
    const box = el("div", {}, note, pre);
    if (reportTail) {
      note.textContent = reportTail.name + (reportTail.start ? " (its last " + (reportTail.size - reportTail.start) + " of " + reportTail.size + " bytes)" : "");
      pre.textContent = reportTail.text;
      return box;
    }
    let end = null;
    const url = "/api/experiments/" + encodeURIComponent(name) + "/log/" + encodeURIComponent(command);
    const fetchPart = async function () {
      const res = await fetch(url + (end === null ? "?tail=" + TAIL : "?offset=" + end), { cache: "no-store" });
      if (!res.ok) {
        let msg = res.status + "";
        try { msg = (await res.json()).error; } catch (e) { /* not JSON */ } // prettier-ignore
        note.textContent = msg;
        return;
      }
      const text = await res.text();
      const start = +res.headers.get("X-Log-Start"), size = +res.headers.get("X-Log-Size");
      if (end === null) {
        note.textContent = res.headers.get("X-Log-Name") + (start > 0 ? " (its last " + (size - start) + " of " + size + " bytes)" : "") + (running ? " \u00b7 live" : "");
        pre.textContent = text;
      } else if (text) {
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.append(document.createTextNode(text));
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      }
      end = +res.headers.get("X-Log-End");
    };
    fetchPart().then(() => (pre.scrollTop = pre.scrollHeight)).catch((e) => (note.textContent = String(e.message || e)));
    if (running) MLR.every(2000, () => fetchPart().catch(() => {}));
    return box;
  }

  MLR.pages.detail = async function (app, name) {
    document.title = name + " - mlrunner";
    const d = await MLR.api("/api/experiments/" + encodeURIComponent(name));
    const other = el("input", { type: "text", placeholder: "another experiment", "aria-label": "compare with", list: "mlr-names" });
    const cmp = el("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); if (other.value) MLR.go("/compare?a=" + encodeURIComponent(name) + "&b=" + encodeURIComponent(other.value)); } },
      other, el("button", { type: "submit", text: "Compare" })); // prettier-ignore
    app.append(el("h1", { class: "mono", text: d.name }), cmp);
    MLR.api("/api/experiments").then((rows) => {
      app.append(el("datalist", { id: "mlr-names" }, rows.slice(0, 5000).map((r) => el("option", { value: r._name }))));
    }).catch(() => {});
    app.append(MLR.section("Params", MLR.kv(d.params)));
    const commands = d.command_names || Object.keys(d.commands || {});
    app.append(MLR.section("Commands", commands.map((c) => el("div", { class: "cmd" }, el("h3", { text: c }),
      el("pre", { class: "mono small", text: (d.commands || {})[c] || "(not recorded)" }),
      (d.attempts || {})[c] ? attemptsTable(d.attempts[c]) : el("p", { class: "muted", text: "no attempt in the ledger" }))))); // prettier-ignore
    const metrics = {};
    for (const [k, v] of Object.entries(d.metrics || {})) if (v !== null && v !== undefined) metrics[k] = v;
    app.append(MLR.section("Metrics and ledger", MLR.kv(metrics)));
    const logBox = el("div");
    const pick = el("select", { "aria-label": "log of command" }, commands.map((c) => el("option", { value: c, text: c })));
    const showLog = function () {
      MLR.timers.splice(0).forEach(clearInterval);
      const c = pick.value;
      const attempts = (d.attempts || {})[c] || [];
      const running = attempts.length > 0 && attempts[attempts.length - 1].status === "running";
      MLR.clear(logBox).append(logView(d.name, c, running, MLR.mode === "report" ? (d.log_tails || {})[c] || { name: "no log in this report", text: "", start: 0, size: 0 } : null));
    };
    pick.addEventListener("change", showLog);
    app.append(MLR.section("Log", commands.length ? pick : el("p", { class: "muted", text: "no command" }), logBox));
    if (commands.length) showLog();
    const g = d.git || { error: "no git snapshot recorded (git.json) in this experiment" };
    const files = patchFiles(d.patch);
    app.append(MLR.section("Code (git snapshot)",
      g.error ? MLR.errorBox(g.error) : MLR.kv({ commit: g.commit, branch: g.branch, dirty: g.dirty, snapshot: g.snapshot_id, changes: g.changes, repo: g.repo_root, subdir: g.subdir }),
      files.length ? el("table", { class: "grid" }, el("tbody", {}, files.map((f) => el("tr", {}, el("td", { text: f.status }), el("td", { class: "mono", text: f.path }))))) : null,
      d.patch ? el("details", {}, el("summary", { text: "the patch" + (d.patch_truncated ? " (its first 2 MiB)" : "") }), el("pre", { class: "log", text: d.patch })) : el("p", { class: "muted", text: "no uncommitted change" }))); // prettier-ignore
    const env = d.env || {};
    const plain = {};
    for (const [k, v] of Object.entries(env)) if (k !== "packages") plain[k] = v;
    app.append(MLR.section("Environment", MLR.kv(plain, { empty: "no env.json" }),
      env.packages ? el("details", {}, el("summary", { text: Object.keys(env.packages).length + " packages" }), MLR.kv(env.packages)) : null)); // prettier-ignore
  };

  function side(title, pairs, pre) {
    const keys = Object.keys(pairs || {});
    if (!keys.length) return null;
    return MLR.section(title, el("table", { class: "grid cmp" }, el("tbody", {}, keys.map((k) => el("tr", {},
      el("th", { text: k }), ...pairs[k].map((v) => el("td", {}, pre ? el("pre", { class: "mono small", text: MLR.fmt(v) }) : el("span", { class: "mono", text: v === null ? "(none)" : MLR.fmt(v) }))))))));  // prettier-ignore
  }

  MLR.pages.compare = async function (app, query) {
    document.title = "Compare - mlrunner";
    const a = query.get("a") || "", b = query.get("b") || "";
    const ia = el("input", { type: "text", value: a, "aria-label": "experiment a" });
    const ib = el("input", { type: "text", value: b, "aria-label": "experiment b" });
    app.append(el("h1", { text: "Compare" }), el("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); MLR.go("/compare?a=" + encodeURIComponent(ia.value) + "&b=" + encodeURIComponent(ib.value)); } },
      ia, ib, el("button", { type: "submit", text: "Compare" }))); // prettier-ignore
    if (!a || !b) return;
    const doc = await MLR.api("/api/compare?a=" + encodeURIComponent(a) + "&b=" + encodeURIComponent(b));
    const [na, nb] = doc.experiments;
    app.append(el("table", { class: "grid cmp" }, el("thead", {}, el("tr", {}, el("th", { text: "" }),
      el("th", {}, MLR.link(MLR.expPath(na), na)), el("th", {}, MLR.link(MLR.expPath(nb), nb)))))); // prettier-ignore
    const parts = [side("Params", doc.params), side("Commands", doc.commands, true), side("Metrics", doc.metrics)];
    if (doc.env) {
      const env = Object.assign({}, doc.env);
      const pk = env.packages || {};
      delete env.packages;
      const flat = {};
      for (const [k, v] of Object.entries(env)) flat[k] = Array.isArray(v) ? v : [v, v];
      for (const [k, v] of Object.entries(pk)) flat["package " + k] = v;
      parts.push(side("Environment", flat));
    }
    if (doc.code) {
      const c = doc.code;
      parts.push(MLR.section("Code", c.error ? el("p", { class: "muted", text: c.error }) : el("table", { class: "grid" }, el("tbody", {}, (c.files || []).map((f) => el("tr", {}, el("td", { text: f.status }), el("td", { class: "mono", text: f.path }))))),
        c.patch ? el("pre", { class: "log", text: c.patch }) : null)); // prettier-ignore
    }
    const shown = parts.filter(Boolean);
    app.append(...(shown.length ? shown : [el("p", { class: "muted", text: "No difference in params, commands, code, environment or metrics." })]));
  };
})();

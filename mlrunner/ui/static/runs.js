/* The runs page (`mlrunner ledger ls`) and a run's live board: progress and ETA, every
   command's status, a per-slot timeline of attempts, failures with their log tails. It
   polls the ledger every 2 s while the run goes on. */
(function () {
  "use strict";
  const MLR = window.MLR;
  const el = MLR.el;
  const STATUS_COLOURS = { finished: "#2e9d4f", failed: "#d3302f", running: "#2f6fd3", interrupted: "#e08a00",
    lost: "#a0522d", timeout: "#b0306f", oom: "#8e24aa", node_fail: "#6d4c41", cancelled: "#9e9e9e", preempted: "#ff9800" }; // prettier-ignore

  function runDuration(r) {
    const a = MLR.epoch(r.started_at), b = MLR.epoch(r.finished_at);
    if (a === null) return "";
    return MLR.duration((b === null ? Date.now() / 1000 : b) - a);
  }

  MLR.pages.runs = async function (app) {
    document.title = "Runs - mlrunner";
    const host = el("div");
    app.append(el("h1", { text: "Runs" }), host);
    const columns = [
      { key: "id", label: "run", width: 64, render: (r) => MLR.link("/runs/" + r.id, "#" + r.id), sort: (r) => r.id },
      { key: "started_at", label: "started", width: 160, render: (r) => MLR.time(r.started_at) },
      { key: "status", label: "status", width: 110, render: (r) => MLR.badge(r.status) },
      { key: "git_commit", label: "commit", width: 110, cls: "mono", render: (r) => (r.git_commit || "-").slice(0, 10) + (r.git_dirty ? "*" : "") },
      { key: "n_finished", label: "finished", width: 80 },
      { key: "n_failed", label: "failed", width: 70 },
      { key: "n_tasks", label: "tasks", width: 70 },
      { key: "n_commands_finished", label: "commands", width: 100, render: (r) => r.n_commands_finished + " / " + r.n_commands },
      { key: "duration", label: "duration", width: 100, render: runDuration, sort: (r) => (MLR.epoch(r.finished_at) || Date.now() / 1000) - MLR.epoch(r.started_at) },
      { key: "host", label: "host", width: 140 },
      { key: "params_path", label: "params", width: 260 },
    ]; // prettier-ignore
    const table = new MLR.VTable(host, columns, { sortKey: null, height: "70vh", rowData: (r) => ({ run: r.id }) });
    const load = async function () {
      const runs = await MLR.api("/api/runs");
      table.setRows(runs.slice().reverse());
      if (!runs.length) host.dataset.empty = "1";
    };
    await load();
    if (MLR.mode === "server") MLR.every(3000, () => load().catch(() => {}));
  };

  /* The timeline: one lane per slot (resource), a bar per attempt coloured by its status. */
  function drawGantt(canvas, tip, attempts, now) {
    const lanes = Array.from(new Set(attempts.map((a) => a.resource || "-"))).sort(MLR.compare);
    const w = Math.max(400, canvas.parentNode.clientWidth || 800), laneH = 22, top = 6, left = 90;
    const h = top + lanes.length * laneH + 22;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = w * dpr;
    canvas.height = h * dpr;
    canvas.style.width = w + "px";
    canvas.style.height = h + "px";
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    if (!attempts.length) return;
    const t0 = Math.min(...attempts.map((a) => a.started_at));
    const t1 = Math.max(now, ...attempts.map((a) => a.ended_at || now));
    const span = Math.max(1, t1 - t0);
    const X = (t) => left + ((t - t0) / span) * (w - left - 10);
    ctx.font = "12px system-ui, sans-serif";
    const boxes = [];
    lanes.forEach((lane, i) => {
      const y = top + i * laneH;
      ctx.fillStyle = i % 2 ? "#f6f7f9" : "#fff";
      ctx.fillRect(0, y, w, laneH);
      ctx.fillStyle = "#333";
      ctx.fillText("slot " + (lane.length > 9 ? lane.slice(0, 8) + "\u2026" : lane), 6, y + 15);
    });
    for (const a of attempts) {
      const i = lanes.indexOf(a.resource || "-");
      const x0 = X(a.started_at), x1 = Math.max(x0 + 2, X(a.ended_at || now));
      const y = top + i * laneH + 3;
      ctx.fillStyle = STATUS_COLOURS[a.status] || "#888";
      ctx.fillRect(x0, y, x1 - x0 - 1, laneH - 6);
      boxes.push([x0, y, x1, y + laneH - 6, a]);
    }
    ctx.fillStyle = "#666";
    ctx.fillText(MLR.time(new Date(t0 * 1000).toISOString()) + " UTC", left, h - 6);
    ctx.textAlign = "right";
    ctx.fillText("+" + MLR.duration(span), w - 10, h - 6);
    ctx.textAlign = "left";
    canvas.dataset.bars = String(boxes.length);
    canvas.onmousemove = function (e) {
      const r = canvas.getBoundingClientRect();
      const x = e.clientX - r.left, y = e.clientY - r.top;
      const hit = boxes.find((b) => x >= b[0] && x <= b[2] && y >= b[1] && y <= b[3]);
      tip.hidden = !hit;
      if (hit) {
        const a = hit[4];
        tip.textContent = a.name + " / " + a.command + " #" + a.number + ": " + a.status +
          (a.exit_code !== null && a.exit_code !== undefined ? " (exit " + a.exit_code + ")" : "") +
          ", " + MLR.duration((a.ended_at || now) - a.started_at); // prettier-ignore
        tip.style.left = x + 12 + "px";
        tip.style.top = y + 12 + "px";
      }
    };
    canvas.onmouseleave = () => (tip.hidden = true);
  }

  MLR.pages.board = async function (app, id) {
    document.title = "Run " + id + " - mlrunner";
    const head = el("div", { class: "board-head" });
    const progress = el("div", { class: "progress" });
    const gantt = el("canvas", { class: "gantt", "aria-label": "timeline of attempts per slot" });
    const tip = el("div", { class: "tip", hidden: true });
    const ganttBox = el("div", { class: "gantt-box" }, gantt, tip);
    const tasksHost = el("div");
    const failures = el("div");
    app.append(el("h1", { text: "Run #" + id }), head, progress,
      MLR.section("Timeline per slot", ganttBox), MLR.section("Tasks and commands", tasksHost), MLR.section("Failures", failures)); // prettier-ignore
    const columns = [
      { key: "task", label: "task", width: 260, render: (r) => MLR.link(MLR.expPath(r.task), r.task) },
      { key: "command", label: "command", width: 110 },
      { key: "status", label: "status", width: 110, render: (r) => MLR.badge(r.status) },
      { key: "exit_code", label: "exit", width: 56 },
      { key: "attempts", label: "attempts", width: 80 },
      { key: "resource", label: "gpu", width: 70 },
      { key: "started_at", label: "started", width: 160, render: (r) => MLR.time(r.started_at) },
      { key: "dur", label: "duration", width: 90, render: (r) => MLR.duration(r.dur), sort: (r) => r.dur },
      { key: "failure_class", label: "failure", width: 90 },
    ]; // prettier-ignore
    const table = new MLR.VTable(tasksHost, columns, {
      height: "50vh",
      rowData: (r) => ({ task: r.task, command: r.command, status: r.status }),
    });
    let done = false;
    const load = async function () {
      const [doc, att] = await Promise.all([MLR.api("/api/runs/" + id), MLR.api("/api/runs/" + id + "/attempts")]);
      const run = doc.run, now = att.now || Date.now() / 1000;
      MLR.clear(head).append(MLR.badge(run.status), " started " + MLR.time(run.started_at),
        run.finished_at ? ", ended " + MLR.time(run.finished_at) : "", " \u00b7 ",
        run.git_commit ? el("span", { class: "mono", title: "git commit (* uncommitted changes)", text: run.git_commit.slice(0, 10) + (run.git_dirty ? "*" : "") }) : "no git commit",
        " \u00b7 " + (run.backend || "local") + " on " + (run.host || "?")); // prettier-ignore
      const rows = [];
      const counts = {};
      for (const t of doc.tasks)
        for (const c of t.commands) {
          const a = MLR.epoch(c.started_at), b = MLR.epoch(c.ended_at);
          rows.push({ task: t.name, command: c.name, status: c.status, exit_code: c.exit_code, attempts: c.attempts,
            resource: c.resource, started_at: c.started_at, dur: a === null ? null : (b === null ? now : b) - a,
            failure_class: c.failure_class, log_tail: c.log_tail }); // prettier-ignore
          counts[c.status] = (counts[c.status] || 0) + 1;
        }
      table.setRows(rows);
      const total = rows.length, fin = counts.finished || 0;
      const ended = att.attempts.filter((a) => a.ended_at && a.status === "finished");
      const first = att.attempts.length ? Math.min(...att.attempts.map((a) => a.started_at)) : now;
      const left = total - fin;
      const eta = ended.length && run.status === "running" ? ((now - first) / ended.length) * left : null;
      const bar = el("div", { class: "bar" }, el("div", { class: "fill" }));
      bar.firstChild.style.width = (total ? (100 * fin) / total : 0) + "%";
      MLR.clear(progress).append(bar, el("span", { class: "counts", text: fin + " / " + total + " commands finished" +
        Object.entries(counts).filter(([k]) => k !== "finished").map(([k, v]) => ", " + v + " " + k).join("") +
        (eta !== null ? " \u00b7 ETA " + MLR.duration(eta) : "") })); // prettier-ignore
      progress.dataset.finished = String(fin);
      drawGantt(gantt, tip, att.attempts, now);
      const failed = rows.filter((r) => ["failed", "timeout", "oom", "node_fail"].includes(r.status));
      MLR.clear(failures).append(failed.length ? "" : el("p", { class: "muted", text: "No failure." }),
        ...failed.slice(0, 200).map((r) => el("div", { class: "failure" },
          el("div", {}, MLR.link(MLR.expPath(r.task), r.task), " / " + r.command + " ", MLR.badge(r.status),
            r.exit_code !== null ? " exit " + r.exit_code : "", r.failure_class ? " (" + r.failure_class + ")" : ""),
          el("pre", { class: "log small", text: r.log_tail || "(no log tail recorded)" })))); // prettier-ignore
      done = run.status !== "running" && !rows.some((r) => r.status === "running");
      app.dataset.live = done ? "0" : "1";
    };
    await load();
    if (MLR.mode === "server") {
      MLR.every(2000, function () {
        if (!done) load().catch(() => {});
      });
    }
  };
})();

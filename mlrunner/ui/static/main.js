/* The router: each view has a real URL on the server (bookmarkable, reloadable) and a
   #/path in the report. */
(function () {
  "use strict";
  const MLR = window.MLR;
  const ROUTES = [
    [/^\/$/, (app) => MLR.pages.runs(app)],
    [/^\/runs\/(\d+)$/, (app, m) => MLR.pages.board(app, +m[1])],
    [/^\/experiments$/, (app) => MLR.pages.experiments(app)],
    [/^\/experiments\/([^/]+)$/, (app, m) => MLR.pages.detail(app, decodeURIComponent(m[1]))],
    [/^\/compare$/, (app, m, q) => MLR.pages.compare(app, q)],
  ];

  MLR.render = async function () {
    MLR.timers.splice(0).forEach(clearInterval);
    const app = MLR.clear(document.getElementById("app"));
    delete app.dataset.ready;
    const route = MLR.route();
    const u = new URL(route, "http://x.invalid/");
    const path = u.pathname.length > 1 ? u.pathname.replace(/\/+$/, "") : u.pathname;
    document.querySelectorAll("header nav a").forEach((a) => {
      const to = a.dataset.nav;
      a.classList.toggle("active", to === "/" ? path === "/" || path.startsWith("/runs") : path.startsWith(to) || path.startsWith("/compare"));
    });
    try {
      const hit = ROUTES.map(([re, fn]) => [re.exec(path), fn]).find(([m]) => m);
      if (!hit) throw Object.assign(new Error("no page at " + path), { status: 404 });
      await hit[1](app, hit[0], u.searchParams);
    } catch (e) {
      app.append(MLR.errorBox(e));
    }
    app.dataset.ready = "1";
  };

  document.getElementById("where").textContent = document.body.dataset.output || "";
  document.querySelectorAll("a[data-nav]").forEach((a) => (a.href = MLR.href(a.dataset.nav)));
  if (MLR.mode === "report") {
    window.addEventListener("hashchange", () => MLR.render());
    const d = MLR.report;
    document.getElementById("where").textContent = d.output + " \u00b7 report of " + d.generated_at;
  } else {
    window.addEventListener("popstate", () => MLR.render());
    document.addEventListener("click", function (e) {
      const a = e.target.closest ? e.target.closest("a[data-nav]") : null;
      if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
      e.preventDefault();
      MLR.go(a.getAttribute("href"));
    });
  }
  MLR.render();
})();

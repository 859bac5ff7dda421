"""The web UI in a real headless Chromium (Debian's, driven by Playwright): every view of a
real sweep, sorting, filtering, brushing, plots with data, the live board of a running
sweep updating without a reload, a hostile param value shown as text, the report opened
with the network off; no console error anywhere. Screenshots of each view are saved in
the test's tmp dir (and in $MLRUNNER_UI_SHOTS when set)."""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from helpers import Project, run_argv, wait_for
from ui_support import HOSTILE, Server, live_project, start_server

N_EXPERIMENTS = 7


@pytest.fixture(scope="module")
def server(ui_sweep: Project) -> Iterator[Server]:
    srv = start_server(ui_sweep, "output")
    yield srv
    code, out, err = srv.stop()
    assert code == 0 and "Traceback" not in err, (code, out, err)


class Browser:
    """A page in a fresh context, with every console error, page error and dialog kept."""

    def __init__(self, chromium: Any, shots: Path, **context: Any) -> None:
        self.context = chromium.new_context(viewport={"width": 1400, "height": 1000}, **context)
        self.page = self.context.new_page()
        self.shots = shots
        self.problems: list[str] = []
        self.page.on(
            "console",
            lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
        )
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        self.problems.append(f"a dialog opened (a script ran): {dialog.message}")
        dialog.dismiss()

    def open(self, url: str) -> Any:
        self.page.goto(url)
        self.ready()
        return self.page

    def ready(self) -> None:
        self.page.wait_for_selector("#app[data-ready='1']", timeout=30_000)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        if os.environ.get("MLRUNNER_UI_SHOTS"):
            os.makedirs(os.environ["MLRUNNER_UI_SHOTS"], exist_ok=True)
            shutil.copy(path, os.path.join(os.environ["MLRUNNER_UI_SHOTS"], path.name))
        return path

    def rows(self) -> list[Any]:
        """The table's rows a person sees (the virtual table keeps spare ones hidden)."""
        return [r for r in self.page.locator(".vt-body .vt-row").all() if r.is_visible()]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def browser(chromium: Any, tmp_path: Path) -> Iterator[Browser]:
    b = Browser(chromium, tmp_path)
    yield b
    b.close()
    assert b.problems == [], b.problems


def names_in_order(b: Browser) -> list[str]:
    return [r.get_attribute("data-name") or "" for r in b.rows()]


def test_runs_page_lists_the_runs(browser: Browser, server: Server) -> None:
    page = browser.open(server.url)
    rows = browser.rows()
    assert len(rows) == 1 and rows[0].get_attribute("data-run") == "1"
    text = rows[0].inner_text()
    assert "#1" in text and "finished" in text and "7 / 7" in text
    browser.shot("runs")
    page.click("a[href='/runs/1']")
    page.wait_for_url("**/runs/1")
    browser.ready()
    assert page.locator("canvas.gantt").get_attribute("data-bars") == "8"
    assert page.locator(".progress").get_attribute("data-finished") == "7"
    assert (
        "diverged" in page.locator(".failure pre").inner_text()
        if page.locator(".failure pre").count()
        else True
    )
    browser.shot("run-board-finished")


def test_table_shows_every_experiment_sorts_and_filters(browser: Browser, server: Server) -> None:
    rows = server.json("/api/experiments")
    page = browser.open(server.url + "experiments")
    assert page.locator(".count").inner_text() == f"{N_EXPERIMENTS} of {N_EXPERIMENTS} experiments"
    assert sorted(names_in_order(browser)) == sorted(r["_name"] for r in rows)
    by_loss = [r["_name"] for r in sorted(rows, key=lambda r: r["val_loss"])]
    page.click(".vt-th[data-key='val_loss']")
    assert names_in_order(browser) == by_loss
    page.click(".vt-th[data-key='val_loss']")
    assert names_in_order(browser) == by_loss[::-1]
    page.fill("input[type=search]", "cfg_a")
    assert names_in_order(browser) == [n for n in by_loss[::-1] if n.startswith("Cfg_a")]
    page.fill("input[type=search]", "")
    page.select_option("select[data-param='cfg']", "b")
    assert sorted(names_in_order(browser)) == [f"Cfg_b-Seed_{s}" for s in range(3)]
    assert page.locator(".count").inner_text() == f"3 of {N_EXPERIMENTS} experiments"
    browser.shot("experiments-filtered")
    page.select_option("select[data-param='cfg']", "")
    page.select_option("select[data-summary='val_loss']", "min")  # the summary per metric
    cells = page.locator(".vt-row[data-name='Cfg_a-Seed_1'] .vt-cell")
    wait_for(lambda: "0.01" in cells.all_inner_texts(), what="the table with val_loss=min")


def settled_box(locator: Any) -> dict[str, float]:
    """The element's box once it has stayed put for a few frames (nothing above it moving)."""
    last: Any = None
    for _ in range(50):
        box = locator.bounding_box()
        if box is not None and box == last:
            return dict(box)
        last = box
        time.sleep(0.2)
    raise AssertionError(f"the element kept moving: {last}")


def test_plots_render_and_brushing_filters_the_table(browser: Browser, server: Server) -> None:
    page = browser.open(server.url + "experiments")
    page.wait_for_selector("#curves .scatterlayer path.js-line")
    lines = page.eval_on_selector_all(
        "#curves .scatterlayer path.js-line", "ps => ps.map(p => p.getAttribute('d') || '')"
    )
    assert len(lines) >= 3 and all(d.startswith("M") and "L" in d for d in lines)  # cfg a, b, c
    assert page.locator("#curves .scatterlayer path.js-fill").count() >= 2  # std bands (a, b)
    page.wait_for_selector("#scatter .scatterlayer path.point")
    assert page.locator("#scatter .scatterlayer path.point").count() == N_EXPERIMENTS
    canvas = page.locator("canvas.pc")
    assert canvas.get_attribute("data-lines") == str(N_EXPERIMENTS)
    inked = page.evaluate(
        "() => { const c = document.querySelector('canvas.pc'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 3; i < d.length; i += 4) "
        "if (d[i] > 0) n++; return n; }"
    )
    assert inked > 2000
    browser.shot("experiments")
    canvas.scroll_into_view_if_needed()  # the mouse only reaches what is in the viewport
    box = settled_box(canvas)  # the plots above may still be drawing on a loaded machine
    x = box["x"] + box["width"] - 60  # the last axis: the metric
    page.mouse.move(x, box["y"] + 25)  # from the top of the axis to below its middle
    page.mouse.down()
    page.mouse.move(x, box["y"] + 170, steps=5)
    page.mouse.up()

    def brushed() -> int:  # the count once the brush has filtered the table (0 until then)
        shown = int(page.locator(".count").get_attribute("data-shown") or "0")
        return shown if shown < N_EXPERIMENTS else 0

    shown = wait_for(brushed, what="the brushed table", timeout=10)
    assert 0 < shown < N_EXPERIMENTS and len(browser.rows()) == shown
    assert canvas.get_attribute("data-selected") == str(shown)
    browser.shot("experiments-brushed")
    page.click("text=Clear brushes")
    assert len(browser.rows()) == N_EXPERIMENTS


def test_click_opens_the_detail_with_its_log(browser: Browser, server: Server) -> None:
    page = browser.open(server.url + "experiments")
    page.click(".vt-row[data-name='Cfg_b-Seed_2'] a")
    page.wait_for_url("**/experiments/Cfg_b-Seed_2")
    browser.ready()
    log = page.locator("pre.log[data-command='train']")
    wait_for(lambda: "epoch 11" in log.inner_text(), what="the log text")
    badges = page.locator(".cmd table .badge").all_inner_texts()
    assert badges == ["failed", "finished"]
    assert "+# an uncommitted edit" in (page.locator("details pre.log").text_content() or "")
    assert "notes.txt" in page.inner_text("main")
    browser.shot("detail")
    page.reload()  # a real URL: reloads to the same view
    browser.ready()
    wait_for(lambda: "epoch 11" in page.locator("pre.log[data-command='train']").inner_text(), what="log")
    page.go_back()
    browser.ready()
    assert page.url.endswith("/experiments")


def test_hostile_param_value_is_text(browser: Browser, server: Server) -> None:
    page = browser.open(server.url + "experiments")
    cells = page.locator(".vt-cell", has_text="onerror=alert(1)")
    assert HOSTILE in cells.all_inner_texts()
    name = next(r["_name"] for r in server.json("/api/experiments") if r["_name"].startswith("Cfg_c-"))
    browser.open(server.url + "experiments/" + quote(name, safe=""))
    assert page.locator("h1").inner_text() == name
    assert HOSTILE in page.locator("table.kv td").all_inner_texts()
    browser.shot("detail-hostile")
    browser.open(server.url + "experiments")
    page.select_option("select[aria-label='x']", "note")  # the scatter's category labels
    page.select_option("select[aria-label='colour by']", "note")  # the curves' legend
    wait_for(lambda: HOSTILE in page.locator("#scatter .xtick text").all_text_contents(), what="the label")
    wait_for(
        lambda: any(HOSTILE in t for t in page.locator("#curves .legendtext").all_text_contents()),
        what="legend",
    )
    browser.shot("experiments-hostile-plots")
    browser.open(server.url + "compare?a=Cfg_a-Seed_0&b=" + quote(name, safe=""))
    assert HOSTILE in page.inner_text("main")
    browser.shot("compare")
    for p in (page,):
        assert p.locator("img").count() == 0 and p.evaluate("typeof window.__pwned") == "undefined"


def test_live_board_updates_without_reload(browser: Browser, tmp_path: Path) -> None:
    project = live_project(tmp_path / "live proj")
    runner = subprocess.Popen(run_argv(), cwd=project.path, env=project.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    srv = None
    try:
        wait_for(lambda: (project.path / "output" / ".mlrunner" / "ledger.db").exists(), what="the ledger")
        srv = start_server(project, "output")
        page = browser.open(srv.url + "runs/1")
        page.evaluate("window.__same_page = 1")
        one = "div.vt-row[data-task='Job_one'][data-command='wait']"
        page.wait_for_selector(one + "[data-status='running']", timeout=30_000)
        assert page.locator("#app").get_attribute("data-live") == "1"
        browser.shot("run-board-live")
        log_page = browser.context.new_page()
        log_page.goto(srv.url + "experiments/Job_two")
        log = log_page.locator("pre.log[data-command='wait']")
        wait_for(lambda: "waiting for two" in log.inner_text(), what="the live log")
        (project.path / "release" / "one").write_text("")
        page.wait_for_selector(one + "[data-status='finished']", timeout=15_000)
        assert page.evaluate("window.__same_page") == 1  # no reload
        (project.path / "release" / "two").write_text("")
        wait_for(lambda: "released two" in log.inner_text(), what="the log tailed live")
        (project.path / "release" / "three").write_text("")
        assert runner.wait(timeout=60) == 1  # Job_three fails
        page.wait_for_selector("#app[data-live='0']", timeout=15_000)
        assert page.locator(".progress").get_attribute("data-finished") == "2"
        failure = page.locator(".failure")
        assert (
            failure.count() == 1 and "Job_three" in failure.inner_text() and "exit 3" in failure.inner_text()
        )
        assert "three gives up" in failure.locator("pre").inner_text()  # its log tail
        assert page.locator("canvas.gantt").get_attribute("data-bars") == "3"
        browser.shot("run-board-done")
        log_page.close()
    finally:
        for name in ("one", "two", "three"):
            (project.path / "release" / name).write_text("")
        if runner.poll() is None:
            runner.kill()
        runner.communicate(timeout=30)
        if srv is not None:
            srv.stop()


def test_report_opens_offline_with_the_same_views(
    chromium: Any, ui_sweep: Project, tmp_path: Path, server: Server
) -> None:
    report = tmp_path / "report $(x) 'q'.html"
    res = ui_sweep.mlrunner("report", "--out", str(report), check=0)
    assert "Wrote" in res.stdout and report.stat().st_size > 1_000_000
    text = html.unescape(report.read_text())
    assert 'http-equiv="Content-Security-Policy"' in text and "connect-src 'none'" in text
    assert "<img src=x" not in report.read_text()  # the hostile value only ever as escaped JSON
    b = Browser(chromium, tmp_path, offline=True)
    requests: list[str] = []
    b.page.on("request", lambda r: requests.append(r.url))
    try:
        page = b.open(report.as_uri())
        assert len(b.rows()) == 1 and "finished" in b.rows()[0].inner_text()
        page.click("header nav a:text('Experiments')")
        b.ready()
        assert page.locator(".count").inner_text() == f"{N_EXPERIMENTS} of {N_EXPERIMENTS} experiments"
        assert sorted(names_in_order(b)) == sorted(r["_name"] for r in server.json("/api/experiments"))
        page.click(".vt-th[data-key='val_loss']")
        page.wait_for_selector("#curves .scatterlayer path.js-line")
        assert page.locator("canvas.pc").get_attribute("data-lines") == str(N_EXPERIMENTS)
        assert HOSTILE in page.locator(".vt-cell", has_text="onerror").all_inner_texts()
        b.shot("report-experiments")
        page.click(".vt-row[data-name='Cfg_b-Seed_2'] a")
        b.ready()
        assert "epoch 11" in page.locator("pre.log[data-command='train']").inner_text()
        assert page.locator(".cmd table .badge").all_inner_texts() == ["failed", "finished"]
        b.shot("report-detail")
        page.goto(report.as_uri() + "#/compare?a=Cfg_a-Seed_0&b=Cfg_b-Seed_1")
        b.ready()
        assert "cfg" in page.inner_text("main")
        page.goto(report.as_uri() + "#/runs/1")
        b.ready()
        assert page.locator("canvas.gantt").get_attribute("data-bars") == "8"
        b.shot("report-board")
        assert [u for u in requests if not u.startswith("file:") and not u.startswith("data:")] == []
        assert b.problems == [], b.problems
        data = json.loads(page.evaluate("document.getElementById('mlr-data').textContent"))
        assert set(data) >= {"runs", "rows", "curves", "details", "run_docs"}
    finally:
        b.close()

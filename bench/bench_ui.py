"""Web UI benchmark (issue 17): ``GET /api/experiments`` over 10k experiment dirs, and the
time until the table of 10k rows is drawn in headless Chromium.

Generates N experiment dirs (default 10,000; ``--quick``: 2,000) in mlrunner 0.5.9's
format (bench_examine's: ``param``, ``stat``, a log) plus a ``metrics.json`` of 3 metrics
each, then serves them with the real ``mlrunner ui -o OUT --port 0`` (a subprocess) and
measures, as medians of repetitions:

- cold: a fresh server and no Examiner cache (``.mlrunner/examine-cache`` removed): the
  first ``GET /api/experiments``;
- warm: requests within the table's freshness window (2 s: the served JSON is cached);
- stale: a request after the window: the kept table is served at once while a thread
  examines the dirs again;
- remade: that re-examination itself, in this process (``UiData.table(max_age=0)`` with
  the Examiner's cache warm): how far behind the disk the table can be;
- drawn: headless Chromium (Debian's, through Playwright) opens ``/experiments`` on a warm
  server; from navigation to the table showing "N of N experiments" with its rows in the DOM.

Targets: warm < 0.5 s; drawn < 2 s. 'skipped' (with why) when Chromium or Playwright is
missing. The baseline of the drawn figure: the warm API request (what the page fetches).

    python bench/bench_ui.py [--quick] [--dirs N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import BenchError, Row, Sample, clean_env, ratio, verdict  # noqa: E402

WARM_TARGET_S = 0.5
DRAWN_TARGET_S = 2.0
FULL = 10_000
FRESH_S = 2.0
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def generate(output: Path, n: int) -> None:
    import bench_examine

    bench_examine.generate(output, n)
    rng = random.Random(1)
    for exp in output.iterdir():
        if exp.is_dir() and not exp.name.startswith("."):
            metrics = {"acc": rng.random(), "val_loss": rng.random() * 3, "bleu": rng.random() * 40}
            (exp / "metrics.json").write_text(json.dumps(metrics))


class UiServer:
    def __init__(self, output: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlrunner", "ui", "-o", str(output), "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"(http://\S+/)", line)
        if m is None:
            err = self.stop()
            raise BenchError(f"mlrunner ui did not start: {line!r} {err.strip()}")
        self.url = m.group(1)

    def get(self, path: str) -> tuple[float, int]:
        t0 = time.perf_counter()
        with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=600) as res:
            body = res.read()
        return time.perf_counter() - t0, len(body)

    def stop(self) -> str:
        """Stop the server (Ctrl-C, then kill); what it wrote on stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err or ""


def chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium") or ""):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def drawn_times(url: str, n: int, repeat: int) -> Sample | str:
    path = chromium()
    if path is None:
        return "skipped: no chromium (apt-get install -y chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "skipped: no playwright (pip install -e '.[test]')"
    sample = Sample()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            for _ in range(repeat + 1):  # the first one warms the browser's cache of the scripts
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                t0 = time.perf_counter()
                page.goto(url + "experiments")
                page.wait_for_selector(f".count:text('{n} of {n} experiments')", timeout=120_000)
                page.wait_for_selector(".vt-body .vt-row >> nth=0", timeout=120_000)
                took = time.perf_counter() - t0
                rows = page.locator(".vt-body .vt-row").count()
                if rows >= n or rows < 10:
                    raise BenchError(f"the table should draw only the rows in view, drew {rows} of {n}")
                page.close()
                sample.add(took)
            sample.times.pop(0)
        finally:
            browser.close()
    return sample


def measure(n: int, repeat: int) -> dict[str, Sample | str]:
    with tempfile.TemporaryDirectory(prefix="mlrunner-bench-ui-") as tmp:
        output = Path(tmp) / "output"
        output.mkdir()
        t0 = time.perf_counter()
        generate(output, n)
        print(f"{n} experiment dirs generated in {time.perf_counter() - t0:.1f} s", flush=True)
        cold, stale, warm, remade = Sample(), Sample(), Sample(), Sample()
        size = 0
        for _ in range(repeat):
            shutil.rmtree(output / ".mlrunner", ignore_errors=True)
            server = UiServer(output)
            try:
                took, size = server.get("/api/experiments")
                cold.add(took)
            finally:
                server.stop()
        server = UiServer(output)
        try:
            server.get("/api/experiments")
            for _ in range(repeat):
                time.sleep(FRESH_S + 0.1)
                stale.add(server.get("/api/experiments")[0])
                for _ in range(3):
                    warm.add(server.get("/api/experiments")[0])
            drawn = drawn_times(server.url, n, repeat)
        finally:
            server.stop()
        from mlrunner.ui import UiData

        data = UiData(output)
        data.table(max_age=0)
        for _ in range(repeat):
            t0 = time.perf_counter()
            data.table(max_age=0)
            remade.add(time.perf_counter() - t0)
        data.close()
    print(f"GET /api/experiments: {size / 1e6:.1f} MB of JSON for {n} rows")
    print(f"cold (new server, no Examiner cache)   {cold.fmt()}")
    print(f"warm (within {FRESH_S:g} s, served cached)  {warm.fmt()}")
    print(f"stale (after {FRESH_S:g} s: served, remade behind) {stale.fmt()}")
    print(f"remade (re-examined, Examiner cache warm) {remade.fmt()}")
    print(f"table of {n} rows drawn in Chromium    {drawn.fmt() if isinstance(drawn, Sample) else drawn}")
    return {"cold": cold, "stale": stale, "warm": warm, "remade": remade, "drawn": drawn}


def run(mode: str) -> list[Row]:
    n, repeat = {"tiny": (60, 1), "quick": (2000, 3), "full": (FULL, 5)}[mode]
    got = measure(n, repeat)
    cold, stale, warm, remade, drawn = (got[k] for k in ("cold", "stale", "warm", "remade", "drawn"))
    assert isinstance(cold, Sample) and isinstance(stale, Sample) and isinstance(warm, Sample)
    assert isinstance(remade, Sample)
    full = n >= FULL
    goal = "" if full else f" at {FULL // 1000}k"
    rows = [
        Row(f"ui: GET /api/experiments {n} dirs, cold s", cold.fmt()),
        Row(f"ui: GET /api/experiments {n} dirs, stale (remade behind) s (vs cold)", stale.fmt(), cold.fmt(),
            ratio(stale.median, cold.median)),
        Row(f"ui: the table of {n} dirs remade, Examiner cache warm s (vs cold)", remade.fmt(), cold.fmt(),
            ratio(remade.median, cold.median)),
        Row(f"ui: GET /api/experiments {n} dirs, warm s (vs cold)", warm.fmt(), cold.fmt(),
            ratio(warm.median, cold.median), f"< {WARM_TARGET_S:g} s{goal}",
            verdict(warm.median < WARM_TARGET_S) if full else "-"),
    ]  # fmt: skip
    label = f"ui: table of {n} rows drawn in Chromium s (vs warm API)"
    if isinstance(drawn, str):
        rows.append(Row(label, drawn, verdict="skipped"))
    else:
        ok = verdict(drawn.median < DRAWN_TARGET_S) if full else "-"
        target = f"< {DRAWN_TARGET_S:g} s{goal}"
        rows.append(Row(label, drawn.fmt(), warm.fmt(), ratio(drawn.median, warm.median), target, ok))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,000 dirs, 3 repetitions")
    ap.add_argument("--dirs", type=int, default=None, help="experiment dirs (default 10,000)")
    ap.add_argument("--repeat", type=int, default=None, help="repetitions (default 5)")
    args = ap.parse_args()
    n = args.dirs or (2000 if args.quick else FULL)
    measure(n, args.repeat or (3 if args.quick else 5))


if __name__ == "__main__":
    main()

"""The benchmark suite runs end to end in its toy configuration (no figure is checked)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "bench" / "run.py"


def run_suite(tmp_path: Path, *sections: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    results = tmp_path / "RESULTS.md"
    only = [arg for s in sections for arg in ("--only", s)]
    env = {**os.environ, "MLRUNNER_BENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, str(RUN), "--tiny", "--no-install", *only, "--results", str(results)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    return proc, results


def summary_rows(stdout: str) -> dict[str, list[str]]:
    """metric -> the other cells, from the aligned summary table at the end of the output."""
    lines = stdout.split("\nSummary (", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("metric "))
    header, rule = lines[start], lines[start + 1]
    bounds, pos = [], 0
    for dashes in rule.split("  "):
        bounds.append((pos, pos + len(dashes)))
        pos += len(dashes) + 2
    rows = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in bounds]
        rows[cells[0]] = cells[1:]
    assert header.split()[:2] == ["metric", "ours"]
    return rows


def test_dispatch_plan_startup_ledger_run(tmp_path: Path) -> None:
    proc, results = run_suite(tmp_path, "dispatch", "plan", "startup", "ledger")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = summary_rows(proc.stdout)
    assert "failed" not in {cells[-1] for cells in rows.values()}
    for metric in (
        "dispatch W=2 ms/cmd vs floor",
        "dispatch W=2 ms/cmd vs xargs -P",
        "dispatch: git.patch files per run of 10-20 tasks",
        "plan 1k: run --dry-run s",
        "start-up: run --help ms",
        "start-up: ledger ls (1k attempts) ms",
        "ledger: 2 procs x 10, 'locked'/other errors, all recorded",
    ):
        assert metric in rows, f"{metric!r} missing from the summary: {sorted(rows)}"
    # the real things happened: one snapshot per run, nothing heavy imported, no lost transition
    assert rows["dispatch: git.patch files per run of 10-20 tasks"][0] == "1"
    assert rows["start-up: ledger ls imports pandas/GitPython/submitit"][0] == "none"
    assert rows["ledger: 2 procs x 10, 'locked'/other errors, all recorded"][0] == "0/0, yes"
    # a baseline that is absent says so instead of showing a figure
    for cells in rows.values():
        assert cells[-1] in {"PASS", "MISS", "skipped", "noise", "-"}
        if cells[-1] == "skipped":
            assert cells[1].startswith("skipped: ")
    text = results.read_text()
    assert "<!-- results:begin -->" in text and "| dispatch W=2 ms/cmd vs floor |" in text
    assert "`nproc` " in text and "load average (1, 5, 15 min) before: " in text
    assert (tmp_path / "cache").is_dir()  # the ledger fixture went to MLRUNNER_BENCH_CACHE


def test_results_file_keeps_the_notes_around_the_table(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_run", RUN)
    assert spec is not None and spec.loader is not None
    sys.path.insert(0, str(RUN.parent))
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(RUN.parent))
    path = tmp_path / "RESULTS.md"
    module.write_results(path, "table one")
    assert "table one" in path.read_text()
    generated = path.read_text().split("\n\n", 2)[2]
    path.write_text(f"# Results\n\nintro $(date) `x`\n\n{generated}\n## Notes\nkept\n")
    module.write_results(path, "table two | with a pipe")
    text = path.read_text()
    assert "table one" not in text and "table two | with a pipe" in text
    assert text.startswith("# Results\n\nintro $(date) `x`\n\n") and text.endswith("\n## Notes\nkept\n")


def test_ui_section_runs(tmp_path: Path) -> None:
    proc, results = run_suite(tmp_path, "ui")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = summary_rows(proc.stdout)
    for metric in (
        "ui: GET /api/experiments 60 dirs, cold s",
        "ui: GET /api/experiments 60 dirs, warm s (vs cold)",
        "ui: table of 60 rows drawn in Chromium s (vs warm API)",
    ):
        assert metric in rows, f"{metric!r} missing from the summary: {sorted(rows)}"
        assert rows[metric][-1] == "-" and rows[metric][0].endswith(" s")  # measured, not skipped

"""The benchmark suite of issue 8: every figure against a baseline measured in the same run.

    python bench/run.py [--quick | --tiny] [--only NAME]... [--results bench/RESULTS.md] [--no-install]

Sections (``--only`` picks some; default all, in this order):

  dispatch  N trivial commands over W slots vs a thread-pool floor, xargs -P, GNU parallel
            and mlrunner 0.5.9                                         (bench_dispatch.py)
  plan      run --dry-run for 1k-100k tasks vs 0.5.9's planning          (bench_plan.py)
  startup   run --help, ledger ls, status vs importing typer+yaml+filelock (bench_startup.py)
  ledger    16 processes x 500 attempt transitions                      (bench_ledger.py)
  examine   the Examiner over 10k experiment dirs vs 0.5.9              (bench_examine.py)
  snapshot  the git snapshot of a dirty ~50k-file repository            (bench_snapshot.py)
  ui        GET /api/experiments over 10k dirs (cold, revalidated, warm) and the table
            of 10k rows drawn in headless Chromium                       (bench_ui.py)

``--quick`` runs smaller sizes and fewer repetitions (a few minutes on 2 cores); ``--tiny``
runs toy sizes that only prove the scripts work (the smoke test uses it; its figures mean
nothing). Each section prints its own report; the summary table comes at the end.
Exit status 1 when a section failed to run (a MISS is a figure, not a failure).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_dispatch  # noqa: E402
import bench_plan  # noqa: E402
import bench_startup  # noqa: E402
import bench_ui  # noqa: E402
import existing  # noqa: E402
from benchlib import ROOT, Row, load_average, machine, markdown_rows, print_rows  # noqa: E402

SECTIONS = ("dispatch", "plan", "startup", "ledger", "examine", "snapshot", "ui")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def section(name: str, mode: str, install: bool) -> list[Row]:
    quick = mode == "quick"
    tiny = mode == "tiny"
    runners: dict[str, Callable[[], list[Row]]] = {
        "dispatch": lambda: bench_dispatch.run(
            quick, [10, 20] if tiny else None, [2] if tiny else None, 1 if tiny else None, install
        ),
        "plan": lambda: bench_plan.run(quick, [1000] if tiny else None, 1 if tiny else None, install),
        "startup": lambda: bench_startup.run(quick, 1000 if tiny else None, 1 if tiny else None),
        "ledger": lambda: existing.ledger(mode),
        "examine": lambda: existing.examine(mode),
        "snapshot": lambda: existing.snapshot(mode),
        "ui": lambda: bench_ui.run(mode),
    }
    return runners[name]()


def git_state() -> str:
    def out(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    head = out("rev-parse", "--short", "HEAD") or "unknown"
    changed = len(out("status", "--porcelain", "--", "mlrunner").splitlines())
    dirty = f" + uncommitted changes in {changed} files under mlrunner/" if changed else ""
    return f"commit {head}{dirty}"


def write_results(path: Path, text: str) -> None:
    """Replace the generated part of ``path`` (between the markers), keeping the notes around it."""
    block = f"{BEGIN}\n{text}\n{END}"
    if path.is_file():
        old = path.read_text()
        if BEGIN in old and END in old:
            head, _, rest = old.partition(BEGIN)
            _, _, tail = rest.partition(END)
            path.write_text(head + block + tail)
            return
    intro = f"# Benchmark results\n\nWritten by `python bench/run.py --results {path.name}`.\n\n"
    path.write_text(f"{intro}{block}\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    size.add_argument("--tiny", action="store_true", help="toy sizes: proves the scripts work, nothing more")
    ap.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    ap.add_argument("--results", type=Path, default=None, help="write the summary table (markdown) here")
    ap.add_argument("--no-install", action="store_true", help="never pip install mlrunner 0.5.9")
    args = ap.parse_args()
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    chosen = [s for s in SECTIONS if not args.only or s in args.only]

    info = machine()
    state = git_state()
    print(f"mlrunner benchmarks ({mode}): {', '.join(chosen)}")
    print(f"{info['date']}; {info['nproc']} CPUs, {info['cpu']}; Python {info['python']}; {state}")
    print(f"load average before: {info['load']}\n")
    t0 = time.perf_counter()
    rows: list[Row] = []
    failed = []
    for name in chosen:
        print(f"=== {name} " + "=" * (70 - len(name)), flush=True)
        started = time.perf_counter()
        try:
            rows.extend(section(name, mode, not args.no_install))
        except Exception as e:  # one broken section must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            rows.append(Row(f"{name}: failed", first[:160], verdict="failed"))
        print(f"--- {name}: {time.perf_counter() - started:.0f} s\n", flush=True)
    elapsed = time.perf_counter() - t0
    after = load_average()

    print(f"Summary ({mode}, {elapsed / 60:.1f} min; load average before {info['load']}, after {after})")
    print("ours/baseline: median (min-max) of interleaved repetitions; ratio = ours / baseline medians\n")
    print_rows(rows)
    misses = [r.metric for r in rows if r.verdict == "MISS"]
    print(f"\n{sum(r.verdict == 'PASS' for r in rows)} PASS, {len(misses)} MISS, {len(failed)} failed")

    if args.results:
        only = f" --only {' --only '.join(args.only)}" if args.only else ""
        flag = {"full": "", "quick": " --quick", "tiny": " --tiny"}[mode]
        text = "\n".join(
            [
                f"`python bench/run.py{flag}{only}` on {info['date']}, {elapsed / 60:.1f} min.",
                "",
                f"- machine: `nproc` {info['nproc']}, {info['cpu']}, Python {info['python']}",
                f"- load average (1, 5, 15 min) before: {info['load']}; after: {after}",
                f"- code: {state}",
                "- cells: median (min-max) of interleaved repetitions; ratio = ours / baseline (medians)",
                "",
                markdown_rows(rows),
            ]
        )
        write_results(args.results, text)
        print(f"wrote {args.results}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Start-up benchmark (issue 8, item 3): ``run --help``, ``mlrunner ledger ls``, ``mlrunner status``.

Interleaved repetitions of, each a fresh process of this interpreter's console scripts:

- baseline: ``python -c "import typer, yaml, filelock"`` (what any typer CLI on these
  dependencies pays);
- ``run --help``;
- ``mlrunner ledger ls -o OUT`` and ``mlrunner status -o OUT`` on a ledger with 100k
  attempts (``--quick``: 20k). The ledger is built with the ``mlrunner.ledger.store.Ledger`` API
  (10 runs, ``register_tasks``, ``start_attempt``/``end_attempt`` per attempt, ~1 ms each)
  and cached under ``bench/.cache/`` keyed by the ledger's source, then copied to a
  temporary dir for every benchmark run.

Then checks, in a fresh interpreter per command, that neither ``run --help`` nor
``ledger ls`` nor ``status`` imports pandas, GitPython (``git``), submitit, tensorboard or apprise.

Targets: ``run --help`` <= 1.5x the baseline; ``ledger ls`` < 0.5 s; no heavy imports.

    python bench/bench_startup.py [--quick] [--attempts N] [--reps R]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    ROOT,
    BenchError,
    Row,
    Sample,
    cache_dir,
    clean_env,
    our_script,
    ratio,
    source_digest,
    timed_run,
    verdict,
)

HEAVY = ("pandas", "git", "submitit", "tensorboard", "starlette", "uvicorn", "plotly", "apprise")
HELP_TARGET = 1.5
LS_TARGET = 0.5
N_RUNS = 10
COMMANDS = ("train", "test")

CHECK_SCRIPT = """
import contextlib, io, json, sys
which, argv = sys.argv[1], sys.argv[2:]
from mlrunner.cli import app as cli
sys.argv = argv
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        (cli.run_main if which == "run" else cli.main)()
    except SystemExit as e:
        code = e.code
    else:
        code = 0
heavy = {heavy!r}
print(json.dumps({{"code": code, "loaded": [m for m in heavy if m in sys.modules]}}), file=sys.stderr)
"""


def build_ledger(output: Path, n_attempts: int) -> None:
    """A ledger with ``n_attempts`` attempts over N_RUNS runs, written with the Ledger API."""
    from mlrunner.ledger import Ledger

    per_run = n_attempts // N_RUNS // len(COMMANDS)
    if per_run < 1:
        raise ValueError(f"{n_attempts} attempts is too few for {N_RUNS} runs of {len(COMMANDS)} commands")
    with Ledger(output) as ledger:
        for r in range(N_RUNS):
            run = ledger.create_run(
                argv=["run", "-y", "params.yaml"],
                cwd=str(output.parent),
                params_path="params.yaml",
                params_text=f"# run {r}\n",
                options={"resources": ["0", "1"]},
                snapshot=None,
            )
            tasks = [
                {
                    "key": f"r{r}-t{i:06d}",
                    "name": f"Lr_{i}-Run_{r}",
                    "output_dir": str(output / f"Lr_{i}-Run_{r}"),
                    "params": {"lr": i, "run": r},
                    "commands": list(COMMANDS),
                }
                for i in range(per_run)
            ]
            ledger.register_tasks(run, tasks)
            last = r == N_RUNS - 1
            for i, task in enumerate(tasks):
                for command in COMMANDS:
                    attempt = ledger.start_attempt(
                        run_id=run,
                        task_key=task["key"],
                        command=command,
                        resource=str(i % 2),
                        gpus=[i % 2],
                        log_path=f"{task['output_dir']}/log.{command}.20240101.120000",
                    )
                    if last and i >= per_run - 2:
                        continue  # the latest run is still 'running' its last commands
                    failed = command == "test" and i % 17 == 0
                    ledger.end_attempt(
                        attempt,
                        status="failed" if failed else "finished",
                        exit_code=1 if failed else 0,
                        log_tail="Traceback: boom\n" if failed else None,
                    )
            if not last:
                ledger.update_run(run, status="failed" if r % 3 == 0 else "finished")


def cached_ledger(n_attempts: int) -> Path:
    """The cached output dir holding a built ledger (built on first use)."""
    sources = ("store", "db", "schema")
    digest = source_digest(*(ROOT / "mlrunner" / "ledger" / f"{name}.py" for name in sources))
    final = cache_dir() / f"ledger-{n_attempts}-{digest}"
    if (final / "output" / ".mlrunner" / "ledger.db").is_file():
        print(f"  ledger with {n_attempts} attempts: cached in {final}")
        return final / "output"
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ledger-build-", dir=final.parent))
    t0 = time.perf_counter()
    build_ledger(tmp / "output", n_attempts)
    print(
        f"  built a ledger with {n_attempts} attempts in {time.perf_counter() - t0:.1f} s (cached in {final})"
    )
    for stale in final.parent.glob(f"ledger-{n_attempts}-*"):  # built from older ledger code
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(tmp, final)
    return final / "output"


def heavy_imports(which: str, argv: list[str]) -> tuple[int, list[str]]:
    script = CHECK_SCRIPT.format(heavy=list(HEAVY))
    proc = subprocess.run(
        [sys.executable, "-c", script, which, *argv], capture_output=True, text=True, env=clean_env()
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise BenchError(f"import check of {argv} failed: {proc.stderr.strip()[-500:]}")
    found = json.loads(lines[-1])
    return found["code"], found["loaded"]


def run(quick: bool, attempts: int | None = None, reps: int | None = None) -> list[Row]:
    attempts = attempts or (20_000 if quick else 100_000)
    reps = reps or (5 if quick else 10)
    print(f"Start-up: {reps} interleaved repetitions; ledger with {attempts} attempts")
    cached = cached_ledger(attempts)
    root = Path(tempfile.mkdtemp(prefix="mlrunner-bench-startup-"))
    env = clean_env()
    try:
        output = root / "output"
        shutil.copytree(cached / ".mlrunner", output / ".mlrunner")
        run_script, ml_script = our_script("run"), our_script("mlrunner")
        subjects = {
            "baseline": [sys.executable, "-c", "import typer, yaml, filelock"],
            "run --help": [run_script, "--help"],
            "ledger ls": [ml_script, "ledger", "ls", "-o", str(output)],
            "status": [ml_script, "status", "-o", str(output)],
        }
        times = {k: Sample() for k in subjects}
        names = list(subjects)
        for rep in range(reps + 1):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                wall = timed_run(subjects[name], cwd=root, env=env)
                if rep:  # the first round warms the page cache
                    times[name].add(wall)
        imports = {
            "run --help": heavy_imports("run", ["run", "--help"]),
            "ledger ls": heavy_imports("mlrunner", ["mlrunner", "ledger", "ls", "-o", str(output)]),
            "status": heavy_imports("mlrunner", ["mlrunner", "status", "-o", str(output)]),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)

    base = times["baseline"]
    print("\nStart-up, median (min-max) ms")
    for name, sample in times.items():
        extra = "" if name == "baseline" else f"  {ratio(sample.median, base.median)} baseline"
        print(f"  {name:12} {sample.fmt(1000, 'ms', 1)}{extra}")
    for name, (code, loaded) in imports.items():
        print(f"  {name:12} exit {code}, heavy modules imported: {', '.join(loaded) or 'none'}")
    helps, ls, status = times["run --help"], times["ledger ls"], times["status"]
    full = attempts >= 100_000
    ls_ok = verdict(ls.median < LS_TARGET) if full else "-"
    ls_target = f"< {LS_TARGET * 1000:.0f} ms" + ("" if full else " at 100k")
    help_ok = verdict(helps.median <= HELP_TARGET * base.median)
    k = f"{attempts // 1000}k attempts"
    rows = [
        Row("start-up: run --help ms", helps.fmt(1000, "", 1), base.fmt(1000, "", 1),
            ratio(helps.median, base.median), f"<= {HELP_TARGET}x", help_ok),
        Row(f"start-up: ledger ls ({k}) ms", ls.fmt(1000, "", 1), base.fmt(1000, "", 1),
            ratio(ls.median, base.median), ls_target, ls_ok),
        Row(f"start-up: status ({k}) ms", status.fmt(1000, "", 1), base.fmt(1000, "", 1),
            ratio(status.median, base.median)),
    ]  # fmt: skip
    for name, (_code, loaded) in imports.items():
        rows.append(
            Row(f"start-up: {name} imports pandas/GitPython/submitit", ", ".join(loaded) or "none",
                target="none", verdict=verdict(not loaded))
        )  # fmt: skip
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20k attempts, 5 repetitions")
    ap.add_argument("--attempts", type=int, default=None, help="attempts in the ledger (default 100000)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 10)")
    args = ap.parse_args()
    from benchlib import print_rows

    rows = run(args.quick, args.attempts, args.reps)
    print()
    print_rows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

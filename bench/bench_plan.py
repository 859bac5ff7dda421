"""Planning benchmark (issue 8, item 2): ``run --dry-run`` for grids of 1k to 100k tasks.

Ours: this checkout's ``run --dry-run -y p-N.yaml`` in a subprocess, stdout to
/dev/null: the whole command (interpreter start, YAML, planning, printing every task).

Baseline: mlrunner 0.5.9. Its ``--dry-run`` sleeps 50 ms per task, so it is not timed;
instead, a ``python -c`` in 0.5.9's venv times its ``load_yaml`` + ``build_tasks`` (parse
and plan, in-process: no interpreter start and no printing, so the ratio flatters 0.5.9).
It is run for 1k and 10k tasks (quadratic: 20k took 9.7 s on the issue's machine).

The grid is one document, ``a: 10 values x b: 10 values x c: N/100 values`` and one
command template ``true {a} {b} {c}``; repetitions are interleaved.
Targets: linear (100k <= 6x 20k; ``--quick``, which stops at 20k: 20k <= 6x 4k) and 100k
in < 10 s. 3 repetitions (``--quick``: 2).

The sweep grammar (issue 15): the same N tasks written with ranges and a zip
(``a: {range: [0, 100]}`` zipped with ``b: {range: [0, 100]}``, ``c: {range: [0, N/100]}``),
parse + plan in-process, interleaved with the listed document's: planning takes about the
time of the listed values (grammar / listed <= 1.25x at the biggest size) and scales as
they do (its 100k/20k ratio over the listed one's <= 1.25x).

    python bench/bench_plan.py [--quick] [--sizes N ...] [--reps R] [--no-install]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    BenchError,
    Row,
    Sample,
    clean_env,
    find_old,
    our_script,
    ratio,
    timed_run,
    verdict,
)

SIZES = (1000, 10000, 20000, 100000)
QUICK_SIZES = (1000, 4000, 10000, 20000)
OLD_SIZES = (1000, 10000)
LINEAR = (5, 6.0)  # a grid 5x bigger takes at most 6x longer (100k vs 20k; quick: 20k vs 4k)
ABSOLUTE = (100000, 10.0)

OLD_SCRIPT = textwrap.dedent(
    """
    import argparse, contextlib, io, sys, time
    import mlrunner
    assert not mlrunner.__file__.startswith(sys.argv[2]), mlrunner.__file__
    from mlrunner.run import build_tasks
    from mlrunner.utils.config import load_yaml
    args = argparse.Namespace(yaml=sys.argv[1], output="output", title=None, command=None, sample=None,
                              no_subdir=False, debug=False, resource="", force=False, dry_run=True)
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        resources, templates, aliases, defaults, choices = load_yaml(args)
        tasks = build_tasks(args, templates, aliases, defaults, choices)
    print(time.perf_counter() - t, len(tasks))
    """
)


OURS_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from mlrunner.spec import load_spec
    from mlrunner.plan import plan
    t = time.perf_counter()
    p = plan(load_spec(sys.argv[1]), output="output", time="20240101.120000")
    print(time.perf_counter() - t, len(p.tasks))
    """
)


def params_yaml(n: int) -> str:
    if n % 100:
        raise ValueError(f"grid size {n} is not a multiple of 100")
    ten = ", ".join(str(i) for i in range(10))
    c = ", ".join(str(i) for i in range(n // 100))
    head = "---\ntemplate:\n  train: true {a} {b} {c}\nresource: [0, 1]\n"
    return f"{head}---\na: [{ten}]\nb: [{ten}]\nc: [{c}]\n"


def grammar_yaml(n: int) -> str:
    """The N tasks of :func:`params_yaml` written with ranges and a zip (issue 15)."""
    if n % 100:
        raise ValueError(f"grid size {n} is not a multiple of 100")
    head = "---\ntemplate:\n  train: true {a} {b} {c}\nresource: [0, 1]\n"
    grid = f"a: {{range: [0, 100]}}\nb: {{range: [0, 100]}}\n_zip: [a, b]\nc: {{range: [0, {n // 100}]}}\n"
    return f"{head}---\n{grid}"


GRAMMAR_RATIO = 1.25  # ranges + zip vs listed values, parse + plan, at the biggest size


def in_process(python: Path | str, script: str, params: Path, n: int, who: str) -> float:
    """Seconds ``script`` reports for parsing and planning ``params`` (interpreter start excluded)."""
    proc = subprocess.run(
        [str(python), "-c", script, str(params), str(Path(__file__).resolve().parents[1])],
        cwd=params.parent,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise BenchError(f"{who} planning failed: {proc.stderr.strip().splitlines()[-3:]}")
    seconds, count = proc.stdout.split()
    if int(count) != n:
        raise BenchError(f"{who} planned {count} tasks, expected {n}")
    return float(seconds)


def run(
    quick: bool, sizes: list[int] | None = None, reps: int | None = None, install: bool = True
) -> list[Row]:
    sizes = sorted(sizes or (QUICK_SIZES if quick else SIZES))
    reps = reps or (2 if quick else 3)
    old, note = find_old(install)
    print(f"Planning: run --dry-run for {sizes} tasks, {reps} repetitions; 0.5.9: {note}")
    root = Path(tempfile.mkdtemp(prefix="mlrunner-bench-plan-"))
    cli: dict[int, Sample] = {n: Sample() for n in sizes}  # ours, the whole run --dry-run
    listed: dict[int, Sample] = {n: Sample() for n in sizes}  # ours, parse + plan, listed values
    grammar: dict[int, Sample] = {n: Sample() for n in sizes}  # ours, parse + plan, ranges + zip
    inproc: dict[int, Sample] = {n: Sample() for n in sizes if n in OLD_SIZES}  # ours, parse + plan
    base: dict[int, Sample] = {n: Sample() for n in inproc if old is not None}  # 0.5.9, parse + plan
    script = our_script("run")
    env = clean_env()
    try:
        for n in sizes:
            (root / f"p-{n}.yaml").write_text(params_yaml(n))
            (root / f"g-{n}.yaml").write_text(grammar_yaml(n))
        for rep in range(reps):
            for n in sizes:
                params = root / f"p-{n}.yaml"
                subjects = ["cli", "inproc", "old", "listed", "grammar"]
                for s in subjects[rep % 5 :] + subjects[: rep % 5]:
                    if s == "cli":
                        argv = [script, "--dry-run", "-y", str(params), "-o", str(root / "output")]
                        cli[n].add(timed_run(argv, cwd=root, env=env))
                    elif s == "inproc" and n in inproc:
                        inproc[n].add(in_process(sys.executable, OURS_SCRIPT, params, n, "our"))
                    elif s == "listed":
                        listed[n].add(in_process(sys.executable, OURS_SCRIPT, params, n, "our"))
                    elif s == "grammar":
                        written = root / f"g-{n}.yaml"
                        grammar[n].add(in_process(sys.executable, OURS_SCRIPT, written, n, "our"))
                    elif s == "old" and n in base:
                        assert old is not None
                        base[n].add(in_process(old / "bin" / "python", OLD_SCRIPT, params, n, "0.5.9"))
            print(f"  rep {rep + 1}/{reps}: " + ", ".join(f"{n}: {cli[n].times[-1]:.2f}s" for n in sizes))
        if (root / "output").exists():
            raise BenchError(f"run --dry-run wrote {root / 'output'}")
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print("\nPlanning, median (min-max) s")
    print(
        "  run --dry-run: the whole command; in-process: parse + plan only (0.5.9: load_yaml + build_tasks)"
    )
    for n in sizes:
        line = f"  {n:>7} tasks: run --dry-run {cli[n].fmt()} ({cli[n].median / n * 1e6:.0f} us/task)"
        if n in inproc:
            line += f"; in-process: ours {inproc[n].fmt()}"
        if n in base:
            line += f", 0.5.9 {base[n].fmt()}, ours/0.5.9 {ratio(inproc[n].median, base[n].median)}"
        print(line)
    print("\nSweep grammar, parse + plan in-process, median (min-max) s: listed values vs ranges + a zip")
    for n in sizes:
        print(f"  {n:>7} tasks: listed {listed[n].fmt()}, grammar {grammar[n].fmt()}, "
              f"grammar/listed {ratio(grammar[n].median, listed[n].median)}")  # fmt: skip
    rows: list[Row] = []
    for n in sizes:
        if n not in inproc:
            continue
        rows.append(Row(f"plan {n // 1000}k: run --dry-run s", cli[n].fmt()))
        metric = f"plan {n // 1000}k: parse+plan in-process s"
        if n in base:
            rows.append(Row(metric, inproc[n].fmt(), base[n].fmt(), ratio(inproc[n].median, base[n].median)))
        else:
            rows.append(Row(metric, inproc[n].fmt(), note, verdict="skipped"))
    times, factor = LINEAR
    pairs = [(n // times, n) for n in sizes if n % times == 0 and n // times in cli]
    if pairs:
        small, big = max(pairs)
        r = cli[big].median / cli[small].median
        rows.append(
            Row(
                f"plan linearity: run --dry-run {big // 1000}k vs {small // 1000}k",
                cli[big].fmt(),
                cli[small].fmt(),
                f"{r:.2f}x",
                f"<= {factor:g}x",
                verdict(r <= factor),
            )
        )
    big = sizes[-1]
    r = grammar[big].median / listed[big].median
    rows.append(
        Row(f"plan {big // 1000}k: ranges + zip vs listed, parse+plan s", grammar[big].fmt(),
            listed[big].fmt(), f"{r:.2f}x", f"<= {GRAMMAR_RATIO:g}x", verdict(r <= GRAMMAR_RATIO))
    )  # fmt: skip
    if pairs:  # in-process planning grows a little faster than linearly (the garbage collector
        # scans the tasks made so far), listed or not: the new forms must scale as the lists do
        small, big = max(pairs)
        g = grammar[big].median / grammar[small].median
        r = g / (listed[big].median / listed[small].median)
        rows.append(
            Row(f"plan scaling, ranges + zip vs listed: {big // 1000}k/{small // 1000}k", f"{g:.2f}x",
                f"{listed[big].median / listed[small].median:.2f}x", f"{r:.2f}x", f"<= {GRAMMAR_RATIO:g}x",
                verdict(r <= GRAMMAR_RATIO))
        )  # fmt: skip
    n, limit = ABSOLUTE
    if n in cli:
        rows.append(
            Row(f"plan {n // 1000}k: run --dry-run s", cli[n].fmt(), target=f"< {limit:g} s",
                verdict=verdict(cli[n].median < limit))
        )  # fmt: skip
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}, 2 repetitions")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help=f"grid sizes (default {SIZES})")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--no-install", action="store_true", help="never pip install mlrunner 0.5.9")
    args = ap.parse_args()
    from benchlib import print_rows

    rows = run(args.quick, args.sizes, args.reps, not args.no_install)
    print()
    print_rows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

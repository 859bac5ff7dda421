"""Benchmark the Examiner (issue 5): 10k experiment dirs examined and tabulated.

Generates N experiment dirs (default 10,000; ``--quick``: 1,000) in mlrunner 0.5.9's
format in a temporary directory: a YAML ``param`` file, a ``stat`` file and a
``log.train.<time>`` of ~50 lines each, all written an hour "ago" (finished runs). Then,
in the same run, measures ``exam()`` + ``table()`` for:

- 0.5.9's own Examiner (``/tmp/old/bin/python``, in a subprocess, timed inside it), serial
  and with ``workers`` (dill + multiprocess): the baseline; 'skipped' when not installed;
- ours, with a user parser (a plain function reading the latest log) and with
  ``add_regex``: serial and with ``workers``, cold (no cache) and cached (a new Examiner
  reading the cache another one wrote), and after 1% of the runs finished again (their
  logs rewritten);
- ours with a heavier user parser (~1-2 ms a dir) on 1,200 dirs, serial and with workers:
  where the processes pay off (for a cheap parser the per-dir work is about what it costs
  to send a result back, so workers and serial are close).

The target is cold-with-workers <= 5 s for 10k dirs on a 2-core machine.

Results v2 (issue 16), in the same run:

- histories: H experiment dirs (default 1,000) of a ``param`` and a ``metrics.jsonl`` of P
  points (default 500; 3 metrics a line), examined cold (serial and with workers) and
  cached, and ``history()`` (the tidy DataFrame of every point), against the baseline: a
  plain loop reading the same files (``yaml.CSafeLoader`` for the param, ``json.loads``
  per line into one list per key);
- ``exam()`` + ``table(agg="seed")`` over the N dirs above with ``add_regex``, cold with
  workers: the Examiner target (<= 5 s for 10k dirs) holds with aggregation.

    python bench/bench_examine.py [--quick] [--dirs N] [--workers W] [--repeat R]
                                  [--history-dirs H] [--points P]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

import yaml

from mlrunner.examine import Examiner, ExamineWarning, latest_log

OLD_PYTHON = Path("/tmp/old/bin/python")
RUN_TIME = "20240101.120000"
PATTERN = r"valid acc ([\d.]+)"


def generate(output: Path, n: int) -> None:
    rng = random.Random(0)
    past = time.time() - 3600
    for i in range(n):
        params = {
            "lr": [0.1, 0.01, 0.001, 0.0001][i % 4],
            "hidden": [64, 128, 256, 512, 1024][(i // 4) % 5],
            "dropout": [0.0, 0.1, 0.3][(i // 20) % 3],
            "seed": i // 60,
            "data": "cifar10",
            "early-stop": bool(i % 2),
        }
        name = f"Lr_{params['lr']:g}-Hi_{params['hidden']}-Dr_{params['dropout']:g}-Seed_{params['seed']}"
        exp = output / name
        exp.mkdir(parents=True)
        full = dict(params, _name=name, _time=RUN_TIME, _output=str(exp))
        full["_scripts"] = {"train": f"CUDA_VISIBLE_DEVICES=0 python train.py --lr {params['lr']} > log 2>&1"}
        with open(exp / "param", "w") as f:
            yaml.dump(full, stream=f, width=1000000)
        (exp / "stat").write_text("train: finished\n")
        acc = rng.random()
        lines = [
            f"epoch {e} | step {e * 100} | loss {1 / (e + 1):.4f} | lr {params['lr']}" for e in range(48)
        ]
        lines.append(f"valid acc {acc:.4f}")
        lines.append("done")
        log = exp / f"log.train.{RUN_TIME}"
        log.write_text("\n".join(lines) + "\n")
        for path in (exp / "param", exp / "stat", log):
            os.utime(path, (past, past))


PARSER_SOURCE = r"""
import re
ACC = re.compile(r"valid acc ([\d.]+)")

def get_acc(path, experiment, caches):
    log = latest_log("train", path)
    if log is None:
        return
    with open(log) as f:
        found = ACC.findall(f.read())
    if found:
        experiment.metric["acc"] = float(found[-1])

LOSS = re.compile(r"epoch (\d+) \| step \d+ \| loss ([\d.]+)")

def get_curve(path, experiment, caches):
    # a heavier parser (~1-2 ms): the whole loss curve, as for a log 30x longer
    text = latest_log("train", path).read_text() * 30
    curve = [(float(loss), int(epoch)) for epoch, loss in LOSS.findall(text)]
    experiment.metric["best_loss"], experiment.metric["best_epoch"] = min(curve)
"""
scope: dict = {"latest_log": latest_log}
exec(PARSER_SOURCE, scope)  # defined in __main__-like scope, as in a notebook
get_acc = scope["get_acc"]
get_curve = scope["get_curve"]
HEAVY_DIRS = r"Seed_1?\d$"  # seeds 0-19: 1,200 dirs (all of them with --quick)


def old_examiner(output: Path, workers: int, repeat: int) -> list[float] | str:
    if not OLD_PYTHON.exists():
        return "skipped (no /tmp/old/bin/python)"
    script = (
        "import sys, time, mlrunner\nfrom mlrunner.examine import Examiner, latest_log\n"
        "assert mlrunner.__file__.startswith('/tmp/old/'), mlrunner.__file__\n"
        + PARSER_SOURCE
        + textwrap.dedent(
            f"""
            for _ in range({repeat}):
                t = time.perf_counter()
                e = Examiner()
                e.add(get_acc)
                e.exam(sys.argv[1], workers={workers})
                df = e.table()
                print("TIME", time.perf_counter() - t, len(df), flush=True)
            """
        )
    )
    proc = subprocess.run(  # cwd: not this checkout, whose mlrunner `-c` would import
        [str(OLD_PYTHON), "-c", script, str(output)], capture_output=True, text=True, cwd=output.parent
    )
    if proc.returncode != 0:
        return f"failed: {proc.stderr.strip().splitlines()[-1:]}"
    return [float(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("TIME")]


def ours(output: Path, workers: int, kind: str, cold: bool) -> float:
    if cold:
        shutil.rmtree(output / ".mlrunner", ignore_errors=True)
    t = time.perf_counter()
    e = Examiner()
    if kind == "add_regex":
        e.add_regex("acc", PATTERN, log="train")
    elif kind == "user parser":
        e.add(get_acc)
    else:
        e.add(get_curve)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExamineWarning)
        e.exam(str(output), regex=HEAVY_DIRS if kind == "heavy parser" else ".*", workers=workers)
    e.table()
    return time.perf_counter() - t


def generate_histories(output: Path, n: int, points: int) -> None:
    past = time.time() - 3600
    for i in range(n):
        params = {"lr": [0.1, 0.01, 0.001, 0.0001][i % 4], "seed": i // 4, "data": "cifar10"}
        name = f"Lr_{params['lr']:g}-Seed_{params['seed']}"
        exp = output / name
        exp.mkdir(parents=True)
        with open(exp / "param", "w") as f:
            yaml.dump(dict(params, _name=name, _time=RUN_TIME, _output=str(exp)), stream=f, width=1000000)
        lines = [
            f'{{"step": {s}, "loss": {1 / (s + 1 + i % 7):.6f}, "val_loss": {1.5 / (s + 2):.6f}, '
            f'"acc": {s / points:.6f}}}\n'
            for s in range(points)
        ]
        (exp / "metrics.jsonl").write_text("".join(lines))
        for path in (exp / "param", exp / "metrics.jsonl"):
            os.utime(path, (past, past))


def plain_loop(output: Path) -> float:
    """The baseline: the same files read with a plain loop, every point kept."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    t = time.perf_counter()
    found = {}
    for name in sorted(os.listdir(output)):
        if name.startswith("."):
            continue
        with open(output / name / "param") as f:
            params = yaml.load(f, Loader=loader)
        columns: dict[str, list[float]] = {}
        with open(output / name / "metrics.jsonl") as f:
            for line in f:
                for key, value in json.loads(line).items():
                    columns.setdefault(key, []).append(value)
        found[name] = (params, columns)
    return time.perf_counter() - t


def ours_histories(output: Path, workers: int, cold: bool) -> tuple[float, float]:
    """exam() + table(summary) seconds, and history() seconds (the tidy frame)."""
    if cold:
        shutil.rmtree(output / ".mlrunner", ignore_errors=True)
    t = time.perf_counter()
    e = Examiner()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExamineWarning)
        e.exam(str(output), workers=workers)
    e.table(summary={"val_loss": "min", "acc": "at-min:val_loss"})
    took = time.perf_counter() - t
    t = time.perf_counter()
    df = e.history()
    assert len(df) == 3 * sum(len(h["loss"][0]) for h in e.histories.values())
    return took, time.perf_counter() - t


def ours_agg(output: Path, workers: int) -> float:
    shutil.rmtree(output / ".mlrunner", ignore_errors=True)
    t = time.perf_counter()
    e = Examiner()
    e.add_regex("acc", PATTERN, log="train")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExamineWarning)
        e.exam(str(output), workers=workers)
    df = e.table(agg="seed")
    assert 0 < len(df) <= len(e.experiments)
    return time.perf_counter() - t


def history_rows(tmp: Path, n: int, points: int, w: int, repeat: int) -> list[tuple[str, list[float] | str]]:
    output = tmp / "histories"
    t = time.perf_counter()
    generate_histories(output, n, points)
    print(f"{n} history dirs x {points} points generated in {time.perf_counter() - t:.1f} s")
    base: list[float] = []
    cold: dict[int, list[float]] = {-1: [], w: []}
    cached: list[float] = []
    frame: list[float] = []
    for _ in range(repeat):  # interleaved: the machine's noise hits all alike
        base.append(plain_loop(output))
        for workers in (-1, w):
            cold[workers].append(ours_histories(output, workers, cold=True)[0])
        took, build = ours_histories(output, w, cold=False)
        cached.append(took)
        frame.append(build)
    return [
        (f"histories {n}x{points}: plain loop (baseline)", base),
        (f"histories {n}x{points}: ours, serial, cold", cold[-1]),
        (f"histories {n}x{points}: ours, workers={w}, cold", cold[w]),
        (f"histories {n}x{points}: ours, cached", cached),
        (f"histories {n}x{points}: history() frame of every point", frame),
    ]


def finish_again(output: Path, names: list[str], k: int) -> None:
    """k runs finished again: their logs rewritten (and so recent: never cached)."""
    for name in names[:k]:
        log = output / name / f"log.train.{RUN_TIME}"
        log.write_text(log.read_text().replace("valid acc", "valid acc 0.5\nvalid acc"))


def fmt(times: list[float] | str) -> str:
    if isinstance(times, str):
        return times
    return f"{statistics.median(times):7.3f} s (min {min(times):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1,000 dirs")
    ap.add_argument("--dirs", type=int, default=None)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--history-dirs", type=int, default=1000)
    ap.add_argument("--points", type=int, default=500)
    args = ap.parse_args()
    n = args.dirs or (1000 if args.quick else 10000)
    w = args.workers
    tmp = Path(tempfile.mkdtemp(prefix="bench-examine-"))
    try:
        output = tmp / "output"
        t = time.perf_counter()
        generate(output, n)
        print(f"{n} experiment dirs generated in {time.perf_counter() - t:.1f} s; {os.cpu_count()} CPUs\n")
        names = sorted(os.listdir(output))

        rows: list[tuple[str, list[float] | str]] = []
        rows.append(("0.5.9 Examiner, serial", old_examiner(output, -1, 1)))
        rows.append((f"0.5.9 Examiner, workers={w}", old_examiner(output, w, args.repeat)))
        for kind in ("user parser", "add_regex"):
            for workers in (-1, w):
                label = "serial" if workers < 0 else f"workers={w}"
                cold = [ours(output, workers, kind, cold=True) for _ in range(args.repeat)]
                rows.append((f"ours, {kind}, {label}, cold", cold))
            cached = [ours(output, w, kind, cold=False) for _ in range(args.repeat)]
            rows.append((f"ours, {kind}, cached", cached))
            again = []
            for r in range(args.repeat):
                finish_again(output, names[r * (n // 100) :], n // 100)
                again.append(ours(output, w, kind, cold=False))
            rows.append((f"ours, {kind}, 1% finished again, workers={w}", again))
        agg = [ours_agg(output, w) for _ in range(args.repeat)]
        rows.append((f"ours, add_regex + table(agg='seed'), workers={w}, cold", agg))
        rows.extend(history_rows(tmp, args.history_dirs, args.points, w, args.repeat))
        n_heavy = sum(1 for name in names if re.search(HEAVY_DIRS, name))
        for workers in (-1, w):
            label = "serial" if workers < 0 else f"workers={w}"
            heavy = [ours(output, workers, "heavy parser", cold=True) for _ in range(args.repeat)]
            rows.append((f"ours, heavy parser ({n_heavy} dirs), {label}, cold", heavy))

        width = max(len(label) for label, _ in rows)
        for label, times in rows:
            print(f"{label:<{width}}  {fmt(times)}")
        got = {label: statistics.median(t) for label, t in rows if isinstance(t, list)}
        best = got[f"ours, user parser, workers={w}, cold"]
        print()
        print(f"target: {n} dirs, user parser, workers={w}, cold: {best:.2f} s (target <= 5 s for 10k)")
        for label in ("serial", f"workers={w}"):
            ref = dict(rows)[f"0.5.9 Examiner, {label}"]
            ratio = f"{got[f'0.5.9 Examiner, {label}'] / best:.1f}x" if isinstance(ref, list) else ref
            print(f"speed-up over 0.5.9 {label}: {ratio}")
        cached = got["ours, user parser, cached"]
        print(f"cached vs cold (user parser, workers={w}): {best / cached:.1f}x faster")
        heavy = [got[label] for label in got if label.startswith("ours, heavy parser")]
        print(f"workers={w} vs serial, heavy parser: {heavy[0] / heavy[1]:.2f}x faster")
        agg_s = got[f"ours, add_regex + table(agg='seed'), workers={w}, cold"]
        print(
            f"target: {n} dirs, table(agg='seed'), workers={w}, cold: {agg_s:.2f} s (target <= 5 s for 10k)"
        )
        h = f"histories {args.history_dirs}x{args.points}"
        base = got[f"{h}: plain loop (baseline)"]
        for label in (f"ours, workers={w}, cold", "ours, serial, cold", "ours, cached"):
            print(f"{h}, {label} vs plain loop: {got[f'{h}: {label}'] / base:.2f}x the time")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

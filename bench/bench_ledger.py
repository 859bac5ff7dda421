"""Ledger benchmark: write contention across processes, and read views at 100k attempts.

1. Contention: N processes (default 16) each record M attempt transitions (default 500;
   a transition is one write transaction: start_attempt or end_attempt, alternating) on
   their own task of a shared run. Reports throughput, per-transaction wait p50/p99/max
   and the count of 'database is locked' errors, against a baseline measured in the same
   run: the same N*M transitions from one process.
2. Scale: register 100k tasks in one call; fill a ledger with 100k attempts and time
   list_runs / show_run / experiment_summary / command_states, against a baseline query
   that derives the run counts from the attempts table instead of the per-task counters.

Usage: python bench/bench_ledger.py [--procs 16] [--transitions 500] [--attempts 100000]
       [--json bench/results/ledger.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mlrunner.errors import LedgerError
from mlrunner.ledger import Ledger, views
from mlrunner.ledger.schema import refresh_all_task_progress

SPAWN = mp.get_context("spawn")


def writer(output: str, run_id: int, keys: list[str], transitions: int, barrier: Any, results: Any) -> None:
    ledger = Ledger(output)
    waits: list[float] = []
    locked = other = 0
    barrier.wait()
    t0 = time.perf_counter()
    attempt = None
    for i in range(transitions):
        key = keys[(i // 2) % len(keys)]
        start = time.perf_counter()
        try:
            if attempt is None:
                attempt = ledger.start_attempt(
                    run_id=run_id, task_key=key, command="train", resource="0", gpus=[0], log_path=None
                )
            else:
                ledger.end_attempt(attempt, status="finished", exit_code=0)
                attempt = None
        except LedgerError as e:
            if "locked" in str(e):
                locked += 1
            else:
                other += 1
        waits.append(time.perf_counter() - start)
    results.put({"pid": os.getpid(), "waits": waits, "locked": locked, "other": other,
                 "elapsed": time.perf_counter() - t0})  # fmt: skip
    ledger.close()


def contention(root: Path, procs: int, transitions: int, label: str) -> dict[str, Any]:
    output = str(root / label)
    with Ledger(output) as ledger:
        run = ledger.create_run(
            argv=["bench"], cwd=".", params_path=None, params_text=None, options={}, snapshot=None
        )
        keys = [[f"p{p}-t{j}" for j in range(5)] for p in range(procs)]
        ledger.register_tasks(
            run,
            [{"key": k, "name": k, "output_dir": f"{output}/{k}", "params": {}, "commands": ["train"]}
             for ks in keys for k in ks],
        )  # fmt: skip
    barrier, results = SPAWN.Barrier(procs + 1), SPAWN.Queue()
    workers = [
        SPAWN.Process(target=writer, args=(output, run, keys[p], transitions, barrier, results))
        for p in range(procs)
    ]
    for w in workers:
        w.start()
    barrier.wait()
    t0 = time.perf_counter()
    out = [results.get(timeout=600) for _ in workers]
    wall = time.perf_counter() - t0
    for w in workers:
        w.join()
    waits = sorted(x for r in out for x in r["waits"])
    total = procs * transitions
    with Ledger(output) as ledger:
        n_attempts = sum(len(ledger.attempts_for(k)) for ks in keys for k in ks)
        integrity = ledger.integrity_check()
    return {
        "label": label,
        "processes": procs,
        "transitions": total,
        "wall_s": wall,
        "throughput_tx_s": total / wall,
        "wait_p50_ms": 1000 * waits[len(waits) // 2],
        "wait_p99_ms": 1000 * waits[min(len(waits) - 1, int(len(waits) * 0.99))],
        "wait_max_ms": 1000 * waits[-1],
        "wait_mean_ms": 1000 * statistics.fmean(waits),
        "locked_errors": sum(r["locked"] for r in out),
        "other_errors": sum(r["other"] for r in out),
        "attempts_recorded": n_attempts,
        "attempts_expected": procs * ((transitions + 1) // 2),
        "integrity": integrity,
    }


def timed(fn: Any, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def naive_counts(ledger: Ledger) -> list[tuple[Any, ...]]:
    """Baseline: run counts derived from the attempts table (no per-task counters)."""
    conn = ledger.db.connection()
    return conn.execute(
        "WITH latest AS (SELECT task_key, command, status, max(number) FROM attempts "
        "GROUP BY task_key, command), "
        "per_task AS (SELECT t.key, sum(l.status = 'finished') AS done, t.n_commands, "
        "max(l.status IN ('failed', 'oom', 'timeout', 'node_fail')) AS failed "
        "FROM tasks t LEFT JOIN latest l ON l.task_key = t.key GROUP BY t.key) "
        "SELECT rt.run_id, count(*), sum(p.done = p.n_commands), sum(p.failed) FROM run_tasks rt "
        "JOIN per_task p ON p.key = rt.task_key GROUP BY rt.run_id"
    ).fetchall()


def scale(root: Path, n_attempts: int) -> dict[str, Any]:
    commands = ["prep", "train", "eval", "test", "export"]
    n_tasks = n_attempts // len(commands)
    # register_tasks: as many tasks as attempts, in one call (one transaction), twice (idempotent path)
    with Ledger(root / "register") as ledger:
        run = ledger.create_run(
            argv=["bench"], cwd=".", params_path=None, params_text=None, options={}, snapshot=None
        )
        big = [
            {"key": f"k{i:06d}", "name": f"lr={i}", "output_dir": str(root / "register" / f"lr={i}"),
             "params": {"lr": i, "model": "resnet"}, "commands": commands}
            for i in range(n_attempts)
        ]  # fmt: skip
        t0 = time.perf_counter()
        ledger.register_tasks(run, big)
        register_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ledger.register_tasks(run, big)
        reregister_s = time.perf_counter() - t0
    output = root / "scale"
    with Ledger(output) as ledger:
        tasks = [{"key": f"k{i:06d}", "name": f"lr={i}", "output_dir": str(output / f"lr={i}"),
                  "params": {"lr": i}, "commands": commands} for i in range(n_tasks)]  # fmt: skip
        runs = []
        for r in range(10):  # ten runs, each registering a tenth of the sweep plus overlap
            run = ledger.create_run(
                argv=["bench"], cwd=".", params_path="p.yaml", params_text="x", options={}, snapshot=None
            )
            runs.append(run)
            ledger.register_tasks(run, tasks[r * n_tasks // 10 : (r + 2) * n_tasks // 10])
        conn = ledger.db.connection()
        me = ledger._me()
        now = time.time()
        rows = []
        for i, t in enumerate(tasks):
            for c in commands:
                status = "failed" if i % 17 == 0 and c == "eval" else "finished"
                run_id = runs[i * 10 // n_tasks]
                rows.append((run_id, t["key"], c, 1, status, 0, "0", "[0]", me.host, me.boot_id, me.pid,
                             me.start, now - 60, now, None))  # fmt: skip
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO attempts (run_id, task_key, command, number, status, exit_code, resource, gpus, "
            "host, boot_id, runner_pid, runner_start, started_at, ended_at, snapshot_id, latest) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
            rows,
        )
        refresh_all_task_progress(conn)
        conn.execute("COMMIT")
        n = conn.execute("SELECT count(*) FROM attempts").fetchone()[0]
        result = {
            "attempts": n,
            "tasks": n_tasks,
            "runs": len(runs),
            "register_tasks_s": register_s,
            "register_tasks_again_s": reregister_s,
            "list_runs_s": timed(lambda: views.runs_doc(ledger)),
            "list_runs_baseline_naive_s": timed(lambda: naive_counts(ledger)),
            "show_run_s": timed(lambda: views.run_doc(ledger, runs[0])),
            "show_run_tasks": len(views.run_doc(ledger, runs[0])["tasks"]),
            "experiment_summary_s": timed(lambda: views.experiment_summary(ledger)),
            "command_states_s": timed(ledger.command_states),
            "live_attempts_s": timed(ledger.live_attempts),
        }
        # finished here or by another run: the naive count does not tell them apart
        counts = {
            r["id"]: (r["n_tasks"], r["n_finished"] + r["n_skipped"], r["n_failed"])
            for r in views.runs_doc(ledger)
        }
        naive = {r[0]: (r[1], r[2], r[3]) for r in naive_counts(ledger)}
        result["list_runs_matches_baseline"] = counts == naive
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--procs", type=int, default=16)
    parser.add_argument("--transitions", type=int, default=500)
    parser.add_argument("--attempts", type=int, default=100_000)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to put the ledgers (default: a temp dir)"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-ledger-", dir=args.dir))
    try:
        base = contention(root, 1, args.procs * args.transitions, "baseline-1-process")
        many = contention(root, args.procs, args.transitions, f"{args.procs}-processes")
        big = scale(root, args.attempts)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs")
    header = ("", "tx", "tx/s", "p50 ms", "p99 ms", "max ms", "locked", "other", "ok")
    print("{:22}{:>7}{:>9}{:>9}{:>9}{:>9}{:>8}{:>7}{:>5}".format(*header))
    for r in (base, many):
        ok = r["attempts_recorded"] == r["attempts_expected"] and r["integrity"] == "ok"
        cells = (r["label"], r["transitions"], r["throughput_tx_s"], r["wait_p50_ms"], r["wait_p99_ms"],
                 r["wait_max_ms"], r["locked_errors"], r["other_errors"], "yes" if ok else "NO")  # fmt: skip
        print("{:22}{:>7}{:>9.0f}{:>9.2f}{:>9.2f}{:>9.1f}{:>8}{:>7}{:>5}".format(*cells))
    ratio = many["throughput_tx_s"] / base["throughput_tx_s"]
    print(f"throughput ratio {args.procs} processes / 1 process: {ratio:.2f}")
    print(
        f"p99 wait ratio {args.procs} processes / 1 process: {many['wait_p99_ms'] / base['wait_p99_ms']:.1f}"
    )
    print(f"\nscale: {big['attempts']} attempts, {big['tasks']} tasks, {big['runs']} runs")
    for name in (
        "register_tasks_s", "register_tasks_again_s", "list_runs_s", "list_runs_baseline_naive_s",
        "show_run_s", "experiment_summary_s", "command_states_s", "live_attempts_s",
    ):  # fmt: skip
        print(f"  {name:32}{big[name]:8.3f} s")
    speedup = big["list_runs_baseline_naive_s"] / big["list_runs_s"]
    same = big["list_runs_matches_baseline"]
    print(f"  list_runs speed-up over baseline: {speedup:.1f}x (same counts: {same})")
    print(f"  show_run covered {big['show_run_tasks']} tasks")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"baseline": base, "contention": many, "scale": big}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

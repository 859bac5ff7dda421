"""The ledger under real concurrent processes: claims are exclusive, no write is lost or locked out."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from mlrunner import procs
from mlrunner.ledger import Ledger
from mlrunner.ledger.schema import MIGRATIONS
from mlrunner.ledger.views import run_doc

SPAWN = mp.get_context("spawn")


def claim_racer(output: str, keys: list[str], seed: int, barrier: Any, results: Any) -> None:
    try:
        barrier.wait()
        ledger = Ledger(output)  # all racers create the fresh ledger at once
        order = list(keys)
        random.Random(seed).shuffle(order)
        barrier.wait()
        claimed = []
        for key in order:
            if ledger.claim_task(key, 1):
                claimed.append(key)
            time.sleep(0.001)  # a claim takes ~0.1 ms: without a pause, one racer may take them all
        results.put((os.getpid(), claimed, None))
    except BaseException as e:
        results.put((os.getpid(), [], repr(e)))
    barrier.wait()  # hold the claims (stay alive) until every racer is done


def hammer(output: str, run_id: int, n: int, barrier: Any, results: Any) -> None:
    try:
        ledger = Ledger(output)
        barrier.wait()
        for i in range(n):
            attempt = ledger.start_attempt(
                run_id=run_id,
                task_key="hot",
                command="train",
                resource=str(i % 4),
                gpus=[i % 4],
                log_path=None,
            )
            ledger.set_attempt_process(attempt, pid=os.getpid(), pgid=os.getpgid(0), proc_start=None)
            ledger.end_attempt(attempt, status="finished" if i % 2 else "failed", exit_code=i % 2 ^ 1)
        results.put((os.getpid(), None))
    except BaseException as e:
        results.put((os.getpid(), repr(e)))


def start_all(target: Any, n: int, args: Any) -> tuple[list[Any], list[Any]]:
    barrier, results = SPAWN.Barrier(n), SPAWN.Queue()
    workers = [SPAWN.Process(target=target, args=(*args(i), barrier, results)) for i in range(n)]
    for w in workers:
        w.start()
    out = [results.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    assert [w.exitcode for w in workers] == [0] * n
    return workers, out


def test_four_processes_racing_for_claims_each_task_claimed_once(tmp_path: Path) -> None:
    output = str(tmp_path / "out")
    keys = [f"task-{i:03d}" for i in range(200)]
    workers, results = start_all(claim_racer, 4, lambda i: (output, keys, i))
    assert [error for _, _, error in results] == [None] * 4
    claimed = Counter(key for _, keys_, _ in results for key in keys_)
    assert set(claimed) == set(keys) and set(claimed.values()) == {1}
    assert all(len(keys_) < 200 for _, keys_, _ in results)  # the work was really shared
    with Ledger(output) as ledger:
        conn = ledger.db.connection()
        migrations = [n for (n,) in conn.execute("SELECT name FROM migrations")]
        assert migrations == [m.name for m in MIGRATIONS]  # migrated once, under the file lock
        holders = dict(conn.execute("SELECT task_key, pid FROM claims").fetchall())
        by_pid = {pid: set(keys_) for pid, keys_, _ in results}
        assert all(key in by_pid[pid] for key, pid in holders.items()) and len(holders) == 200
        # every racer is dead now: their claims are stealable, one by one
        assert {w.pid for w in workers} == set(by_pid)
        assert all(ledger.claim_task(key, 2) for key in keys)
        assert [tuple(r) for r in conn.execute("SELECT DISTINCT pid FROM claims")] == [(os.getpid(),)]
        assert ledger.integrity_check() == "ok"


def test_claim_of_a_live_holder_is_refused_until_it_dies(tmp_path: Path) -> None:
    output = str(tmp_path / "out")
    code = (
        "import sys; from mlrunner.ledger.store import Ledger\n"
        "L = Ledger(sys.argv[1]); print(L.claim_task('x', 1), flush=True); sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, output], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        with Ledger(output) as ledger:
            assert not ledger.claim_task("x", 2)
            ledger.release_task("x")  # not ours: left alone
            assert not ledger.claim_task("x", 2)
            holder.kill()
            holder.wait()
            assert ledger.claim_task("x", 2)
            me = procs.ProcessId.of()
            conn = ledger.db.connection()
            # a reused pid (same pid, other start time) is not the holder: stealable
            conn.execute(
                "INSERT INTO claims VALUES ('reused', 1, ?, ?, ?, ?, ?)",
                (me.host, me.boot_id, me.pid, (me.start or 0) - 1, time.time()),
            )
            assert ledger.claim_task("reused", 2)
            # a holder on another host cannot be checked from here: never stolen
            conn.execute("INSERT INTO claims VALUES ('remote', 1, 'elsewhere', 'b', 1, 1, ?)", (time.time(),))
            assert not ledger.claim_task("remote", 2)
            # an earlier boot of this host: dead
            conn.execute(
                "INSERT INTO claims VALUES ('rebooted', 1, ?, 'old-boot', 1, 1, ?)", (me.host, time.time())
            )
            assert ledger.claim_task("rebooted", 2)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_sixteen_processes_hammering_attempts(tmp_path: Path) -> None:
    output = str(tmp_path / "out")
    n, procs_n = 25, 16
    with Ledger(output) as ledger:
        run = ledger.create_run(
            argv=[], cwd=".", params_path=None, params_text=None, options={}, snapshot=None
        )
        ledger.register_tasks(
            run,
            [
                {
                    "key": "hot",
                    "name": "hot",
                    "output_dir": output + "/hot",
                    "params": {},
                    "commands": ["train"],
                }
            ],
        )
    workers, results = start_all(hammer, procs_n, lambda i: (output, run, n))
    assert [error for _, error in results] == [None] * procs_n  # no 'database is locked', nothing else
    with Ledger(output) as ledger:
        attempts = ledger.attempts_for("hot", "train")
        assert sorted(a["number"] for a in attempts) == list(range(1, n * procs_n + 1))
        assert Counter(a["runner_pid"] for a in attempts) == {w.pid: n for w in workers}
        assert all(a["pid"] == a["runner_pid"] and a["ended_at"] is not None for a in attempts)
        assert Counter(a["status"] for a in attempts) == {
            "finished": n // 2 * procs_n,
            "failed": (n + 1) // 2 * procs_n,
        }
        conn = ledger.db.connection()
        assert conn.execute("SELECT n_attempts FROM tasks WHERE key = 'hot'").fetchone()[0] == n * procs_n
        assert run_doc(ledger, run)["tasks"][0]["commands"][0]["attempts"] == n * procs_n
        assert ledger.integrity_check() == "ok"
    conn = sqlite3.connect(Path(output) / ".mlrunner" / "ledger.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()

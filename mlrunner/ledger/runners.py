"""The runners of a run: who works on it now, and their heartbeats.

A runner registers when it starts or joins a run, writes a heartbeat every
:data:`~mlrunner.ledger.base.HEARTBEAT_S` seconds while it runs (from a thread of its own),
and marks its end. A runner on another host (another container, a renamed machine) is
alive only while its heartbeat is fresh; a run ends when its last live runner does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mlrunner import procs
from mlrunner.ledger.base import HEARTBEAT_S, LedgerPart
from mlrunner.ledger.fs import describe_process


class RunnersPart(LedgerPart):
    """Register this process as a runner of a run; heartbeats; the live runners of a run."""

    def runner_started(self, run_id: int) -> None:
        me = self._me()
        now = time.time()
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO runners (host, boot_id, pid, proc_start, run_id, started_at, "
                "heartbeat_at, ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                (me.host, me.boot_id, me.pid, me.start, int(run_id), now, now),
            )

    def heartbeat(self) -> None:
        me = self._me()
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE runners SET heartbeat_at = ? WHERE host = ? AND boot_id = ? AND pid = ? "
                "AND proc_start IS ?",
                (time.time(), me.host, me.boot_id, me.pid, me.start),
            )

    def runner_ended(self) -> None:
        me = self._me()
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE runners SET ended_at = ? WHERE host = ? AND boot_id = ? AND pid = ? "
                "AND proc_start IS ?",
                (time.time(), me.host, me.boot_id, me.pid, me.start),
            )

    def other_runners(self, run_id: int) -> list[procs.ProcessId]:
        """The other runners of ``run_id`` that are alive now (not ended, alive by their
        process here or by a fresh heartbeat elsewhere)."""
        me = self._me()
        with self.db.transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT host, boot_id, pid, proc_start FROM runners WHERE run_id = ? AND ended_at IS NULL",
                (int(run_id),),
            ).fetchall()
        alive = self._liveness()
        out = []
        for r in rows:
            who = procs.ProcessId(r[0], r[1], r[2], r[3])
            if who != me and alive(who.host, who.boot_id, who.pid, who.start):
                out.append(who)
        return out

    def stopped_runners(self) -> list[str]:
        """The runners of this host that are stopped (Ctrl-Z, SIGSTOP): they hold their
        commands and maybe the ledger's write lock. Each as 'pid N (...) which is STOPPED...'."""
        with self.db.transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT pid, proc_start FROM runners WHERE ended_at IS NULL AND host = ? AND boot_id = ?",
                (procs.hostname(), procs.boot_id()),
            ).fetchall()
        out = []
        for pid, start in rows:
            if procs.proc_start_time(pid) == start and procs.proc_state(pid) in ("T", "t"):
                out.append(describe_process(pid))
        return out

    @contextmanager
    def heartbeats(self, interval: float = HEARTBEAT_S) -> Iterator[None]:
        """Within the block, a thread writes this runner's heartbeat every ``interval`` s."""
        done = threading.Event()

        def beat() -> None:
            while not done.wait(interval):
                try:
                    self.heartbeat()
                except Exception:  # a busy or failing ledger: the next beat tries again
                    pass

        thread = threading.Thread(target=beat, name="mlrunner-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(5.0)

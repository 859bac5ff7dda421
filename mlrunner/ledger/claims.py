"""Claims: at most one live runner per task, so several ``run`` processes share a sweep.

One row per claimed task in ``claims``, taken atomically; stealable only from a dead holder.
"""

from __future__ import annotations

import sqlite3
import time

from mlrunner import procs
from mlrunner.ledger.base import LedgerPart


def insert_claim(conn: sqlite3.Connection, task_key: str, run_id: int, me: procs.ProcessId) -> bool:
    """Claim an unclaimed task for ``me``; False when someone holds it."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO claims (task_key, run_id, host, boot_id, pid, proc_start, claimed_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (task_key, int(run_id), me.host, me.boot_id, me.pid, me.start, time.time()),
    )
    return cur.rowcount == 1


def delete_claim(conn: sqlite3.Connection, task_key: str, me: procs.ProcessId) -> None:
    """Drop ``me``'s claim on a task (another holder's claim is left alone)."""
    conn.execute(
        "DELETE FROM claims WHERE task_key = ? AND host = ? AND boot_id = ? AND pid = ? AND proc_start IS ?",
        (task_key, me.host, me.boot_id, me.pid, me.start),
    )


def _fill_states(
    conn: sqlite3.Connection,
    task_key: str,
    states: dict[str, str] | None,
    runners: dict[str, procs.ProcessId] | None = None,
) -> None:
    if states is not None:
        states.clear()
        for command, status, host, boot, pid, start in conn.execute(
            "SELECT command, status, host, boot_id, runner_pid, runner_start FROM attempts "
            "WHERE task_key = ? AND latest = 1",
            (task_key,),
        ):
            states[command] = status
            if runners is not None:
                runners[command] = procs.ProcessId(host, boot, pid, start)


class ClaimsPart(LedgerPart):
    """Claim and release tasks."""

    def claim_task(
        self,
        task_key: str,
        run_id: int,
        *,
        states: dict[str, str] | None = None,
        runners: dict[str, procs.ProcessId] | None = None,
    ) -> bool:
        """Atomically claim a task for this process: at most one live runner per task.

        Succeeds when nobody holds it, this process already does, or the holder is dead
        (a holder on another host counts as alive). The caller must then deal with the
        task's :meth:`~mlrunner.ledger.attempts.AttemptsPart.orphaned_attempts` before
        starting its commands.

        ``states``, when given and the claim succeeds, is filled in the claim's own
        transaction with the task's latest attempt status per command *as stored* (a
        ``running`` attempt of a dead runner stays ``running`` here: settle it first), and
        ``runners`` with the runner that made that attempt.
        """
        me = self._me()
        with self.db.transaction() as conn:  # the common case, an unclaimed task: one write transaction
            if insert_claim(conn, task_key, run_id, me):
                _fill_states(conn, task_key, states, runners)
                return True
            held = conn.execute("SELECT * FROM claims WHERE task_key = ?", (task_key,)).fetchone()
            if held is not None and (held["host"], held["boot_id"], held["pid"], held["proc_start"]) == (
                me.host, me.boot_id, me.pid, me.start,
            ):  # fmt: skip
                _fill_states(conn, task_key, states, runners)
                return True
        # held by another process: liveness is checked outside any transaction (it reads /proc)
        if (
            held is not None
            and self._liveness()(held["host"], held["boot_id"], held["pid"], held["proc_start"]) is not False
        ):
            return False
        with self.db.transaction() as conn:
            if held is not None:  # compare-and-swap: remove exactly the dead holder seen above
                conn.execute(
                    "DELETE FROM claims WHERE task_key = ? AND pid = ? AND host = ? AND boot_id = ? "
                    "AND proc_start IS ? AND claimed_at = ?",
                    (
                        task_key,
                        held["pid"],
                        held["host"],
                        held["boot_id"],
                        held["proc_start"],
                        held["claimed_at"],
                    ),
                )
            if not insert_claim(conn, task_key, run_id, me):
                return False
            _fill_states(conn, task_key, states, runners)
            return True

    def release_task(self, task_key: str) -> None:
        """Drop this process's claim on a task (another holder's claim is left alone)."""
        me = self._me()
        with self.db.transaction() as conn:
            delete_claim(conn, task_key, me)

    def held_by_others(self) -> set[str]:
        """Keys of the tasks another live runner holds now (one on another host counts as
        live, as in :meth:`claim_task`)."""
        me = self._me()
        with self.db.transaction(write=False) as conn:
            rows = conn.execute("SELECT task_key, host, boot_id, pid, proc_start FROM claims").fetchall()
        alive = self._liveness()
        return {
            r["task_key"]
            for r in rows
            if (r["host"], r["boot_id"], r["pid"], r["proc_start"]) != (me.host, me.boot_id, me.pid, me.start)
            and alive(r["host"], r["boot_id"], r["pid"], r["proc_start"]) is not False
        }

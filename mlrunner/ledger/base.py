"""What every part of the :class:`~mlrunner.ledger.store.Ledger` shares: its storage object,
this process's identity, runner liveness, JSON columns, and the "no such row" errors."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlrunner import procs
from mlrunner.errors import LedgerError
from mlrunner.ledger.db import LedgerDB
from mlrunner.status import AttemptStatus, RunStatus

# A row as sqlite3 returns it, or a dict of one.
Row = Mapping[str, Any] | sqlite3.Row


def sql_text(value: str) -> str:
    """``value`` as an SQL string literal, for the few statements that need one in their
    text (a partial index is only used when the query spells its condition out)."""
    return "'" + str(value).replace("'", "''") + "'"


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in the ledger: {value!r}")


_ENCODER = json.JSONEncoder(default=_json_default)


def dumps(value: Any) -> str:
    """A value as the JSON text of a ledger column."""
    return _ENCODER.encode(value)


def loads(text: str | None) -> Any:
    """A JSON column's value (NULL stays None)."""
    return None if text is None else json.loads(text)


HEARTBEAT_S = 5.0  # how often a runner writes its heartbeat into the ledger
STALE_S = 60.0  # a runner of another host whose heartbeat is older than this is dead

Heartbeats = Mapping[tuple[str, str, int, int | None], tuple[float, float | None]]


class Liveness:
    """Memoised runner liveness for one query. On this host and boot: its process (pid and
    start time). On another host (another container, a renamed machine): alive only while
    its heartbeat in the ledger is fresh (:data:`STALE_S`); None when it never wrote one
    (a runner older than heartbeats: unknowable here). ``heartbeats``: loads them (once)."""

    def __init__(self, heartbeats: Callable[[], Heartbeats] | None = None) -> None:
        self._memo: dict[tuple[Any, ...], bool | None] = {}
        self._load = heartbeats
        self._beats: Heartbeats | None = None

    def __call__(self, host: str, boot: str, pid: int | None, start: int | None) -> bool | None:
        key = (host, boot, pid, start)
        if key not in self._memo:
            alive = procs.is_alive(host, boot, pid, start)
            if alive is None and self._load is not None and pid is not None:
                if self._beats is None:
                    self._beats = self._load()
                beat = self._beats.get((host, boot, int(pid), start))
                if beat is not None:
                    heartbeat_at, ended_at = beat
                    alive = ended_at is None and time.time() - heartbeat_at < STALE_S
            self._memo[key] = alive
        return self._memo[key]

    def runner_alive(self, row: Row) -> bool | None:
        """Liveness of an attempt row's runner."""
        return self(row["host"], row["boot_id"], row["runner_pid"], row["runner_start"])

    def attempt_status(self, row: Row) -> str:
        """An attempt row's status, ``lost`` for a ``running`` one whose runner is dead."""
        status: str = row["status"]
        if status == AttemptStatus.RUNNING and self.runner_alive(row) is False:
            return AttemptStatus.LOST
        return status


def run_record(row: Row, alive: Liveness) -> dict[str, Any]:
    """A ``runs`` row as a record: JSON columns parsed, ``git_dirty`` a bool, ``status``
    ``lost`` for a ``running`` run whose runner is dead (the stored one in
    ``recorded_status``, the runner's liveness in ``runner_alive``)."""
    run = dict(row)
    run["argv"] = loads(run["argv"])
    run["options"] = loads(run["options"])
    run["snapshot"] = loads(run["snapshot"])
    run["git_dirty"] = None if run["git_dirty"] is None else bool(run["git_dirty"])
    run["recorded_status"] = run["status"]
    run["runner_alive"] = alive(run["host"], run["boot_id"], run["pid"], run["proc_start"])
    if run["status"] == RunStatus.RUNNING and run["runner_alive"] is False:
        run["status"] = RunStatus.LOST
    return run


def attempt_record(row: Row) -> dict[str, Any]:
    """An ``attempts`` row (maybe joined) as a record: ``gpus`` parsed."""
    attempt = dict(row)
    if "gpus" in attempt:
        attempt["gpus"] = loads(attempt["gpus"])
    return attempt


class LedgerPart:
    """A concern of the ledger (runs, claims, attempts, queries) over its one storage object."""

    db: LedgerDB
    _me_cache: tuple[int, procs.ProcessId] | None = None

    @property
    def path(self) -> Path:
        """The ledger file."""
        return self.db.path

    def _me(self) -> procs.ProcessId:
        pid = os.getpid()
        if self._me_cache is None or self._me_cache[0] != pid:
            self._me_cache = (pid, procs.ProcessId.of(pid))
        return self._me_cache[1]

    def _liveness(self) -> Liveness:
        """A :class:`Liveness` that reads this ledger's heartbeats for runners of other hosts."""
        return Liveness(self._heartbeats)

    def _heartbeats(self) -> Heartbeats:
        with self.db.transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT host, boot_id, pid, proc_start, heartbeat_at, ended_at FROM runners"
            ).fetchall()
        return {(r[0], r[1], r[2], r[3]): (r[4], r[5]) for r in rows}

    def runner_alive(self, who: procs.ProcessId) -> bool | None:
        """Whether a runner is alive (see :class:`Liveness`)."""
        return self._liveness()(who.host, who.boot_id, who.pid, who.start)

    def _no_run(self, run_id: int) -> LedgerError:
        return LedgerError(
            f"no run {run_id} in the ledger", file=str(self.path), hint="`mlrunner ledger ls` lists the runs"
        )

    def _no_attempt(self, attempt_id: int) -> LedgerError:
        return LedgerError(f"no attempt {attempt_id} in the ledger", file=str(self.path))

"""What every part of the :class:`~mlrunner.ledger.store.Ledger` shares: its storage object,
this process's identity, runner liveness, JSON columns, and the "no such row" errors."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping
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


class Liveness:
    """Memoised runner liveness for one query (None: on another host, unknowable here)."""

    def __init__(self) -> None:
        self._memo: dict[tuple[Any, ...], bool | None] = {}

    def __call__(self, host: str, boot: str, pid: int | None, start: int | None) -> bool | None:
        key = (host, boot, pid, start)
        if key not in self._memo:
            self._memo[key] = procs.is_alive(host, boot, pid, start)
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

    def _no_run(self, run_id: int) -> LedgerError:
        return LedgerError(
            f"no run {run_id} in the ledger", file=str(self.path), hint="`mlrunner ledger ls` lists the runs"
        )

    def _no_attempt(self, attempt_id: int) -> LedgerError:
        return LedgerError(f"no attempt {attempt_id} in the ledger", file=str(self.path))

"""Ledger columns for the table: what the runner recorded about each experiment dir.

Joined on ``os.path.realpath(experiment dir)`` with
:func:`mlrunner.ledger.views.experiment_summary`. Dirs the ledger does not know (0.5.9
runs, or output trees without a ledger) get missing values (NaN / <NA> / NaT / None).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

# table column, summary key, pandas dtype (None: plain object column)
COLUMNS: tuple[tuple[str, str, str | None], ...] = (
    ("_status", "status", None),
    ("_git_commit", "git_commit", None),
    ("_git_dirty", "git_dirty", "boolean"),
    ("_run_id", "run_id", "Int64"),
    ("_started_at", "started_at", "datetime64[ns]"),
    ("_duration_s", "duration_s", "float64"),
    ("_resource", "resource", None),
    ("_attempts", "attempts", "Int64"),
    ("_code_changed", "code_changed", "boolean"),
    ("_failure", "failure_class", None),
    ("_env", "env", None),
)


def summaries(outputs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """realpath(experiment dir) -> summary, over the ledgers of ``outputs`` that have one."""
    from mlrunner.ledger import Ledger, ledger_path
    from mlrunner.ledger.views import experiment_summary

    merged: dict[str, dict[str, Any]] = {}
    for output in dict.fromkeys(outputs):
        if not ledger_path(output).is_file():
            continue
        with Ledger(output, create=False) as ledger:
            merged.update(experiment_summary(ledger))
    return merged


def _local_time(epoch: Any) -> Any:
    if epoch is None:
        return None
    return pd.Timestamp(datetime.datetime.fromtimestamp(float(epoch)))  # local wall time, like _time


def join(df: pd.DataFrame, exp_dirs: Sequence[str], outputs: Sequence[str]) -> pd.DataFrame:
    """``df`` (one row per dir of ``exp_dirs``) with the ledger columns appended."""
    known = summaries(outputs)
    rows = [known.get(os.path.realpath(d)) or {} for d in exp_dirs]
    out: pd.DataFrame = df.copy()
    for column, key, dtype in COLUMNS:
        values = [row.get(key) for row in rows]
        if key == "started_at":
            values = [_local_time(v) for v in values]
        out[column] = pd.Series(values, index=out.index, dtype=dtype if dtype else object)
    return out


def failed_flags(exp_dirs: Sequence[str], outputs: Sequence[str]) -> list[bool]:
    """Whether each experiment failed: its task status in the ledger, else (a dir the ledger
    does not know, 0.5.9's) a ``failed`` command in its ``stat`` file."""
    from mlrunner.expdir import read_stat
    from mlrunner.status import TaskStatus

    known = summaries(outputs)
    out = []
    for d in exp_dirs:
        row = known.get(os.path.realpath(d))
        if row is not None:
            out.append(row.get("status") == TaskStatus.FAILED)
        else:
            out.append(any(word == TaskStatus.FAILED for word in read_stat(d).values()))
    return out

"""The experiments table for people: picked and sorted columns, cells as text (short commits
and hashes, times to the second, durations as 1h02m03s, floats to 6 digits), and the
ledger columns that fit the terminal's width. Pure functions over a DataFrame-like
object; the caller imports pandas (this module does not)."""

from __future__ import annotations

import datetime
import fnmatch
import math
from collections.abc import Sequence
from typing import Any

from mlrunner.errors import UsageError, did_you_mean

SHORT = {"_git_commit": 10, "_env": 10}
# the ledger columns a terminal shows first, while they fit; the others on request
LEDGER_PRIORITY = (
    "_status", "_duration_s", "_started_at", "_git_commit", "_failure", "_attempts", "_resource",
    "_run_id", "_git_dirty", "_code_changed", "_env", "_stale", "_env_changed",
)  # fmt: skip
GAP = 3  # what a column costs beside its text (rich's padding and border)


def pick_columns(
    columns: Sequence[Any], patterns: Sequence[str], keep_first: Sequence[str] = ()
) -> list[Any]:
    """The columns named (or matched by a glob: ``'val_*'``) by ``patterns``, in that order;
    ``keep_first`` ones (``_name``) stay in front. UsageError for a pattern matching none."""
    names = [str(c) for c in columns]
    chosen: list[Any] = [c for c in columns if str(c) in keep_first]
    for pattern in patterns:
        hits = [
            c for c, n in zip(columns, names, strict=True) if n == pattern or fnmatch.fnmatchcase(n, pattern)
        ]
        if not hits:
            raise UsageError(
                f"--columns: no column '{pattern}'",
                hint=did_you_mean(pattern, names) or f"the columns are: {', '.join(names)}",
            )
        chosen.extend(c for c in hits if c not in chosen)
    return chosen


def sort_spec(text: str, columns: Sequence[Any]) -> tuple[Any, bool]:
    """``--sort COL`` (ascending) or ``--sort -COL`` / ``COL:desc`` -> (column, ascending)."""
    ascending = True
    name = text
    if name.startswith("-") and name[1:] in [str(c) for c in columns]:
        name, ascending = name[1:], False
    for suffix, asc in ((":desc", False), (":asc", True)):
        if name.endswith(suffix):
            name, ascending = name[: -len(suffix)], asc
    for column in columns:
        if str(column) == name:
            return column, ascending
    names = [str(c) for c in columns]
    raise UsageError(
        f"--sort: no column '{name}'",
        hint=did_you_mean(name, names) or f"the columns are: {', '.join(names)}",
    )


def _missing(value: Any) -> bool:
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    try:
        return bool(value != value)  # NaN, NaT, <NA>
    except (TypeError, ValueError):
        return False


def duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"


def cell(column: Any, value: Any) -> str:
    """One cell as text."""
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(column, v) for v in value)
    if _missing(value):
        return ""
    if column in SHORT and isinstance(value, str):
        return value[: SHORT[column]]
    if column == "_duration_s" and isinstance(value, (int, float)):
        return duration(float(value))
    if isinstance(value, datetime.datetime):  # pandas Timestamps too
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        number = float(value)
        return f"{number:.6g}" if math.isfinite(number) else str(number)
    return str(value)


def text_rows(columns: Sequence[Any], rows: Sequence[Sequence[Any]]) -> list[list[str]]:
    return [[cell(c, v) for c, v in zip(columns, row, strict=True)] for row in rows]


def fit_width(
    headers: Sequence[str], rows: Sequence[Sequence[str]], width: int
) -> tuple[list[int], list[str]]:
    """Indexes of the columns to show in ``width`` characters: every non-ledger column, then
    ledger columns by priority while they fit; and the names of those left out."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) + GAP for i, h in enumerate(headers)]
    ledger = [i for i, h in enumerate(headers) if h in LEDGER_PRIORITY]
    shown = [i for i in range(len(headers)) if i not in ledger]
    used = sum(widths[i] for i in shown) + 1
    hidden: list[str] = []
    for i in sorted(ledger, key=lambda i: LEDGER_PRIORITY.index(headers[i])):
        if used + widths[i] <= width:
            shown.append(i)
            used += widths[i]
        else:
            hidden.append(headers[i])
    return sorted(shown), hidden

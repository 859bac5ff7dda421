"""The experiments table, built exactly as 0.5.9's ``Examiner.table`` builds it.

Columns: the param headers (concise: only keys with more than one distinct (key, value)
pair over all experiments, so a key that exists in some experiments only with one value is
left out, as in 0.5.9; reserved ``_...`` params never), sorted, then the sorted metric
headers. Rows: one per experiment, in the order they were examined.
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

import pandas as pd

from mlrunner.examine.dirs import Experiment


def _sort_key(key: Any) -> tuple[int, str]:
    # All-str headers sort exactly as sorted() does; YAML int keys go last instead of raising.
    return (0, key) if isinstance(key, str) else (1, repr(key))


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return ("\x00list", tuple(_freeze(v) for v in value))
    if isinstance(value, dict):
        return ("\x00dict", tuple((_freeze(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, set):
        return ("\x00set", frozenset(_freeze(v) for v in value))
    try:
        hash(value)
    except TypeError:
        return ("\x00repr", repr(value))
    return value


def _param_pairs(experiments: Iterable[Experiment]) -> set[tuple[Any, Any]]:
    # reserved: a str key starting with "_" (YAML also makes int, bool... keys)
    try:
        return {
            (k, v) for e in experiments for k, v in e.param.items() if k.__class__ is not str or k[:1] != "_"
        }
    except TypeError:  # list or dict params (0.5.9 crashed here)
        return {
            (k, _freeze(v))
            for e in experiments
            for k, v in e.param.items()
            if k.__class__ is not str or k[:1] != "_"
        }


def headers(
    experiments: Sequence[Experiment], concise: bool = True, extra_metrics: Iterable[str] = ()
) -> tuple[list[Any], list[Any]]:
    """(param headers, metric headers)."""
    count = collections.Counter(k for k, _ in _param_pairs(experiments))
    params = [k for k, c in count.items() if c > 1] if concise else list(count)
    metrics = set(extra_metrics)
    for e in experiments:
        metrics.update(e.metric)
    return sorted(params, key=_sort_key), sorted(metrics, key=_sort_key)


def build(
    experiments: Sequence[Experiment], concise: bool = True, extra_metrics: Iterable[str] = ()
) -> tuple[list[Any], list[list[Any]]]:
    """(columns, rows of raw cell values, None where an experiment lacks the key)."""
    param_headers, metric_headers = headers(experiments, concise, extra_metrics)
    rows = [
        [e.param.get(h) for h in param_headers] + [e.metric.get(h) for h in metric_headers]
        for e in experiments
    ]
    return param_headers + metric_headers, rows


def print_tsv(columns: Sequence[Any], rows: Sequence[Sequence[Any]], file: TextIO | None = None) -> None:
    """0.5.9's ``print_tsv`` output: a header line, then ``str()`` of each cell, tab-separated."""
    out = file or sys.stdout
    print("\t".join(str(h) for h in columns), file=out)
    for row in rows:
        print("\t".join(str(v) for v in row), file=out)


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-able rows: missing -> None, times -> ISO 8601 local time, numpy -> Python."""
    out = []
    for row in df.to_dict(orient="records"):
        out.append({str(k): _plain(v) for k, v in row.items()})
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    item = getattr(value, "item", None)  # numpy scalars
    return item() if callable(item) else value

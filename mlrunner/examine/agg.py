"""Aggregation over seeds (or any params): experiments that differ only in those params form
a group; each metric becomes ``<metric>_mean``, ``<metric>_std`` and ``<metric>_sem``.

``n``: members with a value (of any metric); ``_n_missing``: members with none;
``_n_failed``: members whose command failed (the ledger's status, else the ``stat`` file).
Reserved params (``_name``, ``_time``...) never split a group. ``std`` is the sample
standard deviation (ddof 1: NaN for one value); ``sem`` = std / sqrt(values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mlrunner.errors import UsageError, did_you_mean
from mlrunner.examine.dirs import Experiment, Params
from mlrunner.examine.summary import STEPS_COLUMN, _scalar
from mlrunner.examine.table import _freeze, _sort_key, headers

STATS = ("mean", "std", "sem")


def check_by(by: str | Sequence[Any], params: Sequence[Params]) -> list[Any]:
    """The params to aggregate over, each a param of some experiment."""
    wanted = [by] if isinstance(by, str) else list(by)
    if not wanted:
        raise UsageError("agg: name at least one param to aggregate over", hint="e.g. agg='seed'")
    known = {k for p in params for k in p}
    for name in wanted:
        if params and name not in known:
            visible = sorted(str(k) for k in known if not str(k).startswith("_"))
            raise UsageError(
                f"agg: no experiment has a param {name!r}",
                hint=did_you_mean(str(name), visible) or f"the params are: {', '.join(visible)}",
            )
    return wanted


def _key(param: Params, by: set[Any]) -> tuple[Any, ...]:
    items = [
        (k, _freeze(v)) for k, v in param.items() if k not in by and not (k.__class__ is str and k[:1] == "_")
    ]
    items.sort(key=lambda kv: _sort_key(kv[0]))
    return tuple(items)


def groups_of(params: Sequence[Params], by: Sequence[Any]) -> tuple[list[int], list[list[int]]]:
    """Each experiment's group number, and each group's members (in order of appearance)."""
    index: dict[tuple[Any, ...], int] = {}
    of: list[int] = []
    members: list[list[int]] = []
    byset = set(by)
    for i, param in enumerate(params):
        g = index.setdefault(_key(param, byset), len(index))
        if g == len(members):
            members.append([])
        members[g].append(i)
        of.append(g)
    return of, members


def _stats(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return math.nan, math.nan, math.nan
    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if len(arr) > 1 else math.nan
    return mean, std, std / math.sqrt(len(arr)) if len(arr) > 1 else math.nan


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def agg_table(
    experiments: Sequence[Experiment],
    names: Sequence[str],
    by: Sequence[Any],
    failed: Sequence[bool],
    *,
    concise: bool = True,
    extra_metrics: Sequence[Any] = (),
    steps: Sequence[int] | None = None,
    members_column: bool = False,
) -> pd.DataFrame:
    """One row per group: its params (those that vary, less ``by``), ``_members`` (dir
    names, when asked), the stats of each numeric metric, ``_steps`` (the most of its
    members, when given), ``n``, ``_n_failed``, ``_n_missing``."""
    params = [e.param for e in experiments]
    param_headers, metric_headers = headers(experiments, concise, extra_metrics)
    param_headers = [h for h in param_headers if h not in set(by)]
    _, members = groups_of(params, by)
    numbers = {m: [_scalar(e.metric.get(m)) for e in experiments] for m in metric_headers}
    numeric = [m for m in metric_headers if any(v is not None for v in numbers[m])]
    data: dict[Any, list[Any]] = {h: [] for h in param_headers}
    if members_column:
        data["_members"] = []
    for m in numeric:
        for stat in STATS:
            data[f"{m}_{stat}"] = []
    if steps is not None:
        data[STEPS_COLUMN] = []
    data["n"], data["_n_failed"], data["_n_missing"] = [], [], []
    for group in members:
        first = params[group[0]]
        for h in param_headers:
            data[h].append(first.get(h))
        if members_column:
            data["_members"].append([names[i] for i in group])
        for m in numeric:
            values = [v for i in group if (v := numbers[m][i]) is not None and not math.isnan(v)]
            for stat, value in zip(STATS, _stats(values), strict=True):
                data[f"{m}_{stat}"].append(value)
        if steps is not None:
            data[STEPS_COLUMN].append(max(steps[i] for i in group))
        with_value = sum(
            1 for i in group if any(_present(experiments[i].metric.get(m)) for m in metric_headers)
        )
        data["n"].append(with_value)
        data["_n_failed"].append(sum(1 for i in group if failed[i]))
        data["_n_missing"].append(len(group) - with_value)
    df: pd.DataFrame = pd.DataFrame(
        {k: pd.Series(v, dtype=_dtype(k, param_headers)) for k, v in data.items()}
    )
    return df


def _dtype(column: Any, param_headers: Sequence[Any]) -> Any:
    if column in param_headers or column == "_members":
        return object
    if column in ("n", "_n_failed", "_n_missing", STEPS_COLUMN):
        return "int64"
    return "float64"

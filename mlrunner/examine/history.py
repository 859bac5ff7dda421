"""Histories as a tidy DataFrame: one row per point, built with numpy (no Python loop per
point), and its aggregation over groups of experiments (mean, std, sem, n per step)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mlrunner.errors import UsageError, did_you_mean
from mlrunner.examine.series import Histories

_SOURCES = "histories come from metrics.jsonl, TensorBoard event files and add_regex(..., history=True)"
RESERVED = ("_name", "_group", "step", "metric", "value", "mean", "std", "sem", "n")


def label(param: Any) -> Any:
    """A param's column label: its name, or ``param.<name>`` when the name is one of ours."""
    return f"param.{param}" if param in RESERVED else param


def check_metrics(metrics: Iterable[str], histories: Sequence[Histories]) -> list[str]:
    """The metrics asked for, each known to some history (UsageError with a hint when not)."""
    known: set[str] = set()
    for hist in histories:
        known.update(hist)
    wanted = [metrics] if isinstance(metrics, str) else list(metrics)
    for name in wanted:
        if name not in known:
            listed = f"metrics with a history: {', '.join(sorted(map(str, known)))}" if known else _SOURCES
            raise UsageError(
                f"no experiment has a history of metric {name!r}",
                hint=did_you_mean(str(name), [str(k) for k in known]) or listed,
            )
    return wanted


def _steps(x: np.ndarray) -> np.ndarray:
    """Integral steps as int64 (the usual case), else float64."""
    if len(x) and np.isfinite(x).all() and (np.mod(x, 1) == 0).all() and np.abs(x).max() < 2**62:
        return x.astype(np.int64)
    return x


def tidy(
    names: Sequence[str],
    params: Sequence[dict[Any, Any]],
    param_columns: Sequence[Any],
    histories: Sequence[Histories],
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """``_name``, the ``param_columns``, ``step``, ``metric``, ``value``: one row per point,
    experiments in order, each one's metrics sorted, points in the order written."""
    wanted = set(metrics) if metrics is not None else None
    all_metrics = sorted({m for h in histories for m in h if wanted is None or m in wanted}, key=str)
    code = {m: i for i, m in enumerate(all_metrics)}
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    counts: list[int] = []
    exp_codes: list[int] = []
    metric_codes: list[int] = []
    for i, hist in enumerate(histories):
        for m in sorted(hist, key=str):
            if m not in code:
                continue
            x, y = hist[m]
            xs.append(x)
            ys.append(y)
            counts.append(len(x))
            exp_codes.append(i)
            metric_codes.append(code[m])
    step = np.concatenate(xs) if xs else np.empty(0, dtype=np.float64)
    value = np.concatenate(ys) if ys else np.empty(0, dtype=np.float64)
    rep = np.repeat(np.asarray(exp_codes, dtype=np.int64), counts)
    columns: dict[Any, Any] = {
        "_name": pd.Categorical.from_codes(rep, categories=pd.Index(list(names), dtype=object))
    }
    for column in param_columns:
        per_exp = np.empty(len(params), dtype=object)
        per_exp[:] = [p.get(column) for p in params]
        columns[label(column)] = per_exp[rep]
    columns["step"] = _steps(step)
    columns["metric"] = pd.Categorical.from_codes(
        np.repeat(np.asarray(metric_codes, dtype=np.int64), counts),
        categories=pd.Index(all_metrics, dtype=object),
    )
    columns["value"] = value
    df: pd.DataFrame = pd.DataFrame(columns)
    return df


def aggregate(df: pd.DataFrame, groups: Sequence[int], group_params: Sequence[dict[Any, Any]],
              param_columns: Sequence[Any]) -> pd.DataFrame:  # fmt: skip
    """Per group, metric and step: ``mean``, ``std``, ``sem``, ``n`` of the tidy ``df``
    (``groups``: each experiment's group, in ``df``'s ``_name`` category order)."""
    group_of = np.asarray(groups, dtype=np.int64)[df["_name"].cat.codes.to_numpy()]
    frame = pd.DataFrame(
        {"_group": group_of, "metric": df["metric"], "step": df["step"], "value": df["value"]}
    )
    stats = frame.groupby(["_group", "metric", "step"], observed=True, sort=True)["value"].agg(
        ["mean", "std", "count"]
    )
    stats = stats[stats["count"] > 0].reset_index()  # a step where every value was NaN: no point
    n = stats["count"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        sem = stats["std"].to_numpy() / np.sqrt(n)
    codes = stats["_group"].to_numpy()
    out: dict[Any, Any] = {"_group": codes}
    for column in param_columns:
        per_group = np.empty(len(group_params), dtype=object)
        per_group[:] = [p.get(column) for p in group_params]
        out[label(column)] = per_group[codes]
    out["step"] = stats["step"].to_numpy()
    out["metric"] = stats["metric"]
    out["mean"] = stats["mean"].to_numpy()
    out["std"] = stats["std"].to_numpy()
    out["sem"] = sem
    out["n"] = n.astype(np.int64)
    result: pd.DataFrame = pd.DataFrame(out)
    return result

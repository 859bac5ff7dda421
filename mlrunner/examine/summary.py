"""Metric summaries: what one table cell says about a metric's history.

``last`` (the default, 0.5.9's value: the last value written), ``first``, ``min``, ``max``,
``mean`` of the history, or ``at-min:OTHER`` / ``at-max:OTHER``: the metric's value at the
step where OTHER was lowest / highest (as of that step: its last point at or before it).
A metric without a history (``metrics.json``, a parser's value) summarises its one value.
NaN points are left out; a summary with nothing to summarise is missing (None).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlrunner.errors import UsageError, did_you_mean
from mlrunner.examine.series import Histories, Series

KINDS = ("last", "first", "min", "max", "mean")
AT_KINDS = ("at-min", "at-max")
STEPS_COLUMN = "_steps"
_HINT = "a summary is last, first, min, max, mean, at-min:OTHER or at-max:OTHER, e.g. acc=at-min:val_loss"


@dataclass(frozen=True)
class Summary:
    kind: str  # one of KINDS or AT_KINDS
    other: str | None = None  # the metric whose min/max picks the step (AT_KINDS)

    def __str__(self) -> str:
        return f"{self.kind}:{self.other}" if self.other is not None else self.kind


def parse_summary(spec: Mapping[Any, str] | None) -> dict[Any, Summary]:
    """``{"val_loss": "min", "acc": "at-min:val_loss"}`` -> Summaries; UsageError when a
    kind is unknown."""
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise UsageError(
            f"summary must be a mapping of metric -> summary, got {type(spec).__name__}", hint=_HINT
        )
    out: dict[Any, Summary] = {}
    for metric, text in spec.items():
        if not isinstance(text, str):
            raise UsageError(f"summary of {metric!r}: expected a string, got {text!r}", hint=_HINT)
        kind, sep, other = text.strip().partition(":")
        if sep and kind in AT_KINDS and other:
            out[metric] = Summary(kind, other)
        elif not sep and kind in KINDS:
            out[metric] = Summary(kind)
        else:
            choices = [*KINDS, *(f"{k}:{metric}" for k in AT_KINDS)]
            hint = did_you_mean(text, choices) or _HINT
            raise UsageError(f"unknown summary {text!r} for metric {metric!r}", hint=hint)
    return out


def check_known(summaries: Mapping[Any, Summary], known: Iterable[Any]) -> None:
    """UsageError when a summary names a metric that no experiment has."""
    names = set(known)
    for metric, summary in summaries.items():
        for name in (metric, summary.other):
            if name is not None and name not in names:
                strings = [str(n) for n in names]
                raise UsageError(
                    f"summary {metric}={summary}: no experiment has a metric {name!r}",
                    hint=did_you_mean(str(name), strings) or f"the metrics are: {', '.join(sorted(strings))}",
                )


def _clean(series: Series) -> Series:
    x, y = series
    keep = ~np.isnan(y)
    return (x, y) if keep.all() else (x[keep], y[keep])


def _scalar(value: Any) -> float | None:
    if type(value) in (int, float) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    item = getattr(value, "item", None)  # numpy scalars from a user parser
    if callable(item) and not isinstance(value, (str, bytes)):
        try:
            return _scalar(item())
        except (TypeError, ValueError):
            return None
    return None


def _step_of(series: Series | None, kind: str) -> float | None:
    if series is None:
        return None
    x, y = _clean(series)
    if not len(y):
        return None
    i = int(np.argmin(y) if kind == "at-min" else np.argmax(y))  # the first best point
    return float(x[i])


def _as_of(series: Series, step: float) -> float | None:
    x, y = _clean(series)
    exact = np.flatnonzero(x == step)
    if len(exact):
        return float(y[exact[-1]])
    before = x <= step
    if not before.any():
        return None
    best = x[before].max()
    return float(y[np.flatnonzero(x == best)[-1]])


def summarize_one(value: Any, series: Series | None, summary: Summary, histories: Histories) -> Any:
    """One cell: ``value`` (the metric's last value), ``series`` (its history or None)."""
    kind = summary.kind
    if kind == "last":
        return value
    if kind in AT_KINDS:
        assert summary.other is not None
        step = _step_of(histories.get(summary.other), kind)
        if step is None or series is None:
            return None
        return _as_of(series, step)
    if series is None:
        return _scalar(value)
    _, y = _clean(series)
    if not len(y):
        return None
    if kind == "first":
        return float(y[0])
    if kind == "min":
        return float(y.min())
    if kind == "max":
        return float(y.max())
    return float(y.mean())


def summarize(
    metric: Mapping[Any, Any], histories: Histories, summaries: Mapping[Any, Summary]
) -> dict[Any, Any]:
    """The experiment's metric columns with the summaries applied."""
    out = dict(metric)
    for name, summary in summaries.items():
        if name in out or name in histories:
            out[name] = summarize_one(out.get(name), histories.get(name), summary, histories)
    return out


def n_steps(histories: Histories) -> int:
    """``_steps``: the most points any of the experiment's histories has."""
    return max((len(x) for x, _ in histories.values()), default=0)

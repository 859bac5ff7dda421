"""The Examiner's DataFrames past 0.5.9's table: summaries, ``_steps``, aggregation over
params, staleness columns, and the tidy histories (with bands when aggregated).

The Examiner hands over what it found (names, experiments, histories, dirs); nothing here
reads parsers' state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlrunner.errors import UsageError
from mlrunner.examine import agg as aggregation
from mlrunner.examine import history as hist_frames
from mlrunner.examine import ledger_join, stale, summary, table
from mlrunner.examine.dirs import Experiment
from mlrunner.examine.series import Histories

Agg = str | Sequence[Any] | None


@dataclass(frozen=True)
class Found:
    """What one Examiner holds, in row order."""

    names: list[str]
    experiments: list[Experiment]
    histories: list[Histories]
    dirs: list[str]  # experiment dir paths
    outputs: list[str]  # the output dir each was examined under
    regex_names: list[str]


def _summarized(found: Found, summaries: Mapping[Any, summary.Summary]) -> list[Experiment]:
    if found.experiments:
        known: set[Any] = set(found.regex_names)
        for e, h in zip(found.experiments, found.histories, strict=True):
            known.update(e.metric)
            known.update(h)
        summary.check_known(summaries, known)
    return [
        Experiment(e.cache, summary.summarize(e.metric, h, summaries), e.param)
        for e, h in zip(found.experiments, found.histories, strict=True)
    ]


def build(
    found: Found,
    *,
    concise: bool = True,
    ledger: bool = False,
    name: bool = False,
    summary_spec: Mapping[Any, str] | None = None,
    agg: Agg = None,
    stale_columns: bool = False,
) -> pd.DataFrame:
    """The table with the options past 0.5.9's (see :meth:`Examiner.table`)."""
    summaries = summary.parse_summary(summary_spec)
    experiments = _summarized(found, summaries) if summary_spec is not None else found.experiments
    steps = [summary.n_steps(h) for h in found.histories] if summary_spec is not None else None
    if agg is not None:
        if stale_columns:
            raise UsageError("stale columns are per experiment: ask for them without agg")
        by = aggregation.check_by(agg, [e.param for e in experiments])
        failed = ledger_join.failed_flags(found.dirs, found.outputs)
        return aggregation.agg_table(
            experiments, found.names, by, failed, concise=concise, extra_metrics=found.regex_names,
            steps=steps, members_column=name,
        )  # fmt: skip
    columns, rows = table.build(experiments, concise, found.regex_names)
    df: pd.DataFrame = pd.DataFrame(rows, columns=columns)
    if steps is not None:
        df[summary.STEPS_COLUMN] = pd.Series(steps, index=df.index, dtype="int64")
    if name:
        df.insert(0, "_name", pd.Series(found.names, dtype=object))
    if ledger:
        df = ledger_join.join(df, found.dirs, found.outputs)
    if stale_columns:
        code, notes = stale.code_stale(found.dirs, found.outputs)
        df["_stale"] = pd.Series(code, index=df.index, dtype="boolean")
        df["_env_changed"] = pd.Series(stale.env_changed(found.dirs), index=df.index, dtype="boolean")
        if notes:
            df.attrs["notes"] = notes
    return df


def history(found: Found, metrics: str | Sequence[str] | None = None, agg: Agg = None,
            concise: bool = True) -> pd.DataFrame:  # fmt: skip
    """Tidy histories (see :meth:`Examiner.history`)."""
    wanted = hist_frames.check_metrics(metrics, found.histories) if metrics is not None else None
    param_headers, _ = table.headers(found.experiments, concise)
    params = [e.param for e in found.experiments]
    if agg is None:
        return hist_frames.tidy(found.names, params, param_headers, found.histories, wanted)
    by = aggregation.check_by(agg, params)
    param_headers = [h for h in param_headers if h not in set(by)]
    of, members = aggregation.groups_of(params, by)
    df = hist_frames.tidy(found.names, params, [], found.histories, wanted)
    return hist_frames.aggregate(df, of, [params[m[0]] for m in members], param_headers)

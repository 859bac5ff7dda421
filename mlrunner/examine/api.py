"""Results as plain data (JSON-able dicts and lists), for programs: the CLI renders them,
the web UI serves them. Nothing here prints.

:class:`Results` is one output dir, examined again at each call (cheap: the Examiner's
cache holds every unchanged dir in memory, and a growing metrics.jsonl is read on from
where it stopped), so a long-lived one (a server's) always answers with what is on disk.
The module functions are one-shot shortcuts.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mlrunner.examine import diffing
from mlrunner.examine.examiner import Examiner, ExamineWarning
from mlrunner.examine.table import headers, records

Agg = str | Sequence[str] | None


def _plain_list(values: np.ndarray) -> list[Any]:
    """An array as JSON-able numbers: integral steps as int, NaN/inf as None."""
    out: list[Any] = values.tolist()
    if values.dtype.kind == "f":
        out = [None if not math.isfinite(v) else v for v in out]
    return out


def _steps(x: np.ndarray) -> list[Any]:
    if len(x) and np.isfinite(x).all() and (np.mod(x, 1) == 0).all():
        return [int(v) for v in x.tolist()]
    return _plain_list(x)


class Results:
    """The experiments of one output dir: table rows, curves, diffs, details.

    ``regexes``: ``(name, pattern, log)`` metrics from the logs (log None: every log);
    ``workers``: processes for examining (default: every CPU)."""

    def __init__(
        self,
        output: str | os.PathLike[str] = "output",
        *,
        regexes: Sequence[tuple[str, str, str | None]] = (),
        workers: int | None = None,
        regex: str = ".*",
    ) -> None:
        self.output = os.fspath(output)
        self.regex = regex
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        self.examiner = Examiner()
        for name, pattern, log in regexes:
            self.examiner.add_regex(name, pattern, log)

    def refresh(self) -> Examiner:
        """Examine the output dir again; problems are in :attr:`errors`, not warned."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExamineWarning)
            self.examiner.exam(self.output, self.regex, workers=self.workers)
        return self.examiner

    @property
    def errors(self) -> list[str]:
        return self.examiner.errors

    def table(
        self,
        *,
        summary: Mapping[Any, str] | None = None,
        agg: Agg = None,
        ledger: bool = True,
        stale: bool = False,
        name: bool = True,
        concise: bool = True,
    ) -> pd.DataFrame:
        """The Examiner's table (:meth:`Examiner.table`); ``df.attrs["errors"]``: problems."""
        examiner = self.refresh()
        df = examiner.table(
            concise=concise, ledger=ledger and agg is None, name=name, summary=summary, agg=agg, stale=stale
        )
        df.attrs["errors"] = examiner.errors
        return df

    def rows(self, **options: Any) -> list[dict[str, Any]]:
        """The table (options of :meth:`table`) as JSON-able rows: ``_name``, params,
        metric summaries, ledger columns (times as ISO 8601), ``_steps`` with a summary."""
        return records(self.table(**options))

    def curves(self, metrics: str | Sequence[str] | None = None, agg: Agg = None) -> dict[str, Any]:
        """Histories for plotting: ``{"metrics": [...], "params": [...], "series": [...]}``.

        A series is ``{"name", "params", "metric", "step", "value"}`` per experiment and
        metric; with ``agg``: ``{"group", "members", "params", "metric", "step", "mean",
        "std", "sem", "n"}`` per group and metric (std/sem None for one member)."""
        examiner = self.refresh()
        wanted = [metrics] if isinstance(metrics, str) else metrics
        if agg is not None:
            return self._agg_curves(examiner, wanted, agg)
        param_columns, _ = headers(list(examiner.experiments.values()))
        histories = examiner.histories
        if wanted is not None:
            examiner.history(wanted)  # checks the names (UsageError with a hint)
        series: list[dict[str, Any]] = []
        found: set[str] = set()
        for name, exp in examiner.experiments.items():
            params = {str(c): exp.param.get(c) for c in param_columns}
            for metric, (x, y) in sorted(histories[name].items()):
                if wanted is not None and metric not in wanted:
                    continue
                found.add(metric)
                series.append(
                    {
                        "name": name,
                        "params": params,
                        "metric": metric,
                        "step": _steps(x),
                        "value": _plain_list(y),
                    }
                )
        return {"metrics": sorted(found), "params": [str(c) for c in param_columns], "series": series}

    def _agg_curves(
        self, examiner: Examiner, wanted: Sequence[str] | None, agg: str | Sequence[str]
    ) -> dict[str, Any]:
        df = examiner.history(wanted, agg=agg)
        by = [agg] if isinstance(agg, str) else list(agg)
        fixed = {"_group", "step", "metric", "mean", "std", "sem", "n"}
        param_columns = [c for c in df.columns if c not in fixed]
        table = examiner.table(agg=by, name=True)
        members = table["_members"].tolist()
        series: list[dict[str, Any]] = []
        for (_, metric), part in df.groupby(["_group", "metric"], observed=True, sort=True):
            first = part.iloc[0]
            group = int(first["_group"])
            series.append(
                {
                    "group": group,
                    "members": members[group],
                    "params": {str(c): _scalar(first[c]) for c in param_columns},
                    "metric": str(metric),
                    "step": _steps(part["step"].to_numpy(dtype=np.float64)),
                    **{k: _plain_list(part[k].to_numpy(dtype=np.float64)) for k in ("mean", "std", "sem")},
                    "n": [int(v) for v in part["n"].tolist()],
                }
            )
        metrics = sorted({s["metric"] for s in series})
        return {"metrics": metrics, "params": [str(c) for c in param_columns], "agg": by, "series": series}

    def diff(
        self, a: str, b: str, *, code: bool = False, summary: Mapping[Any, str] | None = None
    ) -> dict[str, Any]:
        """What differs between experiments ``a`` and ``b`` (dir names under the output
        dir, or paths): see :mod:`mlrunner.examine.diffing`."""
        out_a, name_a = diffing.resolve(self.output, a)
        out_b, name_b = diffing.resolve(self.output, b)
        metrics = (self._metrics_of(out_a, name_a, summary), self._metrics_of(out_b, name_b, summary))
        return diffing.diff_dirs(os.path.join(out_a, name_a), os.path.join(out_b, name_b), metrics, code=code)

    def _metrics_of(self, output: str, name: str, summary: Mapping[Any, str] | None) -> dict[str, Any]:
        examiner = Examiner()
        for step in self.examiner.exams:
            examiner.add(step)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExamineWarning)
            examiner.exam(output, f"^{re.escape(name)}$", workers=-1)
        df = examiner.table(concise=False, summary=summary)
        params = {str(k) for e in examiner.experiments.values() for k in e.param}
        rows = records(df[[c for c in df.columns if str(c) not in params]])
        return rows[0] if rows else {}

    def detail(self, name: str, *, summary: Mapping[Any, str] | None = None) -> dict[str, Any]:
        """One experiment: ``name``, ``dir``, ``params``, ``commands``, ``metrics`` (its
        summaries), ``env`` (env.json), ``git`` (git.json), ``files`` (its dir listing)."""
        output, dir_name = diffing.resolve(self.output, name)
        path = os.path.join(output, dir_name)
        exp = diffing.read_experiment(path)
        return {
            "name": dir_name,
            "dir": path,
            "params": exp["params"],
            "commands": exp["commands"],  # the lines as run: GPUs and log included
            "metrics": self._metrics_of(output, dir_name, summary),
            "env": exp["env"],
            "git": exp["git"],
            "files": sorted(os.listdir(path)),
        }


def _scalar(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) and not isinstance(value, (str, bytes)) else value


def experiments_rows(output: str | os.PathLike[str] = "output", **options: Any) -> list[dict[str, Any]]:
    """``Results(output).rows(**options)``: the table as JSON-able rows."""
    return Results(output).rows(**options)


def curves(output: str | os.PathLike[str] = "output", metrics: str | Sequence[str] | None = None,
           agg: Agg = None) -> dict[str, Any]:  # fmt: skip
    """``Results(output).curves(metrics, agg)``."""
    return Results(output).curves(metrics, agg)


def diff(output: str | os.PathLike[str], a: str, b: str, *, code: bool = False) -> dict[str, Any]:
    """``Results(output).diff(a, b, code=code)``."""
    return Results(output).diff(a, b, code=code)


def experiment_detail(output: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """``Results(output).detail(name)``."""
    return Results(output).detail(name)

"""The Examiner: apply metric parsers to every experiment dir and tabulate the results.

0.5.9's API, kept: ``Examiner()``, ``.add(func)``, ``.exam(output, regex, verbose, workers)``,
``.table(concise, print_tsv)``, ``.experiments`` (dir name -> :class:`Experiment`) and
``.caches``. What changed, on purpose:

- parsers run in the order they were added (0.5.9 kept them in a set);
- dirs are examined in sorted name order (0.5.9: file-system order), so rows are sorted
  by dir name within one ``exam()``;
- ``workers > 0`` gives exactly the serial result; each dir's parsers start from a fresh
  :class:`Experiment` (0.5.9's parallel semantics) which then replaces that dir's row;
- a parser that raises, or a log it looks for that is missing, costs that experiment's
  metric, not the whole table: one line per experiment in :attr:`Examiner.errors`, and a
  :class:`ExamineWarning`;
- results are cached by each dir's file listing (see :mod:`mlrunner.examine.cache`).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from mlrunner.examine import table, tabulate
from mlrunner.examine.cache import CacheStore
from mlrunner.examine.dirs import Caches, Experiment, Parser, compile_regex, list_dirs
from mlrunner.examine.identity import parser_token
from mlrunner.examine.parsers import RegexParser
from mlrunner.examine.pipeline import Pipeline, Step, apply_delta, user_label
from mlrunner.examine.pool import MIN_PARALLEL, can_fork, examine_parallel, examine_serial
from mlrunner.examine.series import Histories

log = logging.getLogger("mlrunner.examine")


class ExamineWarning(UserWarning):
    """Some experiments could not be fully parsed; see ``Examiner.errors``."""


class Examiner:
    """Container of parsers and of what they found in each experiment dir.

    A parser is ``func(output_dir: pathlib.Path, experiment: Experiment, caches: dict)``:
    it reads files of ``output_dir`` and fills ``experiment.metric`` (table columns),
    ``experiment.cache`` (per experiment) or ``caches`` (shared by all experiments).

    Caching: a parser's result for a dir is reused while the dir's top-level files keep
    their names, sizes and mtimes and the parser's code (and defaults, closure, and the
    globals of its module it names) is unchanged. Pass ``cache=False`` (here for all
    parsers, or to :meth:`add` for one) for a parser that reads anything else: files
    outside the dir or in its sub-dirs, a database, or what other experiments put in
    ``caches``. ``add_regex`` and metrics-file results are always cached.

    ``caches`` with ``workers > 0``: parsers run in forked processes, each on its own copy.
    What a parser did to it is replayed in the parent in dir order: a key it rebound is set,
    a key it added is set unless an earlier experiment added it (so ``setdefault`` and
    "compute once if missing" patterns give the serial result); in-place changes to values
    already in ``caches`` stay in the worker.

    Not experiments: dot-dirs (``<output>/.mlrunner``) and dirs without a ``param`` file.
    ``metrics_files=False``: do not turn ``metrics.json``, ``metrics.jsonl`` and TensorBoard
    event files into columns and histories.

    Histories (``metrics.jsonl``, TensorBoard scalars, ``add_regex(..., history=True)``):
    :meth:`history` as a tidy DataFrame, :attr:`histories` as arrays; ``table(summary=...)``
    summarises them.
    """

    def __init__(self, *, cache: bool = True, metrics_files: bool = True) -> None:
        self._steps: list[Step] = []
        self.caches: Caches = {}
        self.experiments: dict[str, Experiment] = {}
        self.cache = cache
        self.metrics_files = metrics_files
        self._dirs: dict[str, tuple[str, str]] = {}  # name -> (output, experiment dir)
        self._problems: dict[str, list[str]] = {}
        self._stores: dict[tuple[str, str], CacheStore] = {}
        self._regex_names: list[str] = []
        self._histories: dict[str, Histories] = {}

    # -- parsers -------------------------------------------------------------------------

    @property
    def exams(self) -> list[Parser]:
        """The parsers, in the order they run."""
        return [step.parser for step in self._steps]

    def add(self, func: Parser, *, cache: bool = True) -> None:
        """Register a parser; parsers run in the order added. Adding one twice is a no-op.

        ``cache=False``: run it on every exam(), for a parser whose result depends on more
        than the experiment dir's own files and its own code (see the class doc)."""
        if not callable(func):
            raise TypeError(f"Examiner.add(): expected a parser function, got {type(func).__name__}")
        if any(step.parser is func for step in self._steps):
            return
        if isinstance(func, RegexParser):
            self._add_regex_parser(func)
            return
        token = parser_token(func) if cache and self.cache else None
        self._steps.append(Step(func, token, user_label(func)))

    def add_regex(self, name: str, pattern: str, log: str | None = None, history: bool = False) -> None:
        """``metric[name]``: the last match of ``pattern``'s group 1 (or group ``value``) in
        the latest ``log.<log>.*``, a float when it parses, e.g.
        ``add_regex("bleu", r"BLEU4 = ([\\d.]+)", log="test")``. Without ``log``: the latest
        log of every command, in time order. ``history``: every match is a point of the
        metric's history, in order (its step: group ``step``, else the match's number)."""
        self._add_regex_parser(RegexParser(name, pattern, log, history))

    def _add_regex_parser(self, parser: RegexParser) -> None:
        self._steps.append(Step(parser, parser.token, parser.label))
        if parser.name not in self._regex_names:
            self._regex_names.append(parser.name)

    # -- examining -----------------------------------------------------------------------

    def exam(self, output: str | os.PathLike[str] = "output", regex: str = ".*", verbose: bool = False,
             workers: int = -1) -> None:  # fmt: skip
        """Run the parsers on every dir of ``output`` whose name ``regex`` searches.

        ``workers > 0``: parse in that many forked processes (same result as serial).
        ``verbose``: log each dir name to the ``mlrunner.examine`` logger at INFO level.
        """
        output = os.fspath(output)
        pattern = compile_regex(regex)
        all_names = list_dirs(output)
        selected = [n for n in all_names if pattern.search(n)]
        pipeline = Pipeline(list(self._steps), self.metrics_files)
        store = self._store(output, pipeline.key)
        store.keep_only(set(all_names))
        now = time.time_ns()

        present = set(all_names)
        for name, (where, _) in list(self._dirs.items()):
            if where == output and name not in present and pattern.search(name):
                self._forget(name)  # its dir was removed since the last exam
        items = [(name, os.path.join(output, name)) for name in selected]
        if workers > 0 and len(items) >= MIN_PARALLEL and can_fork():
            found = examine_parallel(pipeline, store, items, now, self.caches, workers)
        else:
            found = examine_serial(pipeline, store, items, now, self.caches)
        problems = examined = 0
        for name, path, scan, outcome in found:  # in dir order, as 0.5.9's serial loop
            examined += 1
            if verbose:
                log.info("%s", name)
            store.put(name, scan, outcome.payloads)
            self._problems.pop(name, None)
            if outcome.problems:
                problems += 1
                self._problems[name] = outcome.problems
            if outcome.state is None:  # not (or no longer) an experiment
                if not outcome.problems:
                    log.info("no 'param' in %s: not an experiment, skipped", path)
                self._forget(name)
                continue
            param, metric, cache, delta, hist = outcome.state
            if delta:
                apply_delta(self.caches, delta)
            self.experiments.pop(name, None)  # re-examined: its row moves to this exam's order
            self.experiments[name] = Experiment(cache=cache, metric=metric, param=param)
            self._histories[name] = hist
            self._dirs[name] = (output, path)
        store.save()
        if problems:
            first = next(line for line in self.errors)
            warnings.warn(
                ExamineWarning(
                    f"{problems} of {examined} dirs in '{output}' could not be fully parsed "
                    f"(the table has the rest); first: {first}; all in Examiner.errors"
                ),
                stacklevel=2,
            )

    def _forget(self, name: str) -> None:
        self.experiments.pop(name, None)
        self._dirs.pop(name, None)
        self._histories.pop(name, None)

    def _store(self, output: str, key: str) -> CacheStore:
        ident = (os.path.realpath(output), key)
        if ident not in self._stores:
            self._stores[ident] = CacheStore(output, key)
        return self._stores[ident]

    @property
    def errors(self) -> list[str]:
        """One line per experiment dir with problems: ``"<dir>: <problem>; <problem>"``."""
        names = list(self.experiments) + [n for n in self._problems if n not in self.experiments]
        return [f"{n}: {'; '.join(self._problems[n])}" for n in names if n in self._problems]

    # -- the table and the histories --------------------------------------------------

    @property
    def histories(self) -> dict[str, Histories]:
        """Dir name -> metric -> ``(steps, values)`` (float64 arrays, in the order written)."""
        return {n: self._histories.get(n, {}) for n in self.experiments}

    def dir_of(self, name: str) -> str:
        """The path of examined experiment ``name``."""
        return self._dirs[name][1]

    def _found(self) -> tabulate.Found:
        names = list(self.experiments)
        return tabulate.Found(
            names=names,
            experiments=list(self.experiments.values()),
            histories=[self._histories.get(n, {}) for n in names],
            dirs=[self._dirs[n][1] for n in names],
            outputs=[self._dirs[n][0] for n in names],
            regex_names=list(self._regex_names),
        )

    def table(self, concise: bool = True, print_tsv: bool = False, *, ledger: bool = False,
              name: bool = False, summary: Mapping[Any, str] | None = None,
              agg: str | Sequence[Any] | None = None, stale: bool = False) -> pd.DataFrame:  # fmt: skip
        """DataFrame of param columns (concise: only those that vary), then metric columns.

        ``print_tsv``: also print it tab-separated to stdout (0.5.9). ``ledger``: append the
        ledger columns (``_status``, ``_git_commit``, ``_env``... see :mod:`.ledger_join`).
        ``name``: put each experiment's dir name first, as column ``_name``.

        ``summary``: metric -> ``last`` (the default, 0.5.9's), ``first``, ``min``, ``max``,
        ``mean`` of its history, or ``at-min:OTHER`` / ``at-max:OTHER`` (its value at the
        step where OTHER was lowest / highest); adds ``_steps`` (points of the longest
        history). ``agg``: a param name (or several): one row per group of experiments that
        differ only in those, ``<metric>_mean`` / ``_std`` / ``_sem``, ``n``, ``_n_failed``,
        ``_n_missing`` (``name``: the members' dir names as ``_members``; no ledger columns).
        ``stale``: ``_stale`` (the code snapshot differs from the working state now) and
        ``_env_changed`` (env.json differs from the environment now).
        """
        if print_tsv:
            columns, rows = table.build(list(self.experiments.values()), concise, self._regex_names)
            table.print_tsv(columns, rows)
        return tabulate.build(
            self._found(), concise=concise, ledger=ledger, name=name, summary_spec=summary, agg=agg,
            stale_columns=stale,
        )  # fmt: skip

    def history(self, metrics: str | Sequence[str] | None = None, *,
                agg: str | Sequence[Any] | None = None) -> pd.DataFrame:  # fmt: skip
        """The histories as a tidy DataFrame, one row per point: ``_name``, the params that
        vary, ``step``, ``metric``, ``value`` (``metrics``: only these).

        ``agg``: a param name (or several), as in :meth:`table`: one row per group, metric
        and step: ``_group``, the params that vary (less ``agg``), ``step``, ``metric``,
        ``mean``, ``std``, ``sem``, ``n``: curves with bands. A param named like one of
        these columns is ``param.<name>``.
        """
        return tabulate.history(self._found(), metrics, agg)

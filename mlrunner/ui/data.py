"""Everything the web view shows of one output root, as plain data: the ledger's documents
(runs, a run, what is live), the experiments table (cached: at most ``fresh_s`` seconds
behind the disk), curves, an experiment's detail, a comparison, logs.

Read-only: nothing here writes. The server and the report both use :class:`UiData`.
pandas (through :mod:`mlrunner.examine`) is imported on first use only.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlrunner.errors import MlrunnerError, UsageError
from mlrunner.ledger import Ledger, ledger_path
from mlrunner.ui import board
from mlrunner.ui.files import LogPiece, NotFound, experiment_dir, latest_log_path, log_piece

if TYPE_CHECKING:
    from mlrunner.examine import Results

PATCH_MAX = 2 * 1024 * 1024  # the most of git.patch an experiment's page shows
Summary = tuple[tuple[str, str], ...]


def dumps(value: Any) -> bytes:
    """JSON bytes (NaN/inf as null; anything else unknown as its text)."""
    return json.dumps(_finite(value), default=str, separators=(",", ":")).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


@dataclass
class Table:
    """The experiments table, serialised once: ``body`` (a JSON array of rows with
    ``_name``), its gzip, and ``meta`` (which columns are params, metrics, ledger ones)."""

    body: bytes
    gzipped: bytes
    meta: dict[str, Any]
    made_at: float = field(default_factory=time.monotonic)
    as_of: float = field(default_factory=time.time)

    @property
    def etag(self) -> str:
        return f'"{hash(self.body) & 0xFFFFFFFFFFFF:x}"'


def parse_summary(values: Sequence[str]) -> Summary:
    """``METRIC=KIND`` values (the table's ``--summary``) as a sorted tuple; UsageError."""
    from mlrunner.examine import parse_summary_options

    return tuple(sorted((parse_summary_options(values) or {}).items()))


class UiData:
    """The output root ``output`` as the UI shows it. Thread-safe."""

    def __init__(
        self,
        output: str | os.PathLike[str],
        *,
        fresh_s: float = 2.0,
        stale_s: float = 60.0,
        workers: int | None = None,
    ):
        self.output = os.fspath(output)
        if not os.path.isdir(self.output):
            raise UsageError(
                f"output dir '{self.output}' does not exist",
                hint="pass the output root of your runs: mlrunner ui -o OUTPUT",
            )
        self.fresh_s = fresh_s
        self.stale_s = stale_s
        self.workers = workers
        self._ledger: Ledger | None = None
        self._ledger_lock = threading.Lock()
        self._results: Results | None = None
        self._examine_lock = threading.Lock()
        self._tables: dict[Summary, Table] = {}
        self._tables_lock = threading.Lock()
        self._refreshing: set[Summary] = set()

    # --- the ledger -------------------------------------------------------------------
    def has_ledger(self) -> bool:
        return ledger_path(self.output).is_file()

    def ledger(self) -> Ledger | None:
        """The output root's ledger, opened once it exists (None before)."""
        with self._ledger_lock:
            if self._ledger is None and self.has_ledger():
                self._ledger = Ledger(self.output, create=False)
            return self._ledger

    def close(self) -> None:
        with self._ledger_lock:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None

    def runs(self) -> list[dict[str, Any]]:
        """``mlrunner ledger ls --json``."""
        from mlrunner.ledger.views import runs_doc

        ledger = self.ledger()
        return [] if ledger is None else runs_doc(ledger)

    def _run_ledger(self, run_id: int) -> Ledger:
        ledger = self.ledger()
        if ledger is None or ledger.get_run(run_id) is None:
            raise NotFound(f"no run {run_id} under '{self.output}'")
        return ledger

    def has_run(self, run_id: int) -> bool:
        ledger = self.ledger()
        return ledger is not None and ledger.get_run(run_id) is not None

    def has_experiment(self, name: str) -> bool:
        try:
            experiment_dir(self.output, name)
        except NotFound:
            return False
        return True

    def run(self, run_id: int) -> dict[str, Any]:
        """``mlrunner ledger show RUN --json``; NotFound for an unknown run."""
        from mlrunner.ledger.views import run_doc

        return run_doc(self._run_ledger(run_id), run_id)

    def run_attempts(self, run_id: int) -> dict[str, Any]:
        """Every attempt of the run (the live board's timeline)."""
        return board.run_attempts(self._run_ledger(run_id), run_id)

    def live(self) -> dict[str, Any]:
        """``mlrunner status --json``."""
        from mlrunner.ledger.views import live_doc

        ledger = self.ledger()
        return {"live": [], "orphaned": [], "stopped": [], "runs": []} if ledger is None else live_doc(ledger)

    # --- the experiments --------------------------------------------------------------
    def results(self) -> Results:
        if self._results is None:
            from mlrunner.examine import Results

            self._results = Results(self.output, workers=self.workers)
        return self._results

    def table(self, summary: Summary = (), *, max_age: float | None = None) -> Table:
        """The experiments table with these summaries. Younger than ``max_age`` (default
        ``fresh_s``): the cached one. Older but younger than ``stale_s``: the cached one
        too, while a thread examines the dirs again for the next request (a page is never
        held up by a re-examination). Else examined now (unchanged dirs come from the
        Examiner's cache)."""
        limit = self.fresh_s if max_age is None else max_age
        with self._tables_lock:
            cached = self._tables.get(summary)
            age = None if cached is None else time.monotonic() - cached.made_at
            if cached is not None and age is not None and age < limit:
                return cached
            if cached is not None and age is not None and max_age is None and age < self.stale_s:
                if summary not in self._refreshing:
                    self._refreshing.add(summary)
                    threading.Thread(target=self._refresh, args=(summary,), daemon=True).start()
                return cached
        with self._examine_lock:
            with self._tables_lock:  # made meanwhile by another request or the thread?
                cached = self._tables.get(summary)
                if cached is not None and time.monotonic() - cached.made_at < limit:
                    return cached
            return self._store(summary, self._make_table(summary))

    def _refresh(self, summary: Summary) -> None:
        try:
            with self._examine_lock:
                self._store(summary, self._make_table(summary))
        except Exception:  # the next request examines again, and reports what fails
            pass
        finally:
            with self._tables_lock:
                self._refreshing.discard(summary)

    def _store(self, summary: Summary, table: Table) -> Table:
        with self._tables_lock:
            self._tables[summary] = table
            while len(self._tables) > 8:
                self._tables.pop(next(iter(self._tables)))
        return table

    def is_fresh(self, table: Table) -> bool:
        return time.monotonic() - table.made_at < self.fresh_s

    def _make_table(self, summary: Summary) -> Table:
        results = self.results()
        rows = results.rows(summary=dict(summary) or None, ledger=True)
        experiments = results.examiner.experiments
        columns: list[str] = []
        for row in rows[:1]:
            columns = list(row)
        param_keys = {str(k) for e in experiments.values() for k in e.param}
        params = [c for c in columns if c in param_keys and not c.startswith("_")]
        ledger_columns = [c for c in columns if c.startswith("_") and c != "_name"]
        metrics = [c for c in columns if c not in param_keys and not c.startswith("_")]
        histories = sorted({str(m) for h in results.examiner.histories.values() for m in h})
        from mlrunner.examine import SUMMARY_KINDS

        meta = {
            "params": params,
            "metrics": metrics,
            "ledger": ledger_columns,
            "history_metrics": histories,
            "summary": dict(summary),
            "summary_kinds": list(SUMMARY_KINDS),
            "errors": list(results.errors),
            "count": len(rows),
        }
        body = dumps(rows)
        return Table(body, gzip.compress(body, 5), meta)

    def curves(self, metric: str, agg: Sequence[str] = ()) -> dict[str, Any]:
        """Histories of ``metric`` per experiment, or per group with mean/std over ``agg``."""
        with self._examine_lock:
            results = self.results()
            results.refresh()
            known = {str(m) for h in results.examiner.histories.values() for m in h}
            if metric not in known:
                raise NotFound(f"no history of metric '{metric}'")
            params = self._params_of(results)
            bad = [a for a in agg if a not in params]
            if bad:
                raise UsageError(f"cannot aggregate over '{bad[0]}': not a param that varies")
            return results.curves([metric], agg=list(agg) or None)

    @staticmethod
    def _params_of(results: Results) -> set[str]:
        return {str(k) for e in results.examiner.experiments.values() for k in e.param}

    def detail(self, name: str) -> dict[str, Any]:
        """One experiment: :meth:`Results.detail` plus every attempt of each command (from
        the ledger), its logs, and the git patch (its first 2 MiB)."""
        path = experiment_dir(self.output, name)
        with self._examine_lock:
            doc = self.results().detail(name)
        ledger = self.ledger()
        doc["attempts"] = {} if ledger is None else board.experiment_attempts(ledger, path)
        names = sorted(os.listdir(path))
        doc["logs"] = [n for n in names if n.startswith("log.")]
        doc["patch"], doc["patch_truncated"] = _read_capped(os.path.join(path, "git.patch"), PATCH_MAX)
        commands = list(doc["commands"]) + [c for c in doc["attempts"] if c not in doc["commands"]]
        doc["command_names"] = commands
        return doc

    def compare(self, a: str, b: str) -> dict[str, Any]:
        """``mlrunner diff A B --code --json`` and both experiments' params."""
        for name in (a, b):
            experiment_dir(self.output, name)
        with self._examine_lock:
            doc = self.results().diff(a, b, code=True)
        return doc

    def log(
        self, name: str, command: str, *, offset: int | None = None, tail: int | None = None,
        limit: int | None = None,
    ) -> LogPiece:  # fmt: skip
        """The part of the latest log of ``command`` in experiment ``name`` asked for."""
        path = experiment_dir(self.output, name)
        recorded = None
        ledger = self.ledger()
        if ledger is not None:
            for attempt in reversed(board.experiment_attempts(ledger, path).get(command, [])):
                recorded = attempt.get("log_path")
                break
        try:
            return log_piece(latest_log_path(self.output, name, command, recorded), offset, tail, limit)
        except OSError as exc:
            raise NotFound(f"cannot read the log of '{command}' in '{name}': {exc.strerror}") from None


def _read_capped(path: str, most: int) -> tuple[str | None, bool]:
    try:
        with open(path, "rb") as f:
            data = f.read(most + 1)
    except OSError:
        return None, False
    return data[:most].decode("utf-8", "replace"), len(data) > most


__all__ = ["LogPiece", "MlrunnerError", "NotFound", "Table", "UiData", "dumps", "parse_summary"]

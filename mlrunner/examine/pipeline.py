"""Running the parsers over one experiment dir, reusing cached results where allowed.

Steps run in order: ``param``, the metrics files, then the parsers in the order they were
added. Let k be the first user parser that is not cacheable (``cache=False`` or no identity
token). The state after the first k steps is cached as one payload under ``prefix_token``;
built-in parsers after k are cached one by one; user parsers from k on run every time.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sysconfig
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlrunner import expdir
from mlrunner.examine import dirs
from mlrunner.examine.cache import DirScan
from mlrunner.examine.dirs import Caches, Delta, Experiment, Metrics, Params, Parser
from mlrunner.examine.parsers import RegexParser, metrics_token, parse_metrics_files
from mlrunner.examine.series import Histories, JsonlState

STATE_VERSION = 2
# the cached state after the prefix: param (None: unreadable), metric, cache, delta, problems,
# histories, and where metrics.jsonl was read up to (None: not read)
State = tuple[Params | None, Metrics, Caches, Delta, list[str], Histories, JsonlState | None]
_LIBRARY_DIRS = tuple({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")})


@dataclass(frozen=True)
class Step:
    parser: Parser  # a RegexParser or a user function
    token: str | None  # None: never cached
    label: str

    @property
    def builtin(self) -> bool:
        return isinstance(self.parser, RegexParser)


def user_label(func: object) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    return f"parser {name}"


@dataclass
class Outcome:
    """What examining one dir produced; ``state`` None: no ``param``, not an experiment."""

    name: str
    state: tuple[Params, Metrics, Caches, Delta, Histories] | None  # param, metric, cache, delta, histories
    problems: list[str] = field(default_factory=list)
    payloads: dict[str, bytes] = field(default_factory=dict)  # what to cache


def apply_delta(caches: Caches, delta: Delta) -> None:
    """Replay what one experiment's parsers did to ``caches``: keys they rebound are set;
    keys they added are set unless present (an earlier experiment added it first)."""
    for key, (added, value) in delta.items():
        if not (added and key in caches):
            caches[key] = value


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _dumps(value: Any) -> bytes | None:
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # unpicklable parser output: correct, just not cached
        return None


def _where(exc: BaseException) -> str:
    """Where the parser's own code raised: the innermost frame outside installed libraries."""
    frames = traceback.extract_tb(exc.__traceback__)[1:]  # [0] is run_user's call
    if not frames:
        return ""
    mine = [f for f in frames if not f.filename.startswith(_LIBRARY_DIRS)]
    last = (mine or frames)[-1]
    return f" (at {os.path.basename(last.filename)}:{last.lineno})"


class Pipeline:
    def __init__(self, steps: list[Step], metrics_files: bool) -> None:
        self.steps = steps
        self.metrics_files = metrics_files
        self.k = next((i for i, s in enumerate(steps) if s.token is None), len(steps))
        prefix = [s.token for s in steps[: self.k]]
        self.prefix_token = _digest("prefix", STATE_VERSION, metrics_files, metrics_token(), prefix)
        self.key = _digest("pipeline", self.prefix_token, [s.token for s in steps[self.k :]])[:24]

    @property
    def fully_cached(self) -> bool:
        return self.k == len(self.steps)

    def run_user(
        self, step: Step, path: Path, names: tuple[str, ...], exp: Experiment, caches: Caches, delta: Delta
    ) -> str | None:
        before = {key: id(value) for key, value in caches.items()}
        misses: list[str] = []
        reset = dirs._missing_logs.set(misses)
        reset_listing = dirs._listing.set((os.fspath(path), names))
        try:
            step.parser(path, exp, caches)
        except Exception as exc:
            text = str(exc).splitlines()[0] if str(exc) else ""
            problem = f"{step.label} raised {type(exc).__name__}: {text}{_where(exc)}"
            if misses:
                problem += f" [no {', '.join(misses)} in this dir]"
            return problem
        finally:
            dirs._missing_logs.reset(reset)
            dirs._listing.reset(reset_listing)
            for key, value in caches.items():
                if before.get(key) != id(value):
                    delta[key] = (key not in before, value)
        if misses:
            return f"{step.label}: no {', '.join(misses)} in this dir"
        return None

    def run_one(
        self,
        name: str,
        exp_dir: str,
        scan: DirScan,
        cached: dict[str, bytes],
        caches: Caches,
        previous: dict[str, bytes] | None = None,
    ) -> Outcome:
        """Examine one dir; ``cached``: its payloads from the cache (listing unchanged);
        ``previous``: the payloads of its last examination, whatever its listing was then
        (a growing metrics.jsonl is read on from there)."""
        out = Outcome(name, None)
        names = scan.names
        if expdir.PARAM_FILE not in names:
            return out
        blob = cached.get(self.prefix_token)
        state: State | None
        if blob is None:
            state = self._run_prefix(exp_dir, scan, caches, out, _jsonl_state(previous, self.prefix_token))
            if state is None:
                return out
        else:
            state = pickle.loads(blob)
            assert state is not None
            out.problems.extend(state[4])
            out.payloads[self.prefix_token] = blob
        param, metric, cache, delta, _, hist, _ = state
        if param is None:  # an unreadable param file, unchanged since
            return out
        if blob is not None and delta:
            apply_delta(caches, delta)
        if self.k < len(self.steps):
            hist = dict(hist)
            exp = Experiment(cache, metric, param)
            self._run_tail(exp, exp_dir, names, cached, caches, delta, out, hist)
        out.state = (param, metric, cache, delta, hist)
        return out

    def _run_prefix(
        self, exp_dir: str, scan: DirScan, caches: Caches, out: Outcome, previous: JsonlState | None
    ) -> State | None:
        """Read ``param`` and the metrics files, run the steps before k; cache the state."""
        names = scan.names
        unread: list[str] = []
        param = expdir.read_param(exp_dir, unread)
        if param is None:
            if unread:
                out.problems.extend(unread)
                out.payloads[self.prefix_token] = pickle.dumps((None, {}, {}, {}, unread, {}, None))
            return None
        metric: Metrics = {}
        cache: Caches = {}
        delta: Delta = {}
        hist: Histories = {}
        jsonl = None
        if self.metrics_files:
            updates, problem, series, jsonl = parse_metrics_files(exp_dir, names, scan.events, previous)
            metric.update(updates)
            hist.update(series)
            if problem:
                out.problems.append(problem)
        clean = True
        exp = Experiment(cache=cache, metric=metric, param=param)
        path = Path(exp_dir)
        for step in self.steps[: self.k]:
            if isinstance(step.parser, RegexParser):
                updates, problem, series = step.parser.parse_all(exp_dir, names)
                metric.update(updates)
                hist.update(series)
            else:
                problem = self.run_user(step, path, names, exp, caches, delta)
                clean = clean and problem is None  # a user parser that raised: run it again next time
            if problem:
                out.problems.append(problem)
        state: State = (param, metric, cache, delta, list(out.problems), hist, jsonl)
        if clean:
            blob = _dumps(state)
            if blob is not None:
                out.payloads[self.prefix_token] = blob
        return state

    def _run_tail(
        self,
        exp: Experiment,
        exp_dir: str,
        names: tuple[str, ...],
        cached: dict[str, bytes],
        caches: Caches,
        delta: Delta,
        out: Outcome,
        hist: Histories,
    ) -> None:
        """The steps from k on: built-ins from their own cache entries, user parsers live."""
        path = Path(exp_dir)
        for step in self.steps[self.k :]:
            parser, token = step.parser, step.token
            series: Histories = {}
            if isinstance(parser, RegexParser) and token is not None:
                blob = cached.get(token)
                if blob is not None:
                    updates, problem, series = pickle.loads(blob)
                else:
                    updates, problem, series = parser.parse_all(exp_dir, names)
                    blob = pickle.dumps((updates, problem, series), protocol=pickle.HIGHEST_PROTOCOL)
                out.payloads[token] = blob
            else:
                updates, problem = {}, self.run_user(step, path, names, exp, caches, delta)
            exp.metric.update(updates)
            hist.update(series)
            if problem:
                out.problems.append(problem)


def _jsonl_state(previous: dict[str, bytes] | None, token: str) -> JsonlState | None:
    """Where metrics.jsonl was read up to, from the dir's previous cached state."""
    blob = (previous or {}).get(token)
    if blob is None:
        return None
    try:
        state = pickle.loads(blob)
        return state[6] if isinstance(state, tuple) and len(state) == 7 else None
    except Exception:  # only a head start: read from the beginning
        return None

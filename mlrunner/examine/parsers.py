"""Built-in parsers: a regex over the logs, and the metrics files (``metrics.json``,
``metrics.jsonl``, TensorBoard event files).

All are pure functions of an experiment dir's files, so their results are always cached.
Each returns ``(metric_updates, problem_or_None, histories)``; ``names`` is the dir
listing the Examiner already has.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlrunner.errors import ExamineError
from mlrunner.examine import tboard
from mlrunner.examine.dirs import Caches, Experiment
from mlrunner.examine.series import METRICS_JSONL, Histories, JsonlState, flatten, floats, read_jsonl
from mlrunner.expdir import LOG_PREFIX, log_names

METRICS_JSON = "metrics.json"
_LOG_NAME = re.compile(r"log\.(.+?)\.(\d{8}\.\d{6})(?:\.(\d+))?(?:\.|$)")


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def latest_logs(names: Sequence[str]) -> list[str]:
    """The latest ``log.<command>.<time>`` of each command, in time order (oldest first)."""
    latest: dict[str, tuple[str, int, str]] = {}
    for name in names:
        if not name.startswith(LOG_PREFIX):
            continue
        m = _LOG_NAME.match(name)
        if m is None:
            continue
        key = (m.group(2), int(m.group(3) or 1), name)
        if m.group(1) not in latest or key > latest[m.group(1)]:
            latest[m.group(1)] = key
    return [key[2] for key in sorted(latest.values())]


class RegexParser:
    """``metric[name]`` = the last match of ``pattern`` in the latest ``log.<log>.*`` (every
    command's latest log, in time order, when ``log`` is None): group ``value`` or group 1
    (the whole match when the pattern has no group), a float when it parses.

    ``history``: every match, in order, is also a point of the metric's history; its step
    is group ``step`` when the pattern has one, else the match's number (0, 1, ...).
    """

    def __init__(self, name: str, pattern: str, log: str | None = None, history: bool = False) -> None:
        if not isinstance(name, str) or not name:
            raise ExamineError(f"add_regex(): the metric name must be a non-empty string, got {name!r}")
        if log is not None and (not isinstance(log, str) or not log or "/" in log):
            raise ExamineError(
                f"add_regex({name!r}): log must be a command name like 'test' (or None: every log), "
                f"got {log!r}",
                hint="the log read is the latest log.<command>.<time> in each experiment dir",
            )
        try:
            self.regex = re.compile(pattern)
        except (re.error, TypeError) as exc:
            raise ExamineError(
                f"add_regex({name!r}): invalid pattern {pattern!r}: {exc}",
                hint=r"put the value in group 1, e.g. r'BLEU4 = ([\d.]+)'",
            ) from None
        self.name = name
        self.pattern = pattern
        self.log = log
        self.history = bool(history)
        groups = self.regex.groupindex
        self._value_group: int | str = "value" if "value" in groups else 0
        if self._value_group == 0 and self.regex.groups:
            step_index = groups.get("step")
            self._value_group = next((i for i in range(1, self.regex.groups + 1) if i != step_index), 0)
        self._step_group = "step" if "step" in groups else None
        key = json.dumps(["regex", 2, name, pattern, self.regex.flags, log, self.history])
        self.token = hashlib.sha256(key.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"add_regex({self.name!r})"

    def __repr__(self) -> str:
        return f"RegexParser({self.name!r}, {self.pattern!r}, log={self.log!r}, history={self.history})"

    def _logs(self, names: Sequence[str]) -> list[str]:
        if self.log is None:
            return latest_logs(names)
        return log_names(names, self.log)[-1:]

    def parse_all(self, exp_dir: str, names: Sequence[str]) -> tuple[dict[str, Any], str | None, Histories]:
        logs = self._logs(names)
        if not logs:
            which = f"log.{self.log}.*" if self.log else "log.*"
            return {}, f"{self.label}: no {which} file", {}
        matches: list[re.Match[str]] = []
        for log in logs:
            try:
                with open(os.path.join(exp_dir, log), encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError as exc:
                return {}, f"{self.label}: cannot read {log}: {exc.strerror}", {}
            if self.history:
                matches.extend(self.regex.finditer(text))
            else:
                last = None
                for last in self.regex.finditer(text):  # noqa: B007 - we want the last match
                    pass
                if last is not None:
                    matches.append(last)
        if not matches:
            where = ", ".join(logs)
            return {}, f"{self.label}: pattern {self.pattern!r} matched nothing in {where}", {}
        value = matches[-1].group(self._value_group)
        updates = {self.name: _number(value) if value is not None else None}
        return updates, None, self._history(matches) if self.history else {}

    def _history(self, matches: list[re.Match[str]]) -> Histories:
        steps: list[float] = []
        values: list[float] = []
        for i, match in enumerate(matches):
            text = match.group(self._value_group)
            try:
                value = float(text) if text is not None else None
            except ValueError:
                value = None
            if value is None:
                continue
            step: float = i
            if self._step_group is not None:
                try:
                    step = float(match.group(self._step_group))
                except (TypeError, ValueError):
                    pass
            steps.append(step)
            values.append(value)
        return {self.name: (floats(steps), np.asarray(values, dtype=np.float64))} if values else {}

    def parse(self, exp_dir: str, names: list[str] | tuple[str, ...]) -> tuple[dict[str, Any], str | None]:
        updates, problem, _ = self.parse_all(exp_dir, names)
        return updates, problem

    def __call__(self, output_dir: Path, experiment: Experiment, caches: Caches) -> None:
        """Usable as a plain 0.5.9-style parser too."""
        updates, _ = self.parse(os.fspath(output_dir), os.listdir(output_dir))
        experiment.metric.update(updates)


def parse_metrics_files(
    exp_dir: str,
    names: Sequence[str],
    events: Sequence[str] = (),
    previous: JsonlState | None = None,
) -> tuple[dict[str, Any], str | None, Histories, JsonlState | None]:
    """``metrics.json`` (one object), then ``metrics.jsonl`` (its histories, the last value
    of each key), then the TensorBoard event files ``events``: metric columns (nested
    objects become ``outer.inner`` columns), problems, histories, and the metrics.jsonl
    state to read on from next time (``previous``: the last one)."""
    metric: dict[str, Any] = {}
    problems: list[str] = []
    histories: Histories = {}
    state = None
    if METRICS_JSON in names:
        try:
            with open(os.path.join(exp_dir, METRICS_JSON), encoding="utf-8") as f:
                data = json.load(f)
        except OSError as exc:
            problems.append(f"cannot read {METRICS_JSON}: {exc.strerror}")
        except ValueError as exc:
            problems.append(f"{METRICS_JSON}: invalid JSON ({exc})")
        else:
            if isinstance(data, dict):
                metric.update(flatten(data))
            else:
                problems.append(f"{METRICS_JSON}: expected a JSON object, got a {type(data).__name__}")
    if METRICS_JSONL in names:
        try:
            state, series, last, problem = read_jsonl(os.path.join(exp_dir, METRICS_JSONL), previous)
        except OSError as exc:
            problems.append(f"cannot read {METRICS_JSONL}: {exc.strerror}")
        else:
            metric.update(last)
            histories.update(series)
            if problem:
                problems.append(problem)
    if events:
        series, last, tb_problems = tboard.read_events(exp_dir, events)
        metric.update(last)
        histories.update(series)
        problems.extend(tb_problems)
    return metric, "; ".join(problems) or None, histories, state


def metrics_token() -> str:
    """Changes with the metrics files' semantics, and when the TensorBoard reader appears."""
    return hashlib.sha256(json.dumps(["metrics-files", 2, tboard.available()]).encode()).hexdigest()

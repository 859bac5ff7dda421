"""Built-in parsers: a regex over the latest log, and ``metrics.json`` / ``metrics.jsonl``.

Both are pure functions of an experiment dir's files, so their results are always cached.
Each ``parse(exp_dir, names)`` returns ``(metric_updates, problem_or_None)`` where
``names`` is the dir listing the Examiner already has.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from mlrunner.errors import ExamineError
from mlrunner.examine.dirs import Caches, Experiment
from mlrunner.expdir import log_names

METRICS_JSON = "metrics.json"
METRICS_JSONL = "metrics.jsonl"
_TAIL_BYTES = 65536


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


class RegexParser:
    """``metric[name]`` = the last match of ``pattern`` in the latest ``log.<log>.*``:
    group 1 (the whole match when the pattern has no group), a float when it parses."""

    def __init__(self, name: str, pattern: str, log: str = "test") -> None:
        if not isinstance(name, str) or not name:
            raise ExamineError(f"add_regex(): the metric name must be a non-empty string, got {name!r}")
        if not isinstance(log, str) or not log or "/" in log:
            raise ExamineError(
                f"add_regex({name!r}): log must be a command name like 'test', got {log!r}",
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
        key = json.dumps(["regex", 1, name, pattern, self.regex.flags, log])
        self.token = hashlib.sha256(key.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"add_regex({self.name!r})"

    def __repr__(self) -> str:
        return f"RegexParser({self.name!r}, {self.pattern!r}, log={self.log!r})"

    def parse(self, exp_dir: str, names: list[str] | tuple[str, ...]) -> tuple[dict[str, Any], str | None]:
        logs = log_names(names, self.log)
        if not logs:
            return {}, f"{self.label}: no log.{self.log}.* file"
        try:
            with open(os.path.join(exp_dir, logs[-1]), encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as exc:
            return {}, f"{self.label}: cannot read {logs[-1]}: {exc.strerror}"
        last = None
        for last in self.regex.finditer(text):  # noqa: B007 - we want the last match
            pass
        if last is None:
            return {}, f"{self.label}: pattern {self.pattern!r} matched nothing in {logs[-1]}"
        value = last.group(1) if self.regex.groups else last.group(0)
        return {self.name: _number(value) if value is not None else None}, None

    def __call__(self, output_dir: Path, experiment: Experiment, caches: Caches) -> None:
        """Usable as a plain 0.5.9-style parser too."""
        updates, _ = self.parse(os.fspath(output_dir), os.listdir(output_dir))
        experiment.metric.update(updates)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _last_jsonl_object(path: str) -> tuple[dict[str, Any] | None, str | None]:
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        chunk = _TAIL_BYTES
        while True:
            start = max(0, size - chunk)
            f.seek(start)
            data = f.read()
            lines = data.split(b"\n")
            if start > 0:
                lines = lines[1:]  # the first line may be cut
            complete = data.endswith(b"\n")
            nonempty = [i for i, line in enumerate(lines) if line.strip()]
            if len(nonempty) >= 2 or start == 0:
                break
            chunk *= 4
    if not nonempty:
        return None, f"{METRICS_JSONL}: no JSON line yet"
    try:
        value = json.loads(lines[nonempty[-1]])
    except ValueError as exc:
        if complete or len(nonempty) < 2:
            problem = f"the last line is not valid JSON ({exc}); write one object per line"
            return None, f"{METRICS_JSONL}: {problem}"
        try:  # the last line is being written right now: use the one before
            value = json.loads(lines[nonempty[-2]])
        except ValueError as exc2:
            return None, f"{METRICS_JSONL}: the line before the last is not valid JSON ({exc2})"
    if not isinstance(value, dict):
        return None, f"{METRICS_JSONL}: the last line is a JSON {type(value).__name__}, not an object"
    return value, None


def parse_metrics_files(
    exp_dir: str, names: list[str] | tuple[str, ...]
) -> tuple[dict[str, Any], str | None]:
    """``metrics.json`` (one object) then ``metrics.jsonl`` (its last line) as metric columns;
    nested objects become ``outer.inner`` columns."""
    metric: dict[str, Any] = {}
    problems: list[str] = []
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
                metric.update(_flatten(data))
            else:
                problems.append(f"{METRICS_JSON}: expected a JSON object, got a {type(data).__name__}")
    if METRICS_JSONL in names:
        try:
            data, problem = _last_jsonl_object(os.path.join(exp_dir, METRICS_JSONL))
        except OSError as exc:
            data, problem = None, f"cannot read {METRICS_JSONL}: {exc.strerror}"
        if data is not None:
            metric.update(_flatten(data))
        if problem:
            problems.append(problem)
    return metric, "; ".join(problems) or None


METRICS_TOKEN = hashlib.sha256(b'["metrics-files", 1]').hexdigest()

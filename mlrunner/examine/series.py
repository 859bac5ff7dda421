"""Metric histories, and ``metrics.jsonl`` read into them, incrementally.

A history is a pair of float64 arrays, ``(steps, values)``, in the order the points were
written. ``metrics.jsonl`` holds one JSON object per line; each line is one record, its x
is its ``step``, else its ``epoch``, else its record number (0, 1, ...). Every other
numeric value of the line is one point of the history of that key (nested objects give
``outer.inner`` keys); strings, booleans and nulls are only table values. The last value
of each key (any JSON value) is its table column.

Incremental reading: :class:`JsonlState` remembers how far the file was parsed (the end of
its last complete line) with the bytes around that point. When the file has grown and
those bytes are unchanged, only the new lines are read; anything else (a truncated,
replaced or rewritten file) reads it again from the start. A last line without its
newline is being written: it counts when it parses, and is read again next time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Series = tuple[np.ndarray, np.ndarray]  # (steps, values), float64 each
Histories = dict[str, Series]

METRICS_JSONL = "metrics.jsonl"
X_KEYS = ("step", "epoch")
CHECK_BYTES = 256
_NUMBER = (int, float)  # type() in: bool excluded
_MAX_BAD_LINES = 5


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects as ``outer.inner`` keys."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def empty_series() -> Series:
    return np.empty(0, dtype=np.float64), np.empty(0, dtype=np.float64)


@dataclass
class JsonlState:
    """How far ``metrics.jsonl`` was parsed, and what it held up to there."""

    ident: tuple[int, int] = (0, 0)  # st_dev, st_ino
    offset: int = 0  # the end of the last complete line parsed
    head: bytes = b""  # the file's first bytes (up to CHECK_BYTES)
    tail: bytes = b""  # the CHECK_BYTES before offset
    lines: int = 0  # newlines before offset
    records: int = 0
    series: Histories = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)
    bad: list[int] = field(default_factory=list)  # line numbers (1-based), the first few
    n_bad: int = 0
    first_error: str = ""


class _Chunk:
    """Records of some lines, as columns: key -> ([x], [value])."""

    def __init__(self) -> None:
        self.columns: dict[str, tuple[list[float], list[float]]] = {}
        self.xs: list[float] = []
        self.last: dict[str, Any] = {}

    def add(self, records: list[dict[str, Any]], first_index: int) -> None:
        columns, xs, last = self.columns, self.xs, self.last
        for i, rec in enumerate(records, first_index):
            if any(type(v) is dict for v in rec.values()):
                rec = flatten(rec)
            xkey = None
            x: Any = i
            for key in X_KEYS:
                value = rec.get(key)
                if type(value) in _NUMBER:
                    x, xkey = value, key
                    break
            xs.append(x)
            last.update(rec)
            for key, value in rec.items():
                if type(value) in _NUMBER and key != xkey:
                    col = columns.get(key)
                    if col is None:
                        col = columns[key] = ([], [])
                    col[0].append(x)
                    col[1].append(value)

    def arrays(self, n_records: int) -> Histories:
        """Columns as arrays; a key present in every record shares one steps array."""
        shared = floats(self.xs) if self.xs else None
        out: Histories = {}
        for key, (x, y) in self.columns.items():
            steps = shared if shared is not None and len(x) == n_records else floats(x)
            out[key] = (steps, floats(y))
        return out


def floats(values: list[Any]) -> np.ndarray:
    """float64 array of Python numbers; an int too large for a float becomes +-inf."""
    try:
        return np.asarray(values, dtype=np.float64)
    except OverflowError:
        return np.asarray([_float(v) for v in values], dtype=np.float64)


def _float(value: Any) -> float:
    try:
        return float(value)
    except OverflowError:
        return float("inf") if value > 0 else float("-inf")


def _parse_lines(data: bytes, first_line: int, state: JsonlState) -> list[dict[str, Any]]:
    """The records of complete lines ``data``; bad lines noted in ``state``."""
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    numbered = [(n, line) for n, line in enumerate(lines, first_line) if line.strip()]
    if not numbered:
        return []
    try:  # one C call for the whole chunk; any bad line: line by line
        values = json.loads(b"[" + b",".join(line for _, line in numbered) + b"]")
        if len(values) == len(numbered) and all(type(v) is dict for v in values):
            return list(values)
    except ValueError:
        pass
    records: list[dict[str, Any]] = []
    for n, line in numbered:
        try:
            value = json.loads(line)
        except ValueError as exc:
            problem = f"not valid JSON ({exc})"
        else:
            if type(value) is dict:
                records.append(value)
                continue
            problem = f"a JSON {type(value).__name__}, not an object"
        state.n_bad += 1
        if len(state.bad) < _MAX_BAD_LINES:
            state.bad.append(n)
        if not state.first_error:
            state.first_error = problem
    return records


def _merge(old: Histories, new: Histories) -> Histories:
    if not old:
        return new
    out = dict(old)
    joined: dict[tuple[int, int], np.ndarray] = {}  # shared steps arrays stay shared
    for key, (x, y) in new.items():
        if key not in out:
            out[key] = (x, y)
            continue
        ox, oy = out[key]
        ident = (id(ox), id(x))
        steps = joined.get(ident)
        if steps is None:
            steps = joined[ident] = np.concatenate([ox, x])
        out[key] = (steps, np.concatenate([oy, y]))
    return out


def read_jsonl(
    path: str, previous: JsonlState | None
) -> tuple[JsonlState, Histories, dict[str, Any], str | None]:
    """Read ``path`` (from where ``previous`` stopped, when it still holds): returns the new
    state, the histories, the last values (flattened) and a problem or None. Raises OSError."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        ident = (st.st_dev, st.st_ino)
        state = previous if previous is not None and _still_valid(f, st.st_size, ident, previous) else None
        if state is None:
            state = JsonlState(ident=ident)
        else:  # a copy: the previous one may be shared with a cached result
            state = JsonlState(**{**state.__dict__, "bad": list(state.bad), "last": dict(state.last)})
        f.seek(state.offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    complete, partial = data[:end], data[end:]
    if complete:
        records = _parse_lines(complete, state.lines + 1, state)
        chunk = _Chunk()
        chunk.add(records, state.records)
        state.series = _merge(state.series, chunk.arrays(len(records)))
        state.last.update(chunk.last)
        state.records += len(records)
        state.lines += complete.count(b"\n")
        if state.offset < CHECK_BYTES:
            state.head = (state.head + complete)[:CHECK_BYTES]
        state.tail = (state.tail + complete)[-CHECK_BYTES:]
        state.offset += len(complete)
    histories, last = state.series, state.last
    if partial.strip():  # being written: counts when it parses, read again next time
        try:
            value = json.loads(partial)
        except ValueError:
            value = None
        if type(value) is dict:
            chunk = _Chunk()
            chunk.add([value], state.records)
            histories = _merge(histories, chunk.arrays(1))
            last = {**last, **chunk.last}
            return state, histories, last, _problem(state, 1)
        if state.records == 0 and not state.n_bad:
            return state, histories, last, f"{METRICS_JSONL}: its only line is not valid JSON yet"
    return state, histories, last, _problem(state)


def _still_valid(f: Any, size: int, ident: tuple[int, int], state: JsonlState) -> bool:
    if ident != state.ident or size < state.offset:
        return False
    if state.offset == 0:
        return True
    f.seek(0)
    if f.read(len(state.head)) != state.head:
        return False
    f.seek(state.offset - len(state.tail))
    return bool(f.read(len(state.tail)) == state.tail)


def _problem(state: JsonlState, tentative: int = 0) -> str | None:
    if state.n_bad == 1:
        return f"{METRICS_JSONL}: line {state.bad[0]} is {state.first_error}; write one object per line"
    if state.n_bad:
        shown = ", ".join(str(n) for n in state.bad)
        more = f" (and {state.n_bad - len(state.bad)} more)" if state.n_bad > len(state.bad) else ""
        return (
            f"{METRICS_JSONL}: lines {shown}{more} are not JSON objects (line {state.bad[0]}: "
            f"{state.first_error}); write one object per line"
        )
    if state.records + tentative == 0:
        return f"{METRICS_JSONL}: no JSON line yet"
    return None

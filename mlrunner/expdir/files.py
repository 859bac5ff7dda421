"""The files of one experiment dir that users and 0.5.9 tools read: ``param`` and ``stat``.

``param`` is YAML: the resolved params plus ``_name``, ``_output``, ``_time`` and
``_scripts`` (a copy-pasteable shell line per command). ``stat`` is YAML: command ->
``finished`` / ``failed`` / ``running`` / ``interrupted``. Both are written atomically
(temp file + rename) so a crash never leaves a half-written file. The ledger is the
source of truth; these files are its compatible view.

:class:`Writer` writes them for a run: at once, or (a command's ``running``) after a
delay that a short command's end usually makes unnecessary.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

try:  # the C dumper/loader are ~10x faster than the pure-Python ones
    from yaml import CSafeDumper as _Dumper
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeDumper as _Dumper  # type: ignore[assignment]
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

PARAM_FILE = "param"
STAT_FILE = "stat"
# Statuses the stat file shows (0.5.9's words); ledger-only classes map onto them.
STAT_WORDS = {
    "finished": "finished",
    "failed": "failed",
    "oom": "failed",
    "timeout": "failed",
    "node_fail": "failed",
    "preempted": "interrupted",
    "cancelled": "interrupted",
    "interrupted": "interrupted",
    "lost": "interrupted",
    "running": "running",
}


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same dir and a rename.

    Plain ``os`` calls (no buffered file object): this runs a few times per command.
    """
    path = os.fspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    view = memoryview(data.encode("utf-8") if isinstance(data, str) else data)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        try:
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, width=1_000_000, allow_unicode=True, sort_keys=False)


def load_yaml(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_Loader)


def param_text(params: Mapping[str, Any]) -> str:
    """``params`` as YAML, exactly as :func:`dump_yaml` writes it.

    The common shape (scalars, and one level of nested mapping for ``_scripts``) is
    written here directly: the YAML dumper's Python representer costs about 0.1 ms per
    experiment, on the dispatch loop. Anything it is not sure of goes to the dumper.
    """
    text = _simple_yaml(params)
    return dump_yaml(dict(params)) if text is None else text


_PLAIN_CHARS = re.compile(r"[ -~]+")  # printable ASCII, no tab or line break
_NO_PLAIN_START = frozenset("#,[]{}&*!|>'\"%@`?:- ")
_RESOLVERS = yaml.resolver.Resolver.yaml_implicit_resolvers


def _string(text: str) -> str | None:
    """How the dumper writes the string ``text``: as it is, or in single quotes when YAML
    would read it as something else (``'true'``, ``'1.5'``, ``'2020-01-01'``); None when
    it may do anything else (indicators, line breaks, tabs, non-ASCII, long strings)."""
    if not _plain_shape(text):
        return None
    for tag, regexp in _RESOLVERS.get(text[0], ()):
        if tag != "tag:yaml.org,2002:str" and regexp.match(text):
            return "'" + text + "'"  # _plain_shape admits no quote: nothing to double
    return text


def _plain_shape(text: str) -> bool:
    """Characters and indicators allow a plain scalar (implicit types aside)."""
    if not text or len(text) > 4096 or not _PLAIN_CHARS.fullmatch(text):
        return False
    if text[0] in _NO_PLAIN_START or text[-1] in " :" or text.startswith(("---", "...")):
        return False
    return ": " not in text and " #" not in text and "'" not in text


def _plain(text: str) -> bool:
    """True when the dumper writes the string ``text`` unquoted (as it is)."""
    return _string(text) == text


def _scalar(value: Any) -> str | None:
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is float:
        if value != value:
            return ".nan"
        if value in (math.inf, -math.inf):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value).lower()
        return text.replace("e", ".0e", 1) if "." not in text and "e" in text else text
    if kind is str:
        return _string(value)
    return None


def _simple_yaml(data: Mapping[str, Any]) -> str | None:
    lines: list[str] = []
    return "".join(lines) if _simple_lines(data, lines, nested=True) and lines else None


def _simple_lines(data: Mapping[str, Any], lines: list[str], nested: bool) -> bool:
    """Append ``key: value`` lines (and, when ``nested``, one level of mappings) to ``lines``;
    False when anything needs the dumper."""
    indent = "" if nested else "  "
    for key, value in data.items():
        if type(key) is not str or len(key) > 100 or not _plain(key):
            return False
        if nested and type(value) is dict:
            lines.append(f"{key}:\n")
            if not value or not _simple_lines(value, lines, nested=False):
                return False
            continue
        text = _scalar(value)
        if text is None:
            return False
        lines.append(f"{indent}{key}: {text}\n")
    return True


def read_param(exp_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The experiment's ``param`` mapping, None when the file is missing or unreadable."""
    try:
        data = load_yaml(Path(exp_dir, PARAM_FILE))
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def read_stat(exp_dir: str | os.PathLike[str]) -> dict[str, str]:
    """command -> status from ``stat``; {} when missing or unreadable (0.5.9 files included)."""
    try:
        data = load_yaml(Path(exp_dir, STAT_FILE))
    except (OSError, yaml.YAMLError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}


def stat_text(stat: Mapping[str, str]) -> str:
    # Command names match [\w-]+ and statuses are plain words: this is valid YAML, and
    # an order of magnitude cheaper than a YAML dumper on the per-command hot path.
    return "".join(f"{name}: {STAT_WORDS.get(status, status)}\n" for name, status in stat.items())


class Writer:
    """Writes ``param`` and ``stat`` files: at once, or after a delay from a thread of its own.

    A delayed write (a command's ``running``, which its end usually replaces within the
    delay) is dropped when the same file is written again first; a later delayed write
    of a file replaces an earlier pending one, keeping the earlier due time. Writes of
    one file never overtake each other. Writes at once happen in the caller's thread:
    measured on the dispatch benchmark, handing them to the thread cost more (the GIL
    passed back and forth) than the file system calls it saved the caller. A failed
    delayed write is raised by the next call, and by :meth:`flush` / :meth:`close`.
    Thread-safe.
    """

    def __init__(self) -> None:
        self._io = threading.Lock()  # held around every file write (callers and the thread)
        self._cond = threading.Condition()  # guards the fields below
        self._due: dict[str, tuple[float, str]] = {}  # path -> (due, text) of delayed writes
        self._wake_at = -math.inf  # when the sleeping thread wakes up (-inf: it is not asleep)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closing = False

    def param(self, exp_dir: str, params: Mapping[str, Any]) -> None:
        self._write(os.path.join(exp_dir, PARAM_FILE), param_text(params))

    def stat(self, exp_dir: str, stat: Mapping[str, str], delay: float = 0.0) -> None:
        path, text = os.path.join(exp_dir, STAT_FILE), stat_text(stat)
        if delay > 0:
            self._later(path, text, delay)
        else:
            self._write(path, text)

    def _write(self, path: str, text: str) -> None:
        with self._io:
            with self._cond:
                self._raise_error()
                self._due.pop(path, None)
            atomic_write(path, text)

    def _later(self, path: str, text: str, delay: float) -> None:
        with self._cond:
            self._raise_error()
            due = time.monotonic() + delay
            old = self._due.get(path)
            if old is not None:
                due = min(due, old[0])
            self._due[path] = (due, text)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mlrunner-files", daemon=True)
                self._thread.start()
            elif due < self._wake_at:  # else the thread sees it when it wakes up anyway
                self._cond.notify()

    def flush(self) -> None:
        """Write the delayed writes now; raise a failed one."""
        with self._io:
            with self._cond:
                self._raise_error()
                writes, self._due = list(self._due.items()), {}
            for path, (_, text) in writes:
                atomic_write(path, text)

    def close(self) -> None:
        """:meth:`flush`, then stop the thread (a later delayed write starts a new one)."""
        try:
            self.flush()
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
                thread = self._thread
            if thread is not None:
                thread.join()
            with self._cond:
                self._thread = None
                self._closing = False

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closing:
                        return
                    now = time.monotonic()
                    soonest = min((due for due, _ in self._due.values()), default=math.inf)
                    if soonest <= now:
                        break
                    self._wake_at = soonest
                    self._cond.wait(None if soonest == math.inf else soonest - now)
                    self._wake_at = -math.inf
            with self._io:
                with self._cond:  # what is still due: a caller may have written a file meanwhile
                    now = time.monotonic()
                    ready = [path for path, (due, _) in self._due.items() if due <= now]
                    writes = [(path, self._due.pop(path)[1]) for path in ready]
                for path, text in writes:
                    try:
                        atomic_write(path, text)
                    except Exception as exc:  # kept for the caller's next call (or close)
                        with self._cond:
                            self._error = self._error or exc

"""The files of one experiment dir that users and 0.5.9 tools read: ``param`` and ``stat``.

``param`` is YAML: the resolved params plus ``_name``, ``_output``, ``_time`` and
``_scripts`` (a copy-pasteable shell line per command). ``stat`` is YAML: command ->
``finished`` / ``failed`` / ``running`` / ``interrupted`` (:data:`~.names.STAT_WORDS`).
Both are written atomically (temp file + rename) so a crash never leaves a half-written
file. The ledger is the source of truth; these files are its compatible view.
:func:`read_param` is the one reader of ``param``: the runner's and the Examiner's.

:class:`Writer` writes them for a run: at once, or (a command's ``running``) after a
delay that a short command's end usually makes unnecessary.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mlrunner.expdir import yamlfast
from mlrunner.expdir.names import PARAM_FILE, STAT_FILE, stat_word


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


def param_text(params: Mapping[str, Any]) -> str:
    """``params`` as YAML, exactly as :func:`~.yamlfast.dump_yaml` writes it.

    The common shape (scalars, and one level of nested mapping for ``_scripts``) is
    written by :func:`~.yamlfast.dump` directly: the YAML dumper's Python representer
    costs about 0.1 ms per experiment, on the dispatch loop.
    """
    text = yamlfast.dump(params)
    return yamlfast.dump_yaml(dict(params)) if text is None else text


def read_param(exp_dir: str | os.PathLike[str], problems: list[str] | None = None) -> dict[str, Any] | None:
    """The experiment's ``param`` mapping; None when there is none.

    None without a problem when the file is missing or empty (0.5.9 skips such a dir);
    None with a problem appended to ``problems`` (when given) when the file exists but
    cannot be read as a YAML mapping. The common shape is read by :func:`~.yamlfast.load`,
    the rest by PyYAML (0.5.9's FullLoader for python/... tags).
    """
    path = os.path.join(exp_dir, PARAM_FILE)
    problem: str | None = None
    data: Any = None
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problem = f"cannot read {PARAM_FILE}: {exc}"
    else:
        data = yamlfast.load(text)
        if data is None:
            try:
                data = yamlfast.load_yaml(text, legacy=True)
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f"{PARAM_FILE}:{mark.line + 1}" if mark is not None else PARAM_FILE
                what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
                problem = f"{where}: invalid YAML ({what}); fix or delete the file"
        if data is not None and not isinstance(data, dict):
            problem = f"{PARAM_FILE}: expected a YAML mapping of params, got {type(data).__name__}"
    if problem is not None:
        if problems is not None:
            problems.append(problem)
        return None
    return data if isinstance(data, dict) else None


def read_stat(exp_dir: str | os.PathLike[str]) -> dict[str, str]:
    """command -> status from ``stat``; {} when missing or unreadable (0.5.9 files included)."""
    try:
        data = yamlfast.load_yaml(Path(exp_dir, STAT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}


def stat_text(stat: Mapping[str, str]) -> str:
    # Command names match [\w-]+ and statuses are plain words: this is valid YAML, and
    # an order of magnitude cheaper than a YAML dumper on the per-command hot path.
    return "".join(f"{name}: {stat_word(status)}\n" for name, status in stat.items())


def update_stat(exp_dir: str | os.PathLike[str], command: str, status: str) -> None:
    """Set one command's word in a ``stat`` file (read, change, atomic write)."""
    stat = read_stat(exp_dir)
    stat[command] = status
    atomic_write(Path(exp_dir, STAT_FILE), stat_text(stat))


LOG_TAIL_BYTES = 4096


def log_tail(path: str | os.PathLike[str], limit: int = LOG_TAIL_BYTES) -> str | None:
    """The last ``limit`` bytes of a log as text (None: unreadable)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


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

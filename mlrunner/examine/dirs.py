"""Experiment dirs of an output tree: listing them, loading ``param`` and finding logs.

An experiment dir (0.5.9's layout, kept by mlrunner 1.x) holds ``param`` (YAML: the
resolved params plus ``_name``, ``_output``, ``_time``, ``_scripts``), ``stat`` and
``log.<command>.<YYYYmmdd.HHMMSS>`` files. Dot-dirs (``<output>/.mlrunner``) are not
experiments and are never listed.
"""

from __future__ import annotations

import collections
import contextvars
import os
import re
from pathlib import Path
from typing import Any

import yaml

from mlrunner.errors import ExamineError
from mlrunner.expdir import fastyaml

try:  # libyaml's loader is ~8x faster than the pure-Python one
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]

PARAM_FILE = "param"

Experiment = collections.namedtuple("Experiment", ["cache", "metric", "param"])
Experiment.__doc__ = """One experiment as parsers see it: three dicts.

``param``: the experiment's ``param`` file; ``metric``: table columns parsers add;
``cache``: per-experiment scratch space that is not tabulated."""

# latest_log() records the logs it did not find while a parser runs, so that the
# Examiner can say "no log.test.* in this dir" next to the parser's error.
_missing_logs: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "mlrunner_examine_missing_logs", default=None
)


# While the Examiner runs a parser on a dir, the dir's listing (taken just before): saves
# latest_log() a listdir per call. The result is as of the listing, which is also what the
# cache entry records, so a log that appears meanwhile is picked up by the next exam().
_listing: contextvars.ContextVar[tuple[str, tuple[str, ...]] | None] = contextvars.ContextVar(
    "mlrunner_examine_listing", default=None
)


def compile_regex(regex: str) -> re.Pattern[str]:
    try:
        return re.compile(regex)
    except re.error as exc:
        raise ExamineError(
            f"invalid experiment regex {regex!r}: {exc}",
            hint="the regex is searched in each experiment dir name, e.g. 'Lr_0.1' or '^Norm_new'",
        ) from None


def list_dirs(output: str | os.PathLike[str]) -> list[str]:
    """Names of the non-hidden sub-directories of ``output``, sorted."""
    try:
        with os.scandir(output) as it:
            names = [e.name for e in it if not e.name.startswith(".") and e.is_dir()]
    except FileNotFoundError:
        raise ExamineError(
            f"output dir '{os.fspath(output)}' does not exist",
            hint="pass the output dir your experiments were run with (`run -o OUTPUT`)",
        ) from None
    except NotADirectoryError:
        raise ExamineError(
            f"output '{os.fspath(output)}' is a file, not a dir of experiments",
            hint="pass the output dir your experiments were run with (`run -o OUTPUT`)",
        ) from None
    except PermissionError as exc:
        raise ExamineError(f"cannot list output dir '{os.fspath(output)}': {exc.strerror}") from None
    names.sort()
    return names


def _loads(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_SafeLoader)
    except yaml.constructor.ConstructorError:
        # 0.5.9 read param files with FullLoader (python/tuple tags and the like).
        return yaml.load(text, Loader=yaml.FullLoader)


def read_params(exp_dir: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, str | None]:
    """(params, None); (None, None) when there is no usable ``param`` (0.5.9 skips the dir);
    (None, problem) when the file exists but cannot be read as a YAML mapping."""
    path = os.path.join(exp_dir, PARAM_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot read {PARAM_FILE}: {exc}"
    data = fastyaml.load(text)
    try:
        if data is None:
            data = _loads(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{PARAM_FILE}:{mark.line + 1}" if mark is not None else PARAM_FILE
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return None, f"{where}: invalid YAML ({problem}); fix or delete the file"
    if data is None:
        return None, None
    if not isinstance(data, dict):
        return None, f"{PARAM_FILE}: expected a YAML mapping of params, got {type(data).__name__}"
    return data, None


def log_names(names: list[str] | tuple[str, ...], command: str) -> list[str]:
    """The ``log.<command>.*`` names among ``names``, oldest first (time stamps sort)."""
    prefix = f"log.{command}."
    return sorted(n for n in names if n.startswith(prefix))


def note_missing_log(command: str, index: int) -> None:
    seen = _missing_logs.get()
    if seen is not None:
        which = f"log.{command}.*" if index == -1 else f"log.{command}.* (index {index})"
        if which not in seen:
            seen.append(which)


def latest_log(command: str, path: str | os.PathLike[str], index: int = -1) -> Path | None:
    """Path of the latest ``log.<command>.<time>`` in experiment dir ``path`` (``index=-2``:
    the one before), or None when there is no such log."""
    if not isinstance(index, int):
        raise TypeError(f"latest_log(): index must be an int, got {type(index).__name__}")
    known = _listing.get()
    if known is not None and known[0] == os.fspath(path):
        names: list[str] | tuple[str, ...] = known[1]
    else:
        try:
            names = os.listdir(path)
        except (FileNotFoundError, NotADirectoryError):
            names = []
    found = log_names(names, command)
    if not -len(found) <= index < len(found):
        note_missing_log(command, index)
        return None
    return (path if isinstance(path, Path) else Path(path)) / found[index]

"""Experiment dirs of an output tree: listing them, loading ``param`` and finding logs.

The layout of an experiment dir is :mod:`mlrunner.expdir`'s (0.5.9's, kept by mlrunner
1.x); this module reads it through that package. Dot-dirs (``<output>/.mlrunner``) are not
experiments and are never listed.
"""

from __future__ import annotations

import contextvars
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from mlrunner.errors import ExamineError
from mlrunner.expdir import LOG_PREFIX, log_names

# What parsers see and fill; keys and values are the user's (YAML keys may be ints...).
Params = dict[Any, Any]  # the ``param`` file
Metrics = dict[Any, Any]  # table columns
Caches = dict[Any, Any]  # the shared ``caches`` (and an experiment's own ``cache``)
Delta = dict[Any, tuple[bool, Any]]  # what parsers did to ``caches``: key -> (added, value)


class Experiment(NamedTuple):
    """One experiment as parsers see it: three dicts.

    ``param``: the experiment's ``param`` file; ``metric``: table columns parsers add;
    ``cache``: per-experiment scratch space that is not tabulated."""

    cache: Caches
    metric: Metrics
    param: Params


Parser = Callable[[Path, Experiment, Caches], object]  # a user parser (its result is ignored)

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


def note_missing_log(command: str, index: int) -> None:
    seen = _missing_logs.get()
    if seen is not None:
        pattern = f"{LOG_PREFIX}{command}.*"
        which = pattern if index == -1 else f"{pattern} (index {index})"
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

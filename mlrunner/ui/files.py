"""Files of the output root the UI may read: experiment dirs by name and their logs, each
checked so that no name or command (``..``, ``/``, an absolute path, a symlink out) reads
anything outside the output root; logs read in pieces, never whole.

No web framework here: the server and the report both use it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from mlrunner import expdir
from mlrunner.errors import MlrunnerError

CHUNK = 64 * 1024


class NotFound(MlrunnerError):
    """What a request names does not exist (an unknown run, experiment, command or log)."""


def _within(root_real: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def safe_component(value: str) -> bool:
    """True when ``value`` can only name an entry of a dir: no separator, no ``..``, no NUL."""
    return (
        bool(value)
        and value not in (".", "..")
        and "/" not in value
        and "\\" not in value
        and "\x00" not in value
        and not os.path.isabs(value)
    )


def experiment_dir(output: str, name: str) -> str:
    """The path of experiment ``name`` (a dir holding a ``param`` file right under
    ``output``); NotFound for anything else, hidden dirs and escapes included."""
    if not safe_component(name) or name.startswith("."):
        raise NotFound(f"no experiment '{name}'")
    path = os.path.join(output, name)
    root_real = os.path.realpath(output)
    if not os.path.isfile(os.path.join(path, expdir.PARAM_FILE)) or not _within(root_real, path):
        raise NotFound(f"no experiment '{name}' under '{output}'")
    return path


@dataclass(frozen=True)
class LogPiece:
    """Bytes ``start``..``end`` of ``path`` (``size``: the file's size when asked)."""

    path: str
    name: str
    start: int
    end: int
    size: int

    def chunks(self) -> Iterator[bytes]:
        """The piece in chunks of 64 KiB (a file that shrank meanwhile ends early)."""
        with open(self.path, "rb") as f:
            f.seek(self.start)
            left = self.end - self.start
            while left > 0:
                data = f.read(min(CHUNK, left))
                if not data:
                    return
                left -= len(data)
                yield data

    def read(self) -> bytes:
        return b"".join(self.chunks())


def latest_log_path(output: str, name: str, command: str, recorded: str | None = None) -> str:
    """The latest log of ``command`` in experiment ``name``: ``recorded`` (the ledger's
    log path of its latest attempt) when it is a log of that dir, else the newest
    ``log.<command>.*`` there. NotFound when there is none."""
    exp = experiment_dir(output, name)
    if not safe_component(command):
        raise NotFound(f"no command '{command}' in experiment '{name}'")
    root_real = os.path.realpath(output)
    if recorded:
        base = os.path.basename(recorded)
        candidate = os.path.join(exp, base)
        if (
            base.startswith(f"{expdir.LOG_PREFIX}{command}.")
            and os.path.isfile(candidate)
            and _within(root_real, candidate)
        ):
            return candidate
    try:
        names = os.listdir(exp)
    except OSError:
        names = []
    for log in reversed(expdir.log_names(names, command)):
        candidate = os.path.join(exp, log)
        if os.path.isfile(candidate) and _within(root_real, candidate):
            return candidate
    raise NotFound(f"no log of command '{command}' in experiment '{name}'")


def log_piece(
    path: str, offset: int | None = None, tail: int | None = None, limit: int | None = None
) -> LogPiece:
    """Which bytes of the log at ``path`` to send: from ``offset`` (default 0), or the
    last ``tail`` bytes; to the end, or at most ``limit`` bytes."""
    size = os.path.getsize(path)
    if tail is not None:
        start = max(0, size - max(0, tail))
    else:
        start = min(max(0, offset or 0), size)
    end = size if limit is None else min(size, start + max(0, limit))
    return LogPiece(path, os.path.basename(path), start, end, size)

"""The names of an experiment dir's files, and the words of its ``stat`` file (0.5.9's).

An experiment dir holds ``param`` (YAML: the resolved params plus ``_name``, ``_output``,
``_time``, ``_scripts``), ``stat`` (YAML: command -> one of :data:`STAT_WORDS`' words),
one ``log.<command>.<time>`` per attempt (``<time>``: ``%Y%m%d.%H%M%S``; a retry within the
same second adds ``.2``, ``.3``...), and ``git.json`` / ``git.patch`` (written by
:mod:`mlrunner.snapshot`). Dot-dirs beside the experiment dirs (``<output>/.mlrunner``)
are not experiments.
"""

from __future__ import annotations

from collections.abc import Iterable

from mlrunner.plan import digest, fit_name
from mlrunner.status import AttemptStatus

PARAM_FILE = "param"
STAT_FILE = "stat"
LOG_PREFIX = "log."
MAX_LOG_NAME_BYTES = 240


def _stat_word(status: AttemptStatus) -> AttemptStatus:
    if status.live or status is AttemptStatus.FINISHED:
        return status
    return AttemptStatus.FAILED if status.failed else AttemptStatus.INTERRUPTED


# What the stat file shows for an attempt status: 0.5.9's four words (finished, failed,
# running, interrupted); the ledger-only classes map onto them (oom -> failed, lost ->
# interrupted...). Keys and values are str enums: a plain status string looks them up.
STAT_WORDS: dict[str, AttemptStatus] = {status: _stat_word(status) for status in AttemptStatus}


def stat_word(status: str) -> str:
    """The ``stat`` file's word for ``status`` (an unknown one is written as it is)."""
    return str(STAT_WORDS.get(status, status))


def log_name(command: str, time: str, name: str | None = None) -> str:
    """``log.<cmd>.<time>``; with --no-subdir ``.<experiment name>`` is appended, and a log name
    over 240 bytes (room for a retry's ``.2``) is cut with a stable hash suffix."""
    base = f"{LOG_PREFIX}{command}.{time}"
    if name is None:
        return base
    full = f"{base}.{name}"
    if len(full.encode("utf-8", "surrogatepass")) <= MAX_LOG_NAME_BYTES:
        return full
    return fit_name(full, digest(name, 16), MAX_LOG_NAME_BYTES)


def log_names(names: Iterable[str], command: str) -> list[str]:
    """The ``log.<command>.*`` names among ``names``, oldest first (time stamps sort)."""
    prefix = f"{LOG_PREFIX}{command}."
    return sorted(n for n in names if n.startswith(prefix))

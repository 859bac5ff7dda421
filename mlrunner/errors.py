"""One exception hierarchy for everything a user can get wrong or run into.

The library never prints: it raises an :class:`MlrunnerError` whose ``str()`` is a
complete, user-facing message (what is wrong, where, how to fix it). The CLI renders
it and exits with :attr:`MlrunnerError.exit_code`, without a traceback.
"""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable


class MlrunnerError(Exception):
    """Base class: a message meant for the user, with optional location and hint."""

    exit_code: int = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.key = key
        self.hint = hint

    @property
    def location(self) -> str:
        """``file:line:column`` as far as known, '' when nothing is known."""
        parts: list[str] = []
        if self.file:
            parts.append(str(self.file))
            if self.line is not None:
                parts.append(str(self.line))
                if self.column is not None:
                    parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        head = self.message
        if self.key:
            head = f"key '{self.key}': {head}"
        if self.location:
            head = f"{self.location}: {head}"
        if self.hint:
            head = f"{head}\n  hint: {self.hint}"
        return head


class SpecError(MlrunnerError):
    """params.yaml is missing, malformed or inconsistent."""


class UsageError(MlrunnerError):
    """A command-line option is wrong (unknown title, command, bad value...)."""


class LedgerError(MlrunnerError):
    """The SQLite ledger cannot be opened, migrated or written."""

    exit_code = 1


class NoLedgerError(LedgerError):
    """There is no ledger where the command looked: a wrong ``-o`` (a usage mistake)."""

    exit_code = 2


class LedgerVersionError(LedgerError):
    """The ledger was written by a newer mlrunner (schema newer than this code knows)."""


class UnsafeFilesystemError(LedgerError):
    """The ledger would live on a filesystem where SQLite locking is unsafe (NFS, ...)."""


class SnapshotError(MlrunnerError):
    """The git snapshot could not be taken."""

    exit_code = 1


class RestoreError(MlrunnerError):
    """An experiment's code could not be restored."""

    exit_code = 1


class StorageError(MlrunnerError):
    """The output's filesystem is full or read-only: the run stops cleanly (interrupted)."""

    exit_code = 1


# Errors of a file that stop the whole run (the disk is full or read-only), as opposed to one
# experiment's (its dir deleted, a permission): that experiment's command fails alone.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def storage_error(exc: OSError, where: str | None = None) -> StorageError:
    """A :class:`StorageError` saying what is full or read-only, and how to go on."""
    path = exc.filename or where or "the output"
    what = "read-only" if exc.errno == errno.EROFS else "full (no space left, or over quota)"
    return StorageError(
        f"the filesystem holding {path} is {what}: the run stopped",
        hint="free space or remount it writable, then `run --resume -o OUTPUT` finishes what is left",
    )


class ResourceError(MlrunnerError):
    """GPU discovery or reservation failed (no nvidia-smi, no GPU matches...)."""


class BackendError(MlrunnerError):
    """A backend (local pool, Slurm) cannot run: missing extra, no cluster, ..."""

    exit_code = 1


class ExamineError(MlrunnerError):
    """The Examiner cannot read an output tree."""

    exit_code = 1


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean X?' hint for a misspelt word, or None when nothing is close."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{matches[0]}'?" if matches else None

"""The code as it is now, and the code difference between two snapshots: for staleness
(``table(stale=True)``) and ``mlrunner diff``.

:func:`current_snapshot` captures the working state of a repository as
:func:`mlrunner.snapshot.take_snapshot` does (same caps, same exclusions), through a copy
of the index, but records nothing: no commit, no ref, no patch (the changed files' blobs
enter the object database, as ``git add`` would put them there, and ``git gc`` prunes them).
Stdlib only: GitPython is not imported.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mlrunner.errors import SnapshotError
from mlrunner.snapshot.capture import (
    Clock,
    Limits,
    describe_excluded,
    exclude_prefixes,
    write_working_tree,
)
from mlrunner.snapshot.git import GitFailed, run_git
from mlrunner.snapshot.record import Snapshot


def current_snapshot(
    root: str | os.PathLike[str], *, exclude: Iterable[str | os.PathLike[str]] = ()
) -> tuple[Snapshot | None, str | None]:
    """(the working state of the repository at ``root`` as an unrecorded Snapshot, None) or
    (None, why not: no git, no repository there, a git failure)."""
    where = os.fspath(root)
    if shutil.which("git") is None:
        return None, "git is not installed (not on PATH)"
    if not os.path.isdir(where):
        return None, f"the repository {where} does not exist (any more)"
    try:
        top = run_git(where, "rev-parse", "--show-toplevel").decode().strip()
        git_dir = run_git(where, "rev-parse", "--absolute-git-dir").decode().strip()
        try:
            commit: str | None = (
                run_git(where, "rev-parse", "-q", "--verify", "HEAD^{commit}").decode().strip()
            )
        except GitFailed:
            commit = None  # no commit yet
        real = os.path.realpath(top)
        warnings: list[str] = []
        limits = Limits()
        got = write_working_tree(
            real, commit=commit, index_path=os.path.join(git_dir, "index"), limits=limits,
            prefixes=exclude_prefixes(exclude, real), warnings=warnings, clock=Clock(None),
        )  # fmt: skip
    except (GitFailed, OSError) as exc:
        return None, f"cannot read the working state of {where}: {exc}"
    excluded = describe_excluded(real, got.excluded, got.in_head, limits, [])
    snap = Snapshot(
        vcs="git", commit=commit, dirty=got.status.dirty, tree=got.tree, excluded=excluded,
        repo_root=real, taken_at=time.time(), changes=got.status.counts,
    )  # fmt: skip
    return snap, None


@dataclass(frozen=True)
class CodeDiff:
    """Files that differ between two trees (``status`` letters of git: A, D, M, T...), and
    the unified diff when asked for."""

    files: list[dict[str, Any]]
    patch: str | None


def tree_diff(root: str | os.PathLike[str], a: str, b: str, *, patch: bool = False) -> CodeDiff:
    """What changed from tree (or commit) ``a`` to ``b`` in the repository at ``root``.
    Raises SnapshotError (an object is missing, not a repository) or OSError."""
    try:
        return _tree_diff(os.fspath(root), a, b, patch)
    except GitFailed as exc:
        raise SnapshotError(f"cannot compare the code snapshots in {os.fspath(root)}: {exc}") from None


def _tree_diff(where: str, a: str, b: str, patch: bool) -> CodeDiff:
    common = ("--no-color", "--no-ext-diff", "--no-textconv", "--no-renames")
    out = run_git(where, "diff", "--name-status", "-z", *common, a, b, "--")
    parts = out.split(b"\0")
    files = [
        {"path": os.fsdecode(parts[i + 1]), "status": parts[i].decode()}
        for i in range(0, len(parts) - 1, 2)
        if parts[i]
    ]
    text = None
    if patch:
        text = run_git(where, "diff", *common, "--src-prefix=a/", "--dst-prefix=b/", a, b, "--").decode(
            "utf-8", errors="replace"
        )
    return CodeDiff(files, text)

"""The run's git snapshot: ``capture`` (git plumbing: a temporary index, write-tree, a
commit kept under a ref), ``record`` (the Snapshot and the git.json / git.patch files of
each experiment dir), ``restore`` (`mlrunner restore` and `run --isolate` worktrees)."""

from mlrunner.snapshot.capture import PATCH_NAME, SNAPSHOT_REF_PREFIX, strip_credentials
from mlrunner.snapshot.rebuild import RestoreResult, materialize, remove_worktree, restore
from mlrunner.snapshot.record import (
    JSON_NAME,
    Snapshot,
    link_snapshot,
    read_snapshot,
    same_code,
    take_snapshot,
    write_snapshot,
)

__all__ = [
    "JSON_NAME",
    "PATCH_NAME",
    "SNAPSHOT_REF_PREFIX",
    "RestoreResult",
    "Snapshot",
    "link_snapshot",
    "materialize",
    "read_snapshot",
    "remove_worktree",
    "restore",
    "same_code",
    "strip_credentials",
    "take_snapshot",
    "write_snapshot",
]

"""The run's git snapshot: ``git`` (running git, commits kept under a ref, patches),
``capture`` (the working state into a tree, through a temporary index), ``record`` (the
Snapshot and the git.json / git.patch files of each experiment dir), ``rebuild``
(`mlrunner restore` and `run --isolate` worktrees), ``current`` (the code as it is now,
unrecorded; the difference between two snapshots)."""

from mlrunner.snapshot.capture import PATCH_NAME
from mlrunner.snapshot.current import CodeDiff, current_snapshot, tree_diff
from mlrunner.snapshot.git import SNAPSHOT_REF_PREFIX, strip_credentials
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
    "CodeDiff",
    "PATCH_NAME",
    "SNAPSHOT_REF_PREFIX",
    "RestoreResult",
    "Snapshot",
    "link_snapshot",
    "materialize",
    "read_snapshot",
    "remove_worktree",
    "restore",
    "current_snapshot",
    "same_code",
    "strip_credentials",
    "take_snapshot",
    "tree_diff",
    "write_snapshot",
]

"""Output roots inside a repository: every dir holding an mlrunner state dir (``.mlrunner/``)
is output (experiment dirs, logs, checkpoints), never code, and stays out of every snapshot.

They are found in the listing ``git status`` already made for the snapshot, never by
walking the tree: a listed path inside ``<dir>/.mlrunner/`` names ``<dir>``; an untracked
file's ancestor dirs are checked for a ``.mlrunner`` dir (one ``stat`` per dir, a dir's
answer kept for the other files in it), for when ``.mlrunner`` itself is ignored by git.
``MLRUNNER_LEDGER_DIR`` moves the ledger but leaves ``.mlrunner/`` (snapshots, locks) in
the output root, so such roots are found the same way.
"""

from __future__ import annotations

import os

HIDDEN_DIR = ".mlrunner"  # mlrunner's own state (ledger, worktrees, snapshots): never captured
_HIDDEN = HIDDEN_DIR.encode()


def output_roots(status: bytes, root: str, keep: bytes = b"") -> list[bytes]:
    """Repo-relative dirs (bytes, no trailing '/') holding a ``.mlrunner`` dir, from the
    untracked entries of ``git status --porcelain=v2 -z`` output ``status``.

    The repository root and any dir containing ``keep`` (the run's working dir, relative
    to the root) are never output roots: the code is there.
    """
    records = [rec[2:].rstrip(b"/") for rec in status.split(b"\0") if rec[:2] == b"? "]
    marker = b"/" + _HIDDEN + b"/"
    has_state: dict[bytes, bool] = {}  # dir -> it holds .mlrunner
    for path in records:  # roots whose .mlrunner/ git lists: no stat needed for their files
        i = path.find(marker)
        if i > 0:
            has_state[path[:i]] = True
    found: set[bytes] = set()
    root_of_parent: dict[bytes, bytes | None] = {}  # a file's dir -> the output root above it
    base = os.fsencode(root)
    for path in records:
        parent = path.rpartition(b"/")[0]
        if not parent:
            continue  # a file at the repository root
        if parent in root_of_parent:
            hit = root_of_parent[parent]
        else:
            hit = None
            parts = parent.split(b"/")
            for i in range(1, len(parts) + 1):  # shallowest first: an output root's own root
                d = b"/".join(parts[:i])
                state = has_state.get(d)
                if state is None:
                    state = has_state[d] = parts[i - 1] != _HIDDEN and os.path.isdir(
                        os.path.join(base, d, _HIDDEN)
                    )
                if state:
                    hit = d
                    break
            root_of_parent[parent] = hit
        if hit is not None:
            found.add(hit)
    return sorted(d for d in found if not (keep == d or keep.startswith(d + b"/")))

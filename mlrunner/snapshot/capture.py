"""Capture a git working state into a tree, through plumbing and a temporary index.

The engine behind :func:`mlrunner.snapshot.record.take_snapshot`: one ``git status`` on a copy of
the user's index (its stat cache keeps the walk as fast as a plain ``git status``), then
``update-index`` of only the changed paths, ``write-tree``, ``commit-tree`` on top of
HEAD and ``update-ref refs/mlrunner/snapshots/<id>``, and a binary diff against HEAD.
Every call runs with ``--no-optional-locks``; the user's index, working tree, stash and
HEAD are never written. Stdlib only (GitPython is used by the caller, lazily).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlrunner.snapshot.git import (
    SNAPSHOT_REF_PREFIX,
    GitFailed,
    commit_tree,
    empty_tree_id,
    git_env,
    git_version,
    run_git,
    strip_credentials,
    write_patch,
)
from mlrunner.snapshot.outputs import HIDDEN_DIR, output_roots

PATCH_NAME = "git.patch"
_SHOWN = 5  # how many paths a warning names before "and N more"


class Clock:
    """Accumulates seconds per named phase into ``sink`` (when one is given)."""

    def __init__(self, sink: dict[str, float] | None) -> None:
        self.sink = sink
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        if self.sink is not None:
            self.sink[name] = self.sink.get(name, 0.0) + now - self.last
        self.last = now


@dataclass(frozen=True)
class Limits:
    file: int = 1 << 20  # a file over this is left out
    total: int = 50 << 20  # changed content beyond this, together, is left out (largest first)
    hash: int = 256 << 20  # excluded files over this are not hashed (sha256 None)


@dataclass(frozen=True)
class Capture:
    """The captured working state; :func:`mlrunner.snapshot.record.take_snapshot` wraps it in a Snapshot."""

    tree: str
    snapshot_id: str
    dirty: bool
    changes: dict[str, int]
    excluded: list[dict[str, Any]]
    submodules: list[dict[str, Any]]
    patch_path: str
    git_version: str


def exclude_prefixes(exclude: Iterable[str | os.PathLike[str]], root: str) -> list[bytes]:
    """Repo-relative byte prefixes of the paths to treat as ignored (outside ones dropped)."""
    out: list[bytes] = []
    for item in exclude:
        rel = os.path.relpath(os.path.realpath(os.path.abspath(os.fspath(item))), root)
        if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
            continue  # the whole repo or outside it: nothing to leave out
        out.append(os.fsencode(rel))
    return out


def _skipped(path: bytes, prefixes: list[bytes]) -> bool:
    parts = path.rstrip(b"/").split(b"/")
    if HIDDEN_DIR.encode() in parts:
        return True
    return any(path == p or path.startswith(p + b"/") for p in prefixes)


@dataclass
class _Status:
    to_update: list[bytes] = field(default_factory=list)  # re-stage from the working tree
    candidates: list[bytes] = field(default_factory=list)  # content enters the snapshot: capped
    submodule_flags: dict[bytes, str] = field(default_factory=dict)
    embedded: list[bytes] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    dirty: bool = False


def _parse_status(out: bytes, prefixes: list[bytes]) -> _Status:
    """Parse ``git status --porcelain=v2 -z --no-renames``."""
    st = _Status(counts={"staged": 0, "unstaged": 0, "untracked": 0, "conflicted": 0})
    records = iter(out.split(b"\0"))
    for rec in records:
        kind = rec[:1]
        if kind == b"1":
            parts = rec.split(b" ", 8)
            xy, sub, path = parts[1], parts[2], parts[8]
        elif kind == b"2":  # only with rename detection; next record is the original path
            parts = rec.split(b" ", 9)
            xy, sub, path = parts[1], parts[2], parts[9]
            orig = next(records, b"")
            if orig and not _skipped(orig, prefixes):
                st.to_update.append(orig)
        elif kind == b"u":
            parts = rec.split(b" ", 10)
            path = parts[10]
            if _skipped(path, prefixes):
                continue
            st.dirty = True
            st.counts["conflicted"] += 1
            st.to_update.append(path)
            st.candidates.append(path)
            continue
        elif kind == b"?":
            path = rec[2:]
            if _skipped(path, prefixes):
                continue
            st.dirty = True
            st.counts["untracked"] += 1
            if path.endswith(b"/"):  # an embedded repository: recorded as a gitlink
                st.embedded.append(path.rstrip(b"/"))
            else:
                st.to_update.append(path)
                st.candidates.append(path)
            continue
        else:
            continue  # headers, ignored entries, the empty tail
        if _skipped(path, prefixes):
            continue
        st.dirty = True
        x, y = chr(xy[0]), chr(xy[1])
        st.counts["staged"] += x != "."
        st.counts["unstaged"] += y != "."
        if sub.startswith(b"S"):
            st.submodule_flags[path] = sub.decode()
            if y != ".":
                st.to_update.append(path)
            continue
        if y != ".":
            st.to_update.append(path)
        if not (y == "D" or (y == "." and x == "D")):
            st.candidates.append(path)
    return st


@dataclass(frozen=True)
class WorkingTree:
    """The working state written as a tree object (nothing else recorded)."""

    tree: str
    status: _Status
    excluded: dict[bytes, tuple[int, str]]
    embedded: list[bytes]
    in_head: set[bytes]


def write_working_tree(
    root: str,
    *,
    commit: str | None,
    index_path: str,
    limits: Limits,
    prefixes: list[bytes],
    warnings: list[str],
    clock: Clock,
    keep: bytes = b"",
) -> WorkingTree:
    """The tree of ``root``'s working state (tracked, staged, unstaged, untracked), through a
    copy of the user's index (``index_path``, never written). Writes the changed files'
    blobs and the trees into the object database (as ``git add`` would), no commit, no ref.
    Paths under ``prefixes`` and under every output root (a dir holding ``.mlrunner/``, see
    :mod:`mlrunner.snapshot.outputs`; ``keep``: the run's dir, never one) are left out
    silently. Raises GitFailed or OSError; appends user warnings."""
    with tempfile.TemporaryDirectory(prefix="mlrunner-index-") as tmp:
        temp_index = os.path.join(tmp, "index")
        if os.path.exists(index_path):
            shutil.copy2(index_path, temp_index)  # keep mtime: git's racy-clean check relies on it
        env = git_env(temp_index)
        cfg = ("-c", "core.splitIndex=false")
        pathspec = ["--", ".", *(":(exclude,literal)" + os.fsdecode(p) for p in prefixes)] if prefixes else []
        out = run_git(
            root,
            *cfg,
            "status",
            "--porcelain=v2",
            "-z",
            "--untracked-files=all",
            "--no-renames",
            "--ignore-submodules=none",
            *pathspec,
            env=env,
        )
        clock.lap("status")
        st = _parse_status(out, prefixes + output_roots(out, root, keep))
        excluded = _apply_caps(root, st, limits)
        embedded = _embedded_gitlinks(root, st.embedded, warnings)
        to_update = st.to_update + embedded
        if to_update:
            run_git(
                root,
                *cfg,
                "update-index",
                "--add",
                "--remove",
                "--replace",
                "-z",
                "--stdin",
                input=b"".join(p + b"\0" for p in to_update),
                env=env,
            )
        empty_tree = None if commit else empty_tree_id(root)
        hash_len = len(commit or empty_tree or "")
        in_head = _reset_excluded(root, commit, excluded, hash_len, env, cfg) if excluded else set()
        clock.lap("update_index")
        if st.dirty or not commit:
            tree = run_git(root, *cfg, "write-tree", env=env).decode().strip()
        else:  # clean: the tree is HEAD's, no need to read and rewrite a large index
            tree = run_git(root, "rev-parse", commit + "^{tree}").decode().strip()
        clock.lap("write_tree")
    return WorkingTree(tree, st, excluded, embedded, in_head)


def capture(
    root: str,
    *,
    commit: str | None,
    branch: str | None,
    index_path: str,
    work_dir: Path,
    limits: Limits,
    prefixes: list[bytes],
    warnings: list[str],
    clock: Clock,
    keep: bytes = b"",
) -> Capture:
    """Capture the working tree of ``root`` on top of ``commit``; write ``work_dir/git.patch``.

    ``index_path`` is the user's index (copied, never written); ``prefixes`` come from
    :func:`exclude_prefixes`; ``keep``: the run's dir (see :func:`write_working_tree`).
    Raises GitFailed or OSError; appends user warnings.
    """
    version = git_version()
    work_dir.mkdir(parents=True, exist_ok=True)
    got = write_working_tree(
        root, commit=commit, index_path=index_path, limits=limits, prefixes=prefixes, warnings=warnings,
        clock=clock, keep=keep,
    )  # fmt: skip
    tree, st, excluded, embedded = got.tree, got.status, got.excluded, got.embedded
    message = (
        f"mlrunner snapshot of {branch or 'detached HEAD'} at {commit or '(no commit yet)'}\n\n"
        f"Working state of {root} (staged, unstaged and untracked files), taken by mlrunner\n"
        f"to record the code of a run. Kept alive by {SNAPSHOT_REF_PREFIX}<this commit>.\n"
    )
    snapshot_id = commit_tree(root, tree, commit, message)
    clock.lap("commit")
    patch = work_dir / PATCH_NAME
    write_patch(root, commit or empty_tree_id(root), tree, patch)
    clock.lap("diff")
    submodules = _submodules(root, tree, st.submodule_flags, embedded, warnings)
    clock.lap("submodules")
    return Capture(
        tree=tree,
        snapshot_id=snapshot_id,
        dirty=st.dirty,
        changes=st.counts,
        excluded=describe_excluded(root, excluded, got.in_head, limits, warnings),
        submodules=submodules,
        patch_path=str(patch.resolve()),
        git_version=version,
    )


def _apply_caps(root: str, st: _Status, limits: Limits) -> dict[bytes, tuple[int, str]]:
    """Paths left out: path -> (size, reason). Removes them from ``st.to_update``."""
    sized: list[tuple[int, bytes]] = []
    excluded: dict[bytes, tuple[int, str]] = {}
    for path in st.candidates:
        try:
            info = os.lstat(os.path.join(os.fsencode(root), path))
        except OSError:
            continue  # vanished since status: update-index records the deletion
        if not stat.S_ISREG(info.st_mode):
            continue
        if info.st_size > limits.file:
            excluded[path] = (info.st_size, f"over the {_size(limits.file)} per-file cap")
        else:
            sized.append((info.st_size, path))
    total = 0
    for size, path in sorted(sized):
        if total + size > limits.total:
            excluded[path] = (size, f"over the {_size(limits.total)} total cap")
        else:
            total += size
    if excluded:
        st.to_update = [p for p in st.to_update if p not in excluded]
    return excluded


def _embedded_gitlinks(root: str, paths: list[bytes], warnings: list[str]) -> list[bytes]:
    """Untracked nested repositories with a commit are recorded as gitlinks (like `git add`)."""
    kept: list[bytes] = []
    for path in paths:
        name = os.fsdecode(path)
        try:
            run_git(os.path.join(root, name), "rev-parse", "-q", "--verify", "HEAD^{commit}")
        except (GitFailed, OSError):
            warnings.append(f"nested git repository '{name}' has no commit: it is not in the snapshot")
            continue
        kept.append(path)
        warnings.append(
            f"nested git repository '{name}' is recorded by its HEAD commit only, not its files "
            "(make it a submodule, or commit its changes)"
        )
    return kept


def _reset_excluded(
    root: str,
    commit: str | None,
    excluded: Mapping[bytes, tuple[int, str]],
    hash_len: int,
    env: Mapping[str, str],
    cfg: tuple[str, ...],
) -> set[bytes]:
    """Give each excluded path its HEAD entry in the temporary index, or remove it.

    Returns the excluded paths that exist in HEAD.
    """
    lines: dict[bytes, bytes] = {}
    paths = sorted(excluded)
    if commit:
        lit = {**env, "GIT_LITERAL_PATHSPECS": "1"}
        for i in range(0, len(paths), 500):
            chunk = [os.fsdecode(p) for p in paths[i : i + 500]]
            out = run_git(root, "ls-tree", "-z", "--full-tree", commit, "--", *chunk, env=lit)
            for rec in out.split(b"\0"):
                if rec:
                    lines[rec.split(b"\t", 1)[1]] = rec
    zero = b"0" * hash_len
    # Mode 0 removes every stage of a path (a conflicted one too); then HEAD's entry, if any.
    info = [b"0 " + zero + b"\t" + p for p in paths] + [lines[p] for p in paths if p in lines]
    run_git(
        root, *cfg, "update-index", "-z", "--index-info", input=b"".join(x + b"\0" for x in info), env=env
    )
    return set(lines)


def describe_excluded(
    root: str,
    excluded: Mapping[bytes, tuple[int, str]],
    in_head: set[bytes],
    limits: Limits,
    warnings: list[str],
) -> list[dict[str, Any]]:
    if not excluded:
        return []
    out: list[dict[str, Any]] = []
    for path in sorted(excluded):
        size, reason = excluded[path]
        name = os.fsdecode(path)
        out.append(
            {
                "path": name,
                "size": size,
                "sha256": _sha256(os.path.join(root, name), size, limits.hash),
                "reason": reason,
                "in_head": path in in_head,  # the snapshot keeps the HEAD version; else no file
            }
        )
    shown = ", ".join(f"{e['path']} ({_size(e['size'])})" for e in out[:_SHOWN])
    more = f" and {len(out) - _SHOWN} more" if len(out) > _SHOWN else ""
    kept = "the snapshot keeps the HEAD version of tracked ones"
    warnings.append(
        f"{len(out)} file(s) left out of the code snapshot ({kept}): {shown}{more}; "
        "their size and sha256 are in git.json (commit them, or add them to .gitignore)"
    )
    return out


def _sha256(path: str, size: int, limit: int) -> str | None:
    if size > limit:
        return None
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" or value == int(value) else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _submodules(
    root: str, tree: str, flags: Mapping[bytes, str], embedded: list[bytes], warnings: list[str]
) -> list[dict[str, Any]]:
    """Submodules (from .gitmodules) and embedded repos: path, sha in the snapshot, status, url."""
    declared: dict[str, dict[str, str]] = {}
    if os.path.exists(os.path.join(root, ".gitmodules")):
        try:
            out = run_git(
                root, "config", "-z", "-f", ".gitmodules", "--get-regexp", r"^submodule\..*\.(path|url)$"
            )
        except GitFailed:
            out = b""
        for rec in out.split(b"\0"):
            if b"\n" not in rec:
                continue
            key, value = rec.decode(errors="surrogateescape").split("\n", 1)
            name, _, attr = key[len("submodule.") :].rpartition(".")
            declared.setdefault(name, {})[attr] = value
    paths = {v["path"]: v.get("url") for v in declared.values() if "path" in v}
    for p in embedded:
        paths.setdefault(os.fsdecode(p), None)
    if not paths:
        return []
    shas: dict[str, str] = {}
    lit = {**git_env(), "GIT_LITERAL_PATHSPECS": "1"}
    out = run_git(root, "ls-tree", "-z", "--full-tree", tree, "--", *sorted(paths), env=lit)
    for rec in out.split(b"\0"):
        if rec:
            meta, raw = rec.split(b"\t", 1)
            if meta.startswith(b"160000 "):
                shas[os.fsdecode(raw)] = meta.split(b" ")[2].decode()
    result: list[dict[str, Any]] = []
    for path in sorted(paths):
        flag = flags.get(os.fsencode(path), "")
        status: list[str] = []
        if os.fsencode(path) in embedded:
            status.append("embedded")
        if path not in shas:
            status.append("absent")
        elif not os.path.exists(os.path.join(root, path, ".git")):
            status.append("uninitialized")
        if flag[1:2] == "C":
            status.append("new commits")
        if flag[2:3] == "M" or flag[3:4] == "U":
            status.append("dirty")
            warnings.append(
                f"submodule '{path}' has uncommitted changes; they are not in the snapshot "
                "(commit them inside the submodule to record them)"
            )
        url = paths[path]
        result.append(
            {
                "path": path,
                "sha": shas.get(path),
                "status": ", ".join(status) or "clean",
                "url": strip_credentials(url) if url else None,
            }
        )
    return result

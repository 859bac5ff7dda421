"""Git snapshot of the working state: taken once per run, recorded into every experiment dir.

:func:`take_snapshot` captures tracked, staged, unstaged and untracked (non-ignored) files
into a tree object through a *temporary* index (a copy of the user's index, so its stat
cache keeps the walk fast), commits that tree on top of HEAD and keeps it reachable under
``refs/mlrunner/snapshots/<id>`` so it survives ``git gc``. The user's index, working
tree, stash and HEAD are never written; every git call runs with ``--no-optional-locks``.
The binary diff against HEAD is written once per run; :func:`write_snapshot` hard-links it
into each experiment dir next to a small ``git.json``.

The git plumbing lives in :mod:`mlrunner.snapshot.capture`; restoring and isolating
(``restore``, ``materialize``) in :mod:`mlrunner.snapshot.rebuild`, re-exported here.
GitPython is imported lazily, inside :func:`take_snapshot`.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from mlrunner.errors import SnapshotError
from mlrunner.snapshot.capture import PATCH_NAME, Clock, Limits, capture, exclude_prefixes
from mlrunner.snapshot.git import (
    SNAPSHOT_REF_PREFIX,
    GitFailed,
    empty_tree_id,
    strip_credentials,
    write_patch,
)

__all__ = [
    "JSON_NAME",
    "PATCH_NAME",
    "SNAPSHOT_REF_PREFIX",
    "Snapshot",
    "link_snapshot",
    "read_snapshot",
    "same_code",
    "strip_credentials",
    "take_snapshot",
    "write_snapshot",
]

JSON_NAME = "git.json"
FORMAT = 1  # of git.json


@dataclass(frozen=True)
class Snapshot:
    """What code an experiment ran on. ``vcs`` is None outside git (or without git)."""

    vcs: str | None = None  # "git" or None
    commit: str | None = None  # HEAD sha; None in a repo without commits
    branch: str | None = None  # None when detached
    detached: bool = False
    dirty: bool = False  # `git status` would show something (excluded files included)
    snapshot_id: str | None = None  # commit kept under refs/mlrunner/snapshots/<snapshot_id>
    tree: str | None = None  # the captured tree (what restore rebuilds)
    remotes: dict[str, str] = field(default_factory=dict)  # name -> url, credentials stripped
    taken_at: float = 0.0  # unix epoch seconds
    git_version: str | None = None
    submodules: list[dict[str, Any]] = field(default_factory=list)  # path, sha, status, url
    excluded: list[dict[str, Any]] = field(default_factory=list)  # path, size, sha256, reason, in_head
    repo_root: str | None = None
    patch_path: str | None = None  # absolute, or relative to the dir holding git.json
    subdir: str = ""  # the run's cwd relative to repo_root ("" at the root)
    changes: dict[str, int] = field(default_factory=dict)  # staged/unstaged/untracked/conflicted counts
    error: str | None = None  # why the working state was not captured (snapshot_id is then None)

    @cached_property
    def json_text(self) -> str:
        """The ``git.json`` text (``patch_path`` relative: the patch lies next to it). Cached."""
        data = self.to_dict()
        if self.patch_path:
            data["patch_path"] = PATCH_NAME
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @property
    def ref(self) -> str | None:
        """The ref that keeps the snapshot commit alive, or None."""
        return SNAPSHOT_REF_PREFIX + self.snapshot_id if self.snapshot_id else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["format"] = FORMAT
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        """Inverse of :meth:`to_dict`; unknown keys (from newer versions) are ignored."""
        if not isinstance(data, Mapping):
            raise SnapshotError(f"a git snapshot must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for name, kind in (("remotes", dict), ("submodules", list), ("excluded", list), ("changes", dict)):
            if kwargs.get(name) is None:
                kwargs.pop(name, None)
            elif not isinstance(kwargs[name], kind):
                raise SnapshotError(f"git snapshot key '{name}' must be a {kind.__name__}")
        return cls(**kwargs)


def _no_vcs(taken_at: float, warning: str) -> tuple[Snapshot, list[str]]:
    return Snapshot(vcs=None, taken_at=taken_at), [warning]


def take_snapshot(
    cwd: str | os.PathLike[str] = ".",
    *,
    work_dir: str | os.PathLike[str],
    max_file_bytes: int = 1 << 20,
    max_total_bytes: int = 50 << 20,
    max_hash_bytes: int = 256 << 20,
    exclude: Iterable[str | os.PathLike[str]] = (),
    timings: dict[str, float] | None = None,
) -> tuple[Snapshot, list[str]]:
    """Snapshot the code of the git repository containing ``cwd``; once per run.

    ``work_dir`` is a directory the run owns: ``git.patch`` and ``git.json`` are written
    there once, for :func:`write_snapshot` to link into experiment dirs. Files whose
    content would enter the snapshot and that are over ``max_file_bytes`` each, or beyond
    ``max_total_bytes`` together (largest left out first), are left out of the tree and
    the patch (the snapshot keeps their HEAD version, or no file) and listed in
    ``excluded`` with size and sha256 (None above ``max_hash_bytes``). Paths under
    ``exclude`` (e.g. the output dir), under any ``.mlrunner`` dir and under every output
    root (a dir holding ``.mlrunner/``, not one holding ``cwd``) are treated as ignored.
    ``timings``, when given, receives seconds per phase.

    Never raises for a missing repository or git: returns ``Snapshot(vcs=None)`` and one
    warning. A git failure while capturing gives a snapshot without ``snapshot_id``, its
    ``error`` set and a warning.
    """
    t0 = time.perf_counter()
    clock = Clock(timings)
    taken_at = time.time()
    where = os.fspath(cwd)
    if shutil.which("git") is None:
        return _no_vcs(taken_at, "git is not installed (not on PATH): the code of this run is not recorded")
    try:
        import git as gitpython  # lazy: slow import, and the CLI must start without it
    except ImportError as exc:
        return _no_vcs(
            taken_at, f"GitPython cannot be imported ({exc}): the code of this run is not recorded"
        )
    clock.lap("import")
    try:
        repo = gitpython.Repo(where, search_parent_directories=True)
    except (gitpython.InvalidGitRepositoryError, gitpython.NoSuchPathError):
        return _no_vcs(
            taken_at,
            f"{os.path.abspath(where)} is not inside a git repository: the code of this run is not "
            "recorded (commit your code in a git repository to make runs restorable)",
        )
    except Exception as exc:  # unreadable .git, permissions...: the run goes on
        return _no_vcs(
            taken_at, f"cannot open the git repository at {where}: {exc}; the code is not recorded"
        )
    with repo:
        if repo.bare or repo.working_tree_dir is None:
            return _no_vcs(
                taken_at, f"{repo.git_dir} is a bare repository: the code of this run is not recorded"
            )
        root = os.path.realpath(repo.working_tree_dir)
        subdir = os.path.relpath(os.path.realpath(where), root)
        subdir = "" if subdir == "." else subdir
        base = Snapshot(vcs="git", repo_root=root, subdir=subdir, taken_at=taken_at)
        warnings: list[str] = []
        try:
            base = _head_info(repo, base, warnings)
        except Exception as exc:  # GitPython raises many types for a corrupt HEAD
            base = _with(base, error=f"cannot read HEAD: {exc}", dirty=True)
            return base, [f"git snapshot not taken in {root}: {base.error}"]
        index_path = os.path.join(repo.git_dir, "index")
    clock.lap("gitpython")
    try:
        got = capture(
            root,
            commit=base.commit,
            branch=base.branch,
            index_path=index_path,
            work_dir=Path(work_dir),
            limits=Limits(max_file_bytes, max_total_bytes, max_hash_bytes),
            prefixes=exclude_prefixes(exclude, root),
            warnings=warnings,
            clock=clock,
            keep=os.fsencode(subdir),
        )
        snap = _with(
            base,
            dirty=got.dirty,
            snapshot_id=got.snapshot_id,
            tree=got.tree,
            git_version=got.git_version,
            submodules=got.submodules,
            excluded=got.excluded,
            patch_path=got.patch_path,
            changes=got.changes,
        )
        _write_json_atomic(Path(got.patch_path).with_name(JSON_NAME), snap.json_text)
        clock.lap("write")
    except (GitFailed, OSError) as exc:
        snap = _with(base, error=str(exc), dirty=True)
        warnings.append(f"the working state of {root} could not be captured, only HEAD is recorded: {exc}")
    if timings is not None:
        timings["total"] = time.perf_counter() - t0
    return snap, warnings


def _with(snap: Snapshot, **changes: Any) -> Snapshot:
    return Snapshot(**{**asdict(snap), **changes})


def _head_info(repo: Any, base: Snapshot, warnings: list[str]) -> Snapshot:
    """HEAD sha, branch and remotes through GitPython (pure-Python reads, no subprocess)."""
    head = repo.head
    detached = head.is_detached
    branch = None if detached else head.reference.name
    commit = head.commit.hexsha if head.is_valid() else None
    remotes: dict[str, str] = {}
    try:
        reader = repo.config_reader("repository")
        for section in reader.sections():
            if section.startswith('remote "') and section.endswith('"') and reader.has_option(section, "url"):
                urls = reader.get_values(section, "url")
                remotes[section[8:-1]] = strip_credentials(str(urls[0]))
    except Exception as exc:  # a config GitPython cannot parse must not stop the run
        warnings.append(f"cannot read the remotes of {base.repo_root}: {exc}")
    return _with(base, commit=commit, branch=branch, detached=detached, remotes=remotes)


def _write_json_atomic(path: Path, text: str) -> None:
    tmp = _tmp_name(os.fspath(path))
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _tmp_name(dest: str) -> str:
    head, name = os.path.split(dest)
    return os.path.join(head, f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")


def _link_or_copy(src: str, dest: str) -> None:
    """Hard-link ``src`` to ``dest`` (atomically replacing it); copy when links are impossible."""
    src_stat = os.stat(src)
    try:
        dest_stat = os.stat(dest)
        if (dest_stat.st_ino, dest_stat.st_dev) == (src_stat.st_ino, src_stat.st_dev):
            return
    except FileNotFoundError:
        pass
    tmp = _tmp_name(dest)
    try:
        os.link(src, tmp)
    except FileExistsError:  # left by a crash: retry once
        os.unlink(tmp)
        os.link(src, tmp)
    except OSError:  # EXDEV across filesystems, EMLINK past the link limit, EPERM...
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def write_snapshot(snapshot: Snapshot, exp_dir: str | os.PathLike[str]) -> None:
    """Record ``snapshot`` in an experiment dir: ``git.json`` plus ``git.patch``.

    Cheap per task: the ``git.patch`` and ``git.json`` written once by
    :func:`take_snapshot` are hard-linked (copied across filesystems or past the link
    limit), so all experiments of a run share them; files are replaced atomically, never
    rewritten in place. A missing run-level patch is regenerated from the repository
    once. Outside git only ``git.json`` (``vcs: null``) is written, and a stale
    ``git.patch`` is removed.
    """
    exp = os.fspath(exp_dir)
    try:
        os.mkdir(exp)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(exp, exist_ok=True)
    patch = os.path.join(exp, PATCH_NAME)
    text = snapshot.json_text
    if not snapshot.patch_path:
        try:
            os.unlink(patch)
        except FileNotFoundError:
            pass
        _write_json_atomic(Path(exp, JSON_NAME), text)
        return
    src = snapshot.patch_path
    if not os.path.exists(src):
        _regenerate_patch(snapshot, Path(src))
    _link_or_copy(src, patch)
    src_json = os.path.join(os.path.dirname(src), JSON_NAME)
    try:
        with open(src_json, encoding="utf-8") as f:
            same = f.read() == text
    except OSError:
        same = False
    if not same:  # the run-level git.json is missing or belongs to another snapshot
        _write_json_atomic(Path(src_json), text)
    _link_or_copy(src_json, os.path.join(exp, JSON_NAME))


def link_snapshot(snapshot: Snapshot, exp_dir: str) -> None:
    """:func:`write_snapshot` into an experiment dir the caller has just created (empty).

    For the per-task hot path, once an earlier :func:`write_snapshot` of the same
    snapshot has checked (or rebuilt) the run-level files: ``git.patch`` and ``git.json``
    are hard-linked straight into place. Anything unusual (a missing run-level file, no
    hard links here, a file already there) falls back to :func:`write_snapshot`.
    """
    src = snapshot.patch_path
    if src:
        try:
            os.link(src, os.path.join(exp_dir, PATCH_NAME))
            os.link(os.path.join(os.path.dirname(src), JSON_NAME), os.path.join(exp_dir, JSON_NAME))
            return
        except OSError:
            pass
    write_snapshot(snapshot, exp_dir)


def _regenerate_patch(snapshot: Snapshot, dest: Path) -> None:
    root, tree = snapshot.repo_root, snapshot.tree
    if not (root and tree and os.path.isdir(root)):
        raise SnapshotError(
            f"the run's patch file {dest} is missing and cannot be rebuilt (no repository recorded)",
            hint="take a new snapshot (start a new run)",
        )
    try:
        base = snapshot.commit or empty_tree_id(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_patch(root, base, tree, dest)
    except (GitFailed, OSError) as exc:
        raise SnapshotError(f"the run's patch file {dest} is missing and cannot be rebuilt: {exc}") from exc


def read_snapshot(exp_dir: str | os.PathLike[str]) -> Snapshot | None:
    """The snapshot recorded in an experiment dir, None when it has no ``git.json``.

    A relative ``patch_path`` is resolved against ``exp_dir``. Raises SnapshotError
    when ``git.json`` is not a valid snapshot.
    """
    path = Path(exp_dir) / JSON_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SnapshotError(f"cannot read the git snapshot: {exc}", file=str(path)) from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SnapshotError(
            f"not valid JSON ({exc})",
            file=str(path),
            hint="the file is damaged; the code of this run is unknown",
        ) from exc
    try:
        snap = Snapshot.from_dict(data)
    except (SnapshotError, TypeError) as exc:
        raise SnapshotError(f"not an mlrunner git snapshot: {exc}", file=str(path)) from exc
    if snap.patch_path and not os.path.isabs(snap.patch_path):
        snap = _with(snap, patch_path=str(Path(exp_dir).resolve() / snap.patch_path))
    return snap


def same_code(a: Snapshot | Mapping[str, Any] | None, b: Snapshot | Mapping[str, Any] | None) -> bool:
    """True when both snapshots certainly hold the same code.

    Same captured tree and the same excluded files (path and sha256); without trees
    (capture failed), the same commit with both clean. Unknown (no git) is never the same.
    """
    sa, sb = _as_snapshot(a), _as_snapshot(b)
    if sa is None or sb is None or sa.vcs is None or sb.vcs is None:
        return False
    if sa.tree and sb.tree:
        return sa.tree == sb.tree and _excluded_key(sa) == _excluded_key(sb)
    return bool(sa.commit) and sa.commit == sb.commit and not sa.dirty and not sb.dirty


def _as_snapshot(value: Snapshot | Mapping[str, Any] | None) -> Snapshot | None:
    if value is None or isinstance(value, Snapshot):
        return value
    return Snapshot.from_dict(value)


def _excluded_key(snap: Snapshot) -> set[tuple[str, str | None, int | None]]:
    return {(e.get("path", ""), e.get("sha256"), e.get("size")) for e in snap.excluded}

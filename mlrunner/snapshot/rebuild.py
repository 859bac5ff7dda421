"""Rebuild the code an experiment ran on (``mlrunner restore``) and isolate runs (``run --isolate``).

The tree comes from the snapshot commit kept under ``refs/mlrunner/snapshots/<id>``; when
that ref was deleted and the commit pruned, it is rebuilt from the recorded HEAD commit
plus the experiment's ``git.patch`` (applied to a temporary index, never to a worktree)
and checked against the recorded tree id. Either way the result is byte-identical to the
captured working state.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mlrunner.errors import RestoreError, SnapshotError, UsageError
from mlrunner.snapshot.git import SNAPSHOT_REF_PREFIX, GitFailed, commit_tree, git_env, run_git
from mlrunner.snapshot.record import Snapshot, read_snapshot


@dataclass(frozen=True)
class RestoreResult:
    dest: Path  # root of the rebuilt tree
    cwd: Path  # dest / snapshot.subdir: where the run's commands ran
    snapshot: Snapshot
    commands: dict[str, str]  # the experiment's `_scripts` (command -> shell line); {} without param
    worktree: bool  # True: a git worktree detached at `commit`; False: a plain directory
    commit: str  # the commit the tree was taken from (the snapshot id, or a rebuilt one)
    source: str  # "snapshot" (the kept commit) or "patch" (HEAD commit + git.patch, ref was gone)
    warnings: list[str] = field(default_factory=list)


def restore(
    exp_dir: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    worktree: bool = False,
    repo: str | os.PathLike[str] | None = None,
) -> RestoreResult:
    """Rebuild in ``dest`` exactly the tree the experiment in ``exp_dir`` ran on.

    Tracked, staged, unstaged and untracked non-ignored files, byte for byte, even after
    the branch moved on. ``worktree=True`` makes ``dest`` a git worktree detached at the
    snapshot commit; otherwise a plain directory. ``repo`` overrides the repository
    recorded in ``git.json`` (when it moved). Raises RestoreError with the reason and a
    way out when that cannot be done.
    """
    exp = Path(exp_dir)
    try:
        snap = read_snapshot(exp)
    except SnapshotError as exc:
        raise RestoreError(str(exc)) from exc
    if snap is None:
        raise RestoreError(
            f"{exp} has no git.json: its code was not recorded",
            hint="only experiments run by mlrunner >= 1.0 record their code; is this an experiment dir?",
        )
    if snap.vcs is None:
        raise RestoreError(
            f"{exp}: the experiment ran outside a git repository (or without git); no code was recorded"
        )
    root = _repo_root(snap, repo, exp)
    target = Path(dest).absolute()
    _check_empty(target)
    warnings: list[str] = []
    tree, commit, source = _resolve(snap, root, exp, warnings)
    try:
        if worktree:
            if commit is None:
                commit = _keep_tree(root, snap, tree)
            target.parent.mkdir(parents=True, exist_ok=True)
            run_git(root, "worktree", "add", "--detach", str(target), commit)
        else:
            _export(root, tree, target)
    except (GitFailed, OSError) as exc:
        raise RestoreError(f"cannot write the code into {target}: {exc}") from exc
    if commit is None:
        commit = snap.snapshot_id or ""
    for sub in snap.submodules:
        warnings.append(
            f"submodule '{sub['path']}' is not restored: it was at {sub.get('sha') or 'an unknown commit'}"
            + (" (run `git submodule update --init` in the worktree)" if worktree else "")
        )
    if snap.excluded:
        names = ", ".join(f"{e['path']} ({e['size']} bytes, sha256 {e.get('sha256')})" for e in snap.excluded)
        warnings.append(
            f"files left out of the snapshot at run time (over the size cap) are not restored: {names}"
        )
    return RestoreResult(
        dest=target,
        cwd=target / snap.subdir if snap.subdir else target,
        snapshot=snap,
        commands=_commands(exp, warnings),
        worktree=worktree,
        commit=commit,
        source=source,
        warnings=warnings,
    )


def _repo_root(snap: Snapshot, repo: str | os.PathLike[str] | None, exp: Path) -> str:
    root = os.fspath(repo) if repo is not None else snap.repo_root
    if not root or not os.path.isdir(root):
        where = "given" if repo is not None else f"recorded in {exp / 'git.json'}"
        raise RestoreError(
            f"the repository {where} ({root}) does not exist",
            hint="pass the repository's current location (or a clone holding the snapshot) as the repo",
        )
    try:
        return run_git(root, "rev-parse", "--show-toplevel").decode().strip()
    except (GitFailed, OSError) as exc:
        raise RestoreError(f"{root} is not a git repository with a working tree: {exc}") from exc


def _check_empty(target: Path) -> None:
    if target.is_symlink() or target.exists():
        if not target.is_dir():
            raise UsageError(
                f"{target} exists and is not a directory", key="DEST", hint="choose a new destination"
            )
        if any(target.iterdir()):
            raise UsageError(
                f"{target} is not empty", key="DEST", hint="choose a new directory, or empty this one first"
            )


def _has(root: str, obj: str) -> bool:
    try:
        run_git(root, "cat-file", "-e", obj)
    except GitFailed:
        return False
    return True


def _resolve(snap: Snapshot, root: str, exp: Path, warnings: list[str]) -> tuple[str, str | None, str]:
    """(tree, commit or None, source) for the snapshot, from the kept commit or the patch."""
    if not snap.snapshot_id:
        known = f"only its HEAD commit {snap.commit} is known" if snap.commit else "nothing is known"
        raise RestoreError(
            f"the working state of this experiment was not captured at run time ({snap.error}); {known}",
            hint=f"`git worktree add --detach DEST {snap.commit}` gives the committed code"
            if snap.commit
            else None,
        )
    if _has(root, snap.snapshot_id + "^{commit}"):
        tree = run_git(root, "rev-parse", snap.snapshot_id + "^{tree}").decode().strip()
        if snap.tree and tree != snap.tree:
            raise RestoreError(
                f"snapshot commit {snap.snapshot_id} holds tree {tree}, but git.json records {snap.tree}",
                file=str(exp / "git.json"),
                hint="git.json does not belong to this repository's snapshot; was it edited or copied?",
            )
        return tree, snap.snapshot_id, "snapshot"
    gone = (
        f"the snapshot commit {snap.snapshot_id} is not in {root} (the ref {SNAPSHOT_REF_PREFIX}"
        f"{snap.snapshot_id} was deleted and `git gc` pruned it, or this is another clone)"
    )
    if snap.tree and _has(root, snap.tree + "^{tree}"):
        warnings.append(f"{gone}; its tree {snap.tree} is still there and is used")
        return snap.tree, None, "snapshot"
    patch = snap.patch_path
    if not patch or not os.path.isfile(patch):
        raise RestoreError(
            f"{gone}, and the experiment's git.patch is missing", hint="the code cannot be rebuilt"
        )
    if snap.commit and not _has(root, snap.commit + "^{commit}"):
        raise RestoreError(
            f"{gone}, and its base commit {snap.commit} is missing too, so git.patch cannot be applied",
            hint=f"fetch it (e.g. `git fetch origin {snap.commit}`) and retry, or apply {patch} by hand",
        )
    tree = _rebuild_from_patch(root, snap, patch)
    warnings.append(f"{gone}; rebuilt from commit {snap.commit or '(none)'} + {patch}")
    return tree, None, "patch"


def _rebuild_from_patch(root: str, snap: Snapshot, patch: str) -> str:
    with tempfile.TemporaryDirectory(prefix="mlrunner-restore-") as tmp:
        env = git_env(os.path.join(tmp, "index"))
        try:
            if snap.commit:
                run_git(root, "read-tree", snap.commit, env=env)
            else:
                run_git(root, "read-tree", "--empty", env=env)
            run_git(root, "apply", "--cached", "--binary", os.path.abspath(patch), env=env)
            tree = run_git(root, "write-tree", env=env).decode().strip()
        except GitFailed as exc:
            raise RestoreError(
                f"git.patch does not apply to commit {snap.commit}: {exc}", file=patch
            ) from exc
    if snap.tree and tree != snap.tree:
        raise RestoreError(
            f"commit {snap.commit} + git.patch gives tree {tree}, not the recorded {snap.tree}",
            file=patch,
            hint="the patch or the commit differs from the run's; the rebuilt code would not be exact",
        )
    return tree


def _keep_tree(root: str, snap: Snapshot, tree: str) -> str:
    """Commit a tree again (the original snapshot commit is gone) and keep it under a ref."""
    message = f"mlrunner snapshot {snap.snapshot_id}, rebuilt by `mlrunner restore`\n"
    return commit_tree(root, tree, snap.commit, message)


def _export(root: str, tree: str, target: Path) -> None:
    """Check out ``tree`` into the plain directory ``target`` through a temporary index."""
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mlrunner-export-") as tmp:
        env = git_env(os.path.join(tmp, "index"))
        run_git(root, "read-tree", tree, env=env)
        run_git(root, "checkout-index", "--all", "--force", f"--prefix={target}{os.sep}", env=env)


def _commands(exp: Path, warnings: list[str]) -> dict[str, str]:
    """The ``_scripts`` mapping (command -> shell line) of the experiment's ``param`` file."""
    path = exp / "param"
    if not path.is_file():
        return {}
    import yaml  # only `mlrunner restore` needs it here

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        warnings.append(f"cannot read the commands from {path}: {exc}")
        return {}
    scripts = data.get("_scripts") if isinstance(data, dict) else None
    if not isinstance(scripts, dict):
        return {}
    return {str(k): str(v) for k, v in scripts.items()}


MARK_SUFFIX = ".snapshot"  # beside an isolation checkout: the snapshot it holds


def materialize(snapshot: Snapshot, dest: str | os.PathLike[str]) -> Path:
    """Check out the snapshot's files at ``dest`` (for ``run --isolate``).

    A plain checkout through a temporary index: the user's repository gets no worktree
    (``git worktree list`` never shows it), no index change, no ref. Returns the checkout's
    root (absolute ``dest``); commands run in ``root / snapshot.subdir``, the run's cwd inside
    it. Idempotent: when ``dest`` already holds this snapshot, nothing is done. Raises
    SnapshotError when there is no snapshot to check out or ``dest`` holds something else.
    """
    if snapshot.vcs is None or not snapshot.snapshot_id or not snapshot.repo_root:
        why = snapshot.error or "the run is not in a git repository (or git is missing)"
        raise SnapshotError(f"cannot isolate the run: {why}", hint="run without --isolate")
    target = Path(dest).absolute()
    mark = target.with_name(target.name + MARK_SUFFIX)
    if target.is_dir() and any(target.iterdir()):
        held = mark.read_text().strip() if mark.is_file() else None
        if held == snapshot.snapshot_id:
            return target
        raise SnapshotError(
            f"{target} already holds {'snapshot ' + held if held else 'other files'}, "
            f"not snapshot {snapshot.snapshot_id}",
            hint="remove that directory, or isolate into another one",
        )
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="mlrunner-index-") as tmp:
            env = {**git_env(), "GIT_INDEX_FILE": os.path.join(tmp, "index")}
            run_git(snapshot.repo_root, "read-tree", snapshot.snapshot_id, env=env)
            run_git(snapshot.repo_root, "checkout-index", "--all", "--force", f"--prefix={target}/", env=env)
        mark.write_text(snapshot.snapshot_id + "\n")
    except (GitFailed, OSError) as exc:
        raise SnapshotError(f"cannot check out snapshot {snapshot.snapshot_id} into {target}: {exc}") from exc
    return target


def remove_worktree(snapshot: Snapshot, dest: str | os.PathLike[str]) -> None:
    """Remove a checkout made by :func:`materialize`; no-op if absent."""
    target = Path(dest).absolute()
    mark = target.with_name(target.name + MARK_SUFFIX)
    if mark.is_file():
        shutil.rmtree(target, ignore_errors=True)
        mark.unlink(missing_ok=True)

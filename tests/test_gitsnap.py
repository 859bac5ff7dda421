"""Git snapshot, restore and isolation (issue 4), on real git repositories in tmp_path."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlrunner.errors import RestoreError, SnapshotError, UsageError
from mlrunner.snapshot import (
    Snapshot,
    materialize,
    read_snapshot,
    remove_worktree,
    restore,
    same_code,
    strip_credentials,
    take_snapshot,
    write_snapshot,
)
from mlrunner.snapshot import record as gitsnap

IGNORED = b"IGNORED-SECRET-CONTENT"


@pytest.fixture(autouse=True)
def git_identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Test User")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "test@example.com")


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"git {args}: {proc.stderr}"
    return proc.stdout


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / ".gitignore").write_text("*.log\nignored/\n")
    (path / "train.py").write_text("print('train v1')\n")
    (path / "lib").mkdir()
    (path / "lib" / "model.py").write_text("LAYERS = 1\n")
    (path / "lib" / "old.py").write_text("OLD = True\n")
    (path / "weights.bin").write_bytes(bytes(range(256)) * 4)
    (path / "run.sh").write_text("#!/bin/sh\necho run\n")
    os.chmod(path / "run.sh", 0o755)
    os.symlink("lib/model.py", path / "model_link.py")
    (path / "became_dir").write_text("a file at first\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def make_dirty(repo: Path) -> None:
    """Unstaged, staged and staged-then-edited changes, untracked files, ignored files, a big file."""
    (repo / "train.py").write_text("print('train v1, unstaged edit')\n")
    (repo / "lib" / "model.py").write_text("LAYERS = 2  # staged\n")
    git(repo, "add", "lib/model.py")
    (repo / "run.sh").write_text("#!/bin/sh\necho staged\n")
    git(repo, "add", "run.sh")
    (repo / "run.sh").write_text("#!/bin/sh\necho staged, then edited\n")
    (repo / "train_v2.py").write_text("print('the new script nobody committed')\n")
    (repo / "newpkg").mkdir()
    (repo / "newpkg" / "__init__.py").write_text("from .layers import *\n")
    (repo / "newpkg" / "layers.py").write_bytes(b"\x00\x01binary\xff" * 100)
    (repo / "lib" / "old.py").unlink()
    (repo / "became_dir").unlink()
    (repo / "became_dir").mkdir()
    (repo / "became_dir" / "inside.txt").write_text("now a directory\n")
    (repo / "run.log").write_bytes(IGNORED)
    (repo / "ignored").mkdir()
    (repo / "ignored" / "secret.txt").write_bytes(IGNORED)
    (repo / "huge.bin").write_bytes(os.urandom(2 << 20))  # over the 1 MiB per-file cap


def view(root: Path, *, skip: set[str] = frozenset()) -> dict[str, tuple[str, bytes, bool]]:
    """Every file under root except .git: path -> (kind, content or link target, executable)."""
    out: dict[str, tuple[str, bytes, bool]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if rel in skip or name == ".git":
                continue
            if os.path.islink(full):
                out[rel] = ("link", os.readlink(full).encode(), False)
            else:
                out[rel] = ("file", Path(full).read_bytes(), os.access(full, os.X_OK))
    return out


def captured_view(repo: Path, excluded: set[str] = frozenset()) -> dict[str, tuple[str, bytes, bool]]:
    """What a snapshot must hold: the working tree minus ignored and excluded files."""
    listed = git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    keep = {p for p in listed if p and os.path.lexists(repo / p) and not os.path.isdir(repo / p)}
    full = view(repo)
    return {p: v for p, v in full.items() if p in keep and p not in excluded}


def user_state(repo: Path) -> dict[str, object]:
    return {
        "status": git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=all"),
        "index": (repo / ".git" / "index").read_bytes() if (repo / ".git" / "index").exists() else None,
        "stash": git(repo, "stash", "list"),
        "head": (repo / ".git" / "HEAD").read_text(),
        "branches": git(repo, "for-each-ref", "refs/heads", "refs/tags", "refs/stash"),
    }


@pytest.fixture
def dirty_repo(tmp_path: Path) -> Path:
    repo = init_repo(tmp_path / "repo")
    make_dirty(repo)
    return repo


def test_dirty_repo_snapshot_captures_staged_unstaged_untracked(dirty_repo: Path, tmp_path: Path) -> None:
    head = git(dirty_repo, "rev-parse", "HEAD").strip()
    before = user_state(dirty_repo)
    snap, warnings = take_snapshot(dirty_repo, work_dir=tmp_path / "run")

    assert (snap.vcs, snap.commit, snap.branch) == ("git", head, "main")
    assert (snap.detached, snap.dirty) == (False, True)
    assert snap.changes == {"staged": 2, "unstaged": 4, "untracked": 5, "conflicted": 0}
    assert snap.repo_root == str(dirty_repo.resolve()) and snap.subdir == ""
    ref = f"refs/mlrunner/snapshots/{snap.snapshot_id}"
    assert snap.ref == ref and git(dirty_repo, "rev-parse", ref).strip() == snap.snapshot_id
    assert git(dirty_repo, "rev-parse", f"{snap.snapshot_id}^").strip() == head
    assert git(dirty_repo, "rev-parse", f"{snap.snapshot_id}^{{tree}}").strip() == snap.tree
    assert snap.git_version and snap.git_version[0].isdigit()
    # The snapshot tree holds exactly the working tree minus ignored files and the big one.
    files = git(dirty_repo, "ls-tree", "-r", "--name-only", "-z", snap.tree).split("\0")
    assert "train_v2.py" in files and "newpkg/layers.py" in files and "became_dir/inside.txt" in files
    assert not {"run.log", "ignored/secret.txt", "huge.bin", "lib/old.py", "became_dir"} & set(files)
    assert git(dirty_repo, "show", f"{snap.tree}:lib/model.py") == "LAYERS = 2  # staged\n"
    assert git(dirty_repo, "show", f"{snap.tree}:run.sh") == "#!/bin/sh\necho staged, then edited\n"
    assert git(dirty_repo, "show", f"{snap.tree}:train.py") == "print('train v1, unstaged edit')\n"
    # The big file is listed with its size and sha256, and warned about.
    big = (dirty_repo / "huge.bin").read_bytes()
    assert snap.excluded == [
        {
            "path": "huge.bin",
            "size": len(big),
            "sha256": hashlib.sha256(big).hexdigest(),
            "reason": "over the 1 MiB per-file cap",
            "in_head": False,
        }
    ]
    assert len(warnings) == 1 and "huge.bin" in warnings[0] and "2 MiB" in warnings[0]
    # The user's index, status, stash, HEAD and branches are untouched; nothing is locked.
    assert user_state(dirty_repo) == before
    assert not (dirty_repo / ".git" / "index.lock").exists()


def test_experiment_dir_records_head_flags_and_patch(dirty_repo: Path, tmp_path: Path) -> None:
    snap, _ = take_snapshot(dirty_repo, work_dir=tmp_path / "run")
    exp = tmp_path / "output" / "lr=0.1"
    write_snapshot(snap, exp)
    data = json.loads((exp / "git.json").read_text())
    assert data["commit"] == snap.commit and data["branch"] == "main" and data["dirty"] is True
    assert data["snapshot_id"] == snap.snapshot_id and data["tree"] == snap.tree
    assert data["changes"]["staged"] == 2 and data["patch_path"] == "git.patch" and data["format"] == 1
    patch = (exp / "git.patch").read_bytes()
    for name in (b"train.py", b"lib/model.py", b"train_v2.py", b"newpkg/layers.py", b"GIT binary patch"):
        assert name in patch
    assert IGNORED not in patch and b"huge.bin" not in patch
    back = read_snapshot(exp)
    assert back is not None and back.patch_path == str((exp / "git.patch").resolve())
    assert same_code(back, snap) and back.to_dict()["excluded"] == snap.excluded


def test_patch_applies_onto_clean_checkout_of_head(dirty_repo: Path, tmp_path: Path) -> None:
    snap, _ = take_snapshot(dirty_repo, work_dir=tmp_path / "run")
    clean = tmp_path / "clean"
    git(tmp_path, "clone", "-q", str(dirty_repo), str(clean))
    git(clean, "checkout", "-q", "--detach", snap.commit or "")
    git(clean, "apply", "--binary", snap.patch_path or "")
    assert view(clean) == captured_view(dirty_repo, excluded={"huge.bin"})


def test_restore_after_branch_moves_on_and_files_are_deleted(dirty_repo: Path, tmp_path: Path) -> None:
    snap, _ = take_snapshot(dirty_repo, work_dir=tmp_path / "run")
    expected = captured_view(dirty_repo, excluded={"huge.bin"})
    exp = tmp_path / "output" / "exp one"
    write_snapshot(snap, exp)
    scripts = {
        "train": "CUDA_VISIBLE_DEVICES=0 python train.py --lr 0.1 > log 2>&1",
        "eval": "python eval.py",
    }
    (exp / "param").write_text(yaml.safe_dump({"lr": 0.1, "_output": str(exp), "_scripts": scripts}))
    # Move on: commit everything, delete files, commit again, wipe the working tree.
    git(dirty_repo, "add", "-A")
    git(dirty_repo, "commit", "-q", "-m", "wip")
    git(dirty_repo, "rm", "-q", "-r", "train_v2.py", "newpkg", "lib")
    (dirty_repo / "train.py").write_text("print('rewritten')\n")
    git(dirty_repo, "commit", "-q", "-am", "rewrite")
    git(dirty_repo, "clean", "-q", "-fdx")

    result = restore(exp, tmp_path / "dest")
    assert result.dest == tmp_path / "dest" and result.source == "snapshot" and not result.worktree
    assert result.commands == scripts and result.commit == snap.snapshot_id
    assert view(result.dest) == expected
    assert any("huge.bin" in w and "not restored" in w for w in result.warnings)

    wt = restore(exp, tmp_path / "wt", worktree=True)
    assert wt.worktree and git(wt.dest, "rev-parse", "HEAD").strip() == snap.snapshot_id
    assert view(wt.dest) == expected
    assert git(wt.dest, "status", "--porcelain") == ""


def test_restore_survives_gc_prune(dirty_repo: Path, tmp_path: Path) -> None:
    snap, _ = take_snapshot(dirty_repo, work_dir=tmp_path / "run")
    expected = captured_view(dirty_repo, excluded={"huge.bin"})
    write_snapshot(snap, tmp_path / "exp")
    git(dirty_repo, "reset", "-q", "--hard")
    git(dirty_repo, "clean", "-q", "-fdx")
    git(dirty_repo, "reflog", "expire", "--expire=now", "--all")
    git(dirty_repo, "gc", "-q", "--prune=now")
    result = restore(tmp_path / "exp", tmp_path / "dest")
    assert result.source == "snapshot" and view(result.dest) == expected


def test_restore_rebuilds_from_patch_when_the_ref_is_gone(dirty_repo: Path, tmp_path: Path) -> None:
    snap, _ = take_snapshot(dirty_repo, work_dir=tmp_path / "run")
    expected = captured_view(dirty_repo, excluded={"huge.bin"})
    exp = tmp_path / "exp"
    write_snapshot(snap, exp)
    git(dirty_repo, "update-ref", "-d", f"refs/mlrunner/snapshots/{snap.snapshot_id}")
    git(dirty_repo, "reset", "-q", "--hard")
    git(dirty_repo, "clean", "-q", "-fdx")
    git(dirty_repo, "reflog", "expire", "--expire=now", "--all")
    git(dirty_repo, "gc", "-q", "--prune=now")
    assert subprocess.run(["git", "cat-file", "-e", snap.snapshot_id or ""], cwd=dirty_repo).returncode != 0

    (exp / "git.patch").rename(tmp_path / "aside.patch")
    with pytest.raises(RestoreError, match=r"deleted and `git gc` pruned it.*git\.patch is missing"):
        restore(exp, tmp_path / "dest0")
    (tmp_path / "aside.patch").rename(exp / "git.patch")
    result = restore(exp, tmp_path / "dest")
    assert result.source == "patch" and view(result.dest) == expected
    assert any("git.patch" in w for w in result.warnings)
    wt = restore(exp, tmp_path / "wt", worktree=True)
    assert view(wt.dest) == expected and git(wt.dest, "rev-parse", "HEAD^{tree}").strip() == snap.tree


def test_restore_errors_are_clear(dirty_repo: Path, tmp_path: Path) -> None:
    snap, _ = take_snapshot(dirty_repo, work_dir=tmp_path / "run")
    exp = tmp_path / "exp"
    write_snapshot(snap, exp)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="is not empty"):  # exit 2: a usage mistake
        restore(exp, busy)
    assert (busy / "keep.txt").read_text() == "mine"
    with pytest.raises(RestoreError, match="has no git.json"):
        restore(tmp_path / "nothing", tmp_path / "d1")
    with pytest.raises(RestoreError, match="repository given .*moved-away. does not exist"):
        restore(exp, tmp_path / "d2", repo=tmp_path / "moved-away")
    assert view(restore(exp, tmp_path / "d4", repo=dirty_repo / "lib").dest) == captured_view(
        dirty_repo, excluded={"huge.bin"}
    )
    (exp / "git.json").write_text("{not json")
    with pytest.raises(RestoreError, match="not valid JSON"):
        restore(exp, tmp_path / "d3")


def test_index_lock_held_by_the_user_does_not_block(dirty_repo: Path, tmp_path: Path) -> None:
    lock = dirty_repo / ".git" / "index.lock"
    lock.write_bytes(b"someone else's lock")
    snap, warnings = take_snapshot(dirty_repo, work_dir=tmp_path / "run")
    assert snap.snapshot_id and len(warnings) == 1
    assert lock.read_bytes() == b"someone else's lock"


def test_detached_head(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    (repo / "train.py").write_text("print('second')\n")
    git(repo, "commit", "-q", "-am", "second")
    first = git(repo, "rev-parse", "HEAD~1").strip()
    git(repo, "checkout", "-q", "--detach", first)
    (repo / "untracked.py").write_text("x = 1\n")
    snap, warnings = take_snapshot(repo, work_dir=tmp_path / "run")
    assert (snap.detached, snap.branch, snap.commit, snap.dirty) == (True, None, first, True)
    assert warnings == []
    write_snapshot(snap, tmp_path / "exp")
    assert view(restore(tmp_path / "exp", tmp_path / "dest").dest) == captured_view(repo)


def test_empty_repo_without_commits(tmp_path: Path) -> None:
    repo = tmp_path / "empty"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "trunk")
    snap, warnings = take_snapshot(repo, work_dir=tmp_path / "run0")
    assert (snap.commit, snap.branch, snap.dirty, warnings) == (None, "trunk", False, [])
    assert snap.tree == git(repo, "hash-object", "-t", "tree", "/dev/null").strip()
    assert Path(snap.patch_path or "").read_bytes() == b""

    (repo / "staged.py").write_text("staged = 1\n")
    git(repo, "add", "staged.py")
    (repo / "new.py").write_text("new = 1\n")
    snap, warnings = take_snapshot(repo, work_dir=tmp_path / "run1")
    assert snap.commit is None and snap.dirty and snap.snapshot_id and warnings == []
    assert snap.changes == {"staged": 1, "unstaged": 0, "untracked": 1, "conflicted": 0}
    assert git(repo, "rev-list", "--parents", "-n1", snap.snapshot_id or "").split() == [snap.snapshot_id]
    target = tmp_path / "apply"
    target.mkdir()
    git(target, "init", "-q")
    git(target, "apply", "--binary", snap.patch_path or "")
    assert view(target) == captured_view(repo)
    write_snapshot(snap, tmp_path / "exp")
    assert view(restore(tmp_path / "exp", tmp_path / "dest").dest) == captured_view(repo)
    assert git(repo, "status", "--porcelain", "-z") == "A  staged.py\0?? new.py\0"


def test_outside_git_and_without_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = tmp_path / "plain dir"
    plain.mkdir()
    (plain / "train.py").write_text("print(1)\n")
    snap, warnings = take_snapshot(plain, work_dir=tmp_path / "run")
    assert snap.vcs is None and snap.snapshot_id is None and snap.taken_at > 0
    assert len(warnings) == 1 and "not inside a git repository" in warnings[0]
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "git.patch").write_text("stale patch from an older run")
    write_snapshot(snap, exp)
    assert json.loads((exp / "git.json").read_text())["vcs"] is None and not (exp / "git.patch").exists()
    back = read_snapshot(exp)
    assert back is not None and back.vcs is None and not same_code(back, back)
    with pytest.raises(RestoreError, match="outside a git repository"):
        restore(exp, tmp_path / "dest")
    with pytest.raises(SnapshotError, match="cannot isolate"):
        materialize(snap, tmp_path / "iso")

    repo = init_repo(tmp_path / "repo")
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    snap, warnings = take_snapshot(repo, work_dir=tmp_path / "run2")
    assert snap.vcs is None and len(warnings) == 1 and "git is not installed" in warnings[0]


def test_hostile_paths_with_spaces_quotes_and_dollars(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "my repo $(touch pwned) 'q'")
    names = [
        "a b.py",
        "quote'\".py",
        "$(touch pwned).py",
        "dir with space/x y.txt",
        "é ü.py",
        "-n.py",
        "*.py",
    ]
    for name in names:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(f"# {name}\n")
    git(repo, "add", "a b.py")
    (repo / "a b.py").write_text("edited after staging\n")
    work = tmp_path / "run dir $(x)"
    snap, warnings = take_snapshot(repo / "dir with space", work_dir=work)
    assert warnings == [] and snap.subdir == "dir with space"
    exp = tmp_path / "out put" / "lr=0.1,name='x y'"
    write_snapshot(snap, exp)
    result = restore(exp, tmp_path / "dest $(x)")
    assert view(result.dest) == captured_view(repo)
    assert result.cwd == result.dest / "dir with space"
    assert not (repo / "pwned").exists() and not Path("pwned").exists()
    clean = tmp_path / "clean"
    git(tmp_path, "clone", "-q", str(repo), str(clean))
    git(clean, "apply", "--binary", str(exp / "git.patch"))
    assert view(clean) == captured_view(repo)


def test_credentials_are_stripped_from_remotes(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    remotes = {
        "origin": ("https://alice:s3cr3t@github.com/org/repo.git", "https://github.com/org/repo.git"),
        "token": ("https://ghp_T0KEN@github.com/org/repo", "https://github.com/org/repo"),
        "ssh": ("ssh://git:pw0rd@host.example:2222/repo.git", "ssh://git@host.example:2222/repo.git"),
        "scp": ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
        "local": ("/srv/git/repo.git", "/srv/git/repo.git"),
    }
    for name, (url, _) in remotes.items():
        git(repo, "remote", "add", name, url)
    snap, _ = take_snapshot(repo, work_dir=tmp_path / "run")
    assert snap.remotes == {name: clean for name, (_, clean) in remotes.items()}
    write_snapshot(snap, tmp_path / "exp")
    text = (tmp_path / "exp" / "git.json").read_text()
    assert "s3cr3t" not in text and "T0KEN" not in text and "pw0rd" not in text
    assert strip_credentials("http://u:p@[::1]:8080/x?y=1") == "http://[::1]:8080/x?y=1"
    assert strip_credentials("file:///srv/repo") == "file:///srv/repo"


def test_submodule_is_recorded(tmp_path: Path) -> None:
    sub = init_repo(tmp_path / "sub")
    repo = init_repo(tmp_path / "repo")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "vendor/sub")
    git(repo, "commit", "-q", "-m", "add submodule")
    inner = repo / "vendor" / "sub"
    (inner / "train.py").write_text("print('submodule, new commit')\n")
    git(inner, "commit", "-q", "-am", "inner change")
    new_sha = git(inner, "rev-parse", "HEAD").strip()
    (inner / "lib" / "model.py").write_text("uncommitted inside the submodule\n")
    before = user_state(repo)
    snap, warnings = take_snapshot(repo, work_dir=tmp_path / "run")
    assert snap.submodules == [
        {"path": "vendor/sub", "sha": new_sha, "status": "new commits, dirty", "url": str(sub)}
    ]
    assert len(warnings) == 1 and "vendor/sub" in warnings[0] and "uncommitted" in warnings[0]
    assert git(repo, "rev-parse", f"{snap.tree}:vendor/sub").strip() == new_sha
    assert user_state(repo) == before
    write_snapshot(snap, tmp_path / "exp")
    result = restore(tmp_path / "exp", tmp_path / "dest")
    assert any("vendor/sub" in w and new_sha in w for w in result.warnings)


def test_caps_keep_head_version_of_tracked_files(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    original = (repo / "weights.bin").read_bytes()
    (repo / "weights.bin").write_bytes(b"w" * 3000)  # tracked, modified, over the 2.5 KiB cap
    for size in (400, 900, 1200):  # together over the 2 KiB total: the largest goes first
        (repo / f"u{size}.txt").write_bytes(b"u" * size)
    snap, warnings = take_snapshot(repo, work_dir=tmp_path / "run", max_file_bytes=2560, max_total_bytes=2048)
    assert [(e["path"], e["reason"], e["in_head"]) for e in snap.excluded] == [
        ("u1200.txt", "over the 2 KiB total cap", False),
        ("weights.bin", "over the 2.5 KiB per-file cap", True),
    ]
    listed = git(repo, "ls-tree", "--name-only", snap.tree or "", "u400.txt", "u900.txt", "u1200.txt")
    assert listed.split() == ["u400.txt", "u900.txt"]
    blob = subprocess.run(
        ["git", "cat-file", "blob", f"{snap.tree}:weights.bin"], cwd=repo, capture_output=True
    )
    assert blob.stdout == original
    patch = Path(snap.patch_path or "").read_bytes()
    assert b"weights.bin" not in patch and b"u1200" not in patch and b"u900.txt" in patch
    assert snap.dirty and "2 file(s) left out" in warnings[0]


def test_output_dir_inside_the_repo_is_not_captured(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    out = repo / "output"
    (out / "lr=1").mkdir(parents=True)
    (out / "lr=1" / "log.train").write_text("epoch 1\n")
    (out / ".mlrunner" / "worktrees" / "abc").mkdir(parents=True)
    (out / ".mlrunner" / "worktrees" / "abc" / "f.py").write_text("x\n")
    snap, warnings = take_snapshot(repo, work_dir=out / ".mlrunner" / "snapshots" / "1", exclude=[out])
    assert not snap.dirty and warnings == [] and snap.changes["untracked"] == 0
    assert snap.tree == git(repo, "rev-parse", "HEAD^{tree}").strip()
    # without exclude: output/ holds .mlrunner/, so it is an output root, left out silently
    snap2, warnings2 = take_snapshot(repo, work_dir=tmp_path / "run2")
    assert not snap2.dirty and warnings2 == [] and snap2.changes["untracked"] == 0


def test_every_dir_holding_an_mlrunner_state_dir_is_left_out(tmp_path: Path) -> None:
    """Issue 14.6: other runs' output roots (found from git's own listing, or by a stat when
    .mlrunner is ignored) never enter a snapshot; code next to them and a dir holding the
    run's own working dir do."""
    repo = init_repo(tmp_path / "repo")
    for name in ("out_a", "deep/er/out $(b) 'q'", "out_c"):
        exp = repo / name / "Lr_1"
        exp.mkdir(parents=True)
        (exp / "log.train").write_text("epoch 1\n")
        (exp / "git.patch").write_text("diff\n")
        (repo / name / ".mlrunner" / "snapshots").mkdir(parents=True)
    (repo / "out_a" / ".mlrunner" / "ledger.db").write_text("db\n")
    (repo / "out_c" / ".mlrunner" / "snapshots" / "env.json").write_text("{}\n")
    (repo / ".git" / "info" / "exclude").write_text("out_c/.mlrunner/\n")  # not in git's listing
    (repo / "deep" / "er" / "model.py").write_text("code next to an output root\n")
    (repo / "new.py").write_text("new code\n")
    (repo / "notes").mkdir()
    (repo / "notes" / "todo.txt").write_text("code dir without state\n")
    snap, warnings = take_snapshot(repo, work_dir=tmp_path / "run")
    assert warnings == []
    files = git(repo, "ls-tree", "-r", "--name-only", snap.tree or "").split("\n")
    assert {"new.py", "deep/er/model.py", "notes/todo.txt"} <= set(files)
    assert not [f for f in files if f.startswith(("out_a", "out_c", "deep/er/out"))]
    assert snap.changes["untracked"] == 3
    # the run's own dir inside a dir holding .mlrunner/ (run -o . from a sub dir): its code stays
    sub = repo / "sub"
    (sub / ".mlrunner").mkdir(parents=True)
    (sub / ".mlrunner" / "ledger.db").write_text("db\n")
    (sub / "train.py").write_text("print(1)\n")
    snap_sub, _ = take_snapshot(sub, work_dir=tmp_path / "run-sub")
    assert "sub/train.py" in git(repo, "ls-tree", "-r", "--name-only", snap_sub.tree or "")
    snap_top, _ = take_snapshot(repo, work_dir=tmp_path / "run-top")
    assert "sub/train.py" not in git(repo, "ls-tree", "-r", "--name-only", snap_top.tree or "")


def test_merge_conflict_is_captured(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    git(repo, "checkout", "-q", "-b", "other")
    (repo / "train.py").write_text("print('other')\n")
    git(repo, "commit", "-q", "-am", "other")
    git(repo, "checkout", "-q", "main")
    (repo / "train.py").write_text("print('main')\n")
    git(repo, "commit", "-q", "-am", "main")
    subprocess.run(["git", "merge", "-q", "other"], cwd=repo, capture_output=True)
    snap, _ = take_snapshot(repo, work_dir=tmp_path / "run")
    assert snap.changes["conflicted"] == 1 and snap.snapshot_id
    assert "<<<<<<<" in git(repo, "show", f"{snap.tree}:train.py")
    assert "UU train.py" in git(repo, "status", "--porcelain")


def test_write_snapshot_links_once_per_run_and_replaces(
    dirty_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snap, _ = take_snapshot(dirty_repo, work_dir=tmp_path / "run")
    exps = [tmp_path / "output" / f"lr={i}" for i in range(3)]
    for exp in exps:
        write_snapshot(snap, exp)
        write_snapshot(snap, exp)  # again (a resumed task): a no-op
    inodes = {os.stat(e / "git.patch").st_ino for e in exps} | {os.stat(snap.patch_path or "").st_ino}
    assert len(inodes) == 1 and os.stat(exps[0] / "git.json").st_nlink == 4
    # A resumed run on other code replaces both files in that dir only.
    (dirty_repo / "train.py").write_text("print('changed before resume')\n")
    snap2, _ = take_snapshot(dirty_repo, work_dir=tmp_path / "run2")
    write_snapshot(snap2, exps[0])
    assert read_snapshot(exps[0]).snapshot_id == snap2.snapshot_id  # type: ignore[union-attr]
    assert read_snapshot(exps[1]).snapshot_id == snap.snapshot_id  # type: ignore[union-attr]
    assert b"changed before resume" in (exps[0] / "git.patch").read_bytes()
    assert not same_code(snap, snap2) and same_code(snap.to_dict(), read_snapshot(exps[1]))

    # Links impossible (another filesystem): copies.
    def no_link(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(gitsnap.os, "link", no_link)
    write_snapshot(snap, tmp_path / "other-fs")
    assert (tmp_path / "other-fs" / "git.patch").read_bytes() == Path(snap.patch_path or "").read_bytes()
    assert os.stat(tmp_path / "other-fs" / "git.patch").st_nlink == 1
    monkeypatch.undo()
    # The run-level patch vanished: rebuilt from the repository, byte for byte.
    original = Path(snap.patch_path or "").read_bytes()
    for f in (tmp_path / "run").iterdir():
        f.unlink()
    write_snapshot(snap, tmp_path / "late")
    assert (tmp_path / "late" / "git.patch").read_bytes() == original


def test_same_code_and_dict_round_trip(dirty_repo: Path, tmp_path: Path) -> None:
    a, _ = take_snapshot(dirty_repo, work_dir=tmp_path / "a")
    b, _ = take_snapshot(dirty_repo, work_dir=tmp_path / "b")
    assert same_code(a, b) and same_code(a.to_dict(), b) and not same_code(a, None)
    assert Snapshot.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    assert Snapshot.from_dict({**a.to_dict(), "added_in_v9": 1}) == a
    with pytest.raises(SnapshotError, match="must be a list"):
        Snapshot.from_dict({**a.to_dict(), "excluded": "oops"})
    (dirty_repo / "huge.bin").write_bytes(b"other big content" * 100000)
    c, _ = take_snapshot(dirty_repo, work_dir=tmp_path / "c")
    assert c.tree == a.tree and not same_code(a, c)  # only the excluded file changed
    clean = Snapshot(vcs="git", commit="abc", dirty=False)
    assert same_code(clean, clean) and not same_code(clean, Snapshot(vcs="git", commit="abc", dirty=True))


def test_materialize_isolates_the_run_from_later_edits(dirty_repo: Path, tmp_path: Path) -> None:
    snap, _ = take_snapshot(dirty_repo / "lib", work_dir=tmp_path / "run")
    iso = tmp_path / "output" / ".mlrunner" / "worktrees" / (snap.snapshot_id or "")[:12]
    assert materialize(snap, iso) == iso and snap.subdir == "lib"
    cwd = iso / snap.subdir
    assert view(iso) == captured_view(dirty_repo, excluded={"huge.bin"})
    (dirty_repo / "train.py").write_text("print('edited mid-sweep')\n")
    (dirty_repo / "lib" / "model.py").unlink()
    assert materialize(snap, iso) == iso  # idempotent: a resumed run reuses it
    assert (iso / "train.py").read_text() == "print('train v1, unstaged edit')\n"
    assert (cwd / "model.py").read_text() == "LAYERS = 2  # staged\n"
    other, _ = take_snapshot(dirty_repo, work_dir=tmp_path / "run2")
    with pytest.raises(SnapshotError, match="already holds"):
        materialize(other, iso)
    remove_worktree(snap, iso)
    assert not iso.exists() and str(iso) not in git(dirty_repo, "worktree", "list")


def test_linked_worktree_and_hostile_git_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = init_repo(tmp_path / "repo")
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "-b", "feature", str(linked))
    (linked / "feature.py").write_text("feature = True\n")
    git(linked, "add", "feature.py")
    (linked / "train.py").write_text("print('feature edit')\n")
    index = git(linked, "rev-parse", "--git-path", "index").strip()
    before = (Path(linked, index).read_bytes(), (repo / ".git" / "index").read_bytes())
    # Variables a git hook or a shell may leave behind must not redirect the snapshot.
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "other-index"))
    monkeypatch.setenv("GIT_LITERAL_PATHSPECS", "1")
    snap, warnings = take_snapshot(linked, work_dir=tmp_path / "run", exclude=[linked / "out"])
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_INDEX_FILE")
    assert warnings == [] and snap.branch == "feature" and snap.repo_root == str(linked.resolve())
    assert snap.changes == {"staged": 1, "unstaged": 1, "untracked": 0, "conflicted": 0}
    assert git(linked, "show", f"{snap.tree}:feature.py") == "feature = True\n"
    assert (Path(linked, index).read_bytes(), (repo / ".git" / "index").read_bytes()) == before
    assert not (tmp_path / "other-index").exists()


def test_capture_failure_degrades_to_head_only(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    head = git(repo, "rev-parse", "HEAD").strip()
    (repo / ".git" / "index").write_bytes(b"DIRC garbage, not an index")
    snap, warnings = take_snapshot(repo, work_dir=tmp_path / "run")
    assert (snap.vcs, snap.commit, snap.snapshot_id, snap.dirty) == ("git", head, None, True)
    assert snap.error and len(warnings) == 1 and "could not be captured" in warnings[0]
    write_snapshot(snap, tmp_path / "exp")
    assert not (tmp_path / "exp" / "git.patch").exists()
    with pytest.raises(RestoreError, match=f"not captured at run time.*{head}"):
        restore(tmp_path / "exp", tmp_path / "dest")
    with pytest.raises(SnapshotError, match="cannot isolate"):
        materialize(snap, tmp_path / "iso")


def test_importing_gitsnap_does_not_import_gitpython() -> None:
    code = (
        "import sys, mlrunner.snapshot.record; print(sorted(m for m in ('git', 'yaml') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_nested_repositories_are_recorded_as_gitlinks(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    nested = init_repo(repo / "nested")
    (repo / "unborn").mkdir()
    git(repo / "unborn", "init", "-q")
    (repo / "unborn" / "x.py").write_text("x = 1\n")
    snap, warnings = take_snapshot(repo, work_dir=tmp_path / "run")
    sha = git(nested, "rev-parse", "HEAD").strip()
    assert git(repo, "ls-tree", snap.tree or "", "nested").split()[:3] == ["160000", "commit", sha]
    assert git(repo, "ls-tree", snap.tree or "", "unborn") == ""
    assert snap.submodules == [{"path": "nested", "sha": sha, "status": "embedded", "url": None}]
    assert len(warnings) == 2 and "'nested'" in warnings[0] and "'unborn' has no commit" in warnings[1]
    clean = tmp_path / "clean"
    git(tmp_path, "clone", "-q", str(repo), str(clean))
    git(clean, "apply", "--binary", snap.patch_path or "")
    assert git(clean, "status", "--porcelain") == ""

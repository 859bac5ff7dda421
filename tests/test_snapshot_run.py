"""The git snapshot through `run`: every experiment records its code; restore; --isolate (issue 4)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from helpers import Project


def git(cwd: Path, *args: str, env: dict[str, str]) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


def make_repo(project: Project) -> None:
    env = project.env
    git(project.path, "init", "-q", "-b", "main", env=env)
    (project.path / ".gitignore").write_text("output/\n*.ckpt\n")
    (project.path / "model.py").write_text("VERSION = 1\n")
    project.write(
        """
        template:
          a: "python -c 'import model, helper; print(model.VERSION, helper.NAME)'; sleep {s}"
        ---
        s: [0, 0.01]
        """
    )
    (project.path / "helper.py").write_text("NAME = 'committed'\n")
    git(project.path, "add", "-A", env=env)
    git(project.path, "commit", "-qm", "first", env=env)
    # the dirty state: an unstaged edit, a staged edit, an untracked module, an ignored file
    (project.path / "model.py").write_text("VERSION = 2\n")
    (project.path / "helper.py").write_text("NAME = 'staged'\n")
    git(project.path, "add", "helper.py", env=env)
    (project.path / "train_v2.py").write_text("print('new and uncommitted')\n")
    (project.path / "weights.ckpt").write_text("ignored\n")


def test_every_experiment_records_the_dirty_code_and_restore_rebuilds_it(
    project: Project, tmp_path: Path
) -> None:
    make_repo(project)
    head = git(project.path, "rev-parse", "HEAD", env=project.env).strip()
    index_before = (project.path / ".git" / "index").read_bytes()
    status_before = git(project.path, "status", "--porcelain", env=project.env)
    project.run(check=0)
    assert (project.path / ".git" / "index").read_bytes() == index_before
    assert git(project.path, "status", "--porcelain", env=project.env) == status_before
    assert git(project.path, "stash", "list", env=project.env) == ""
    exps = sorted(p for p in (project.path / "output").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(exps) == 2
    for exp in exps:
        meta = json.loads((exp / "git.json").read_text())
        assert meta["commit"] == head and meta["dirty"] is True and meta["branch"] == "main"
        patch = (exp / "git.patch").read_text()
        assert "VERSION = 2" in patch and "staged" in patch and "train_v2.py" in patch
        assert "weights.ckpt" not in patch
        assert next(exp.glob("log.a.*")).read_text().startswith("2 staged")
    runs = json.loads(project.mlrunner("ledger", "ls", "--json", check=0).stdout)
    assert runs[0]["git_commit"] == head and runs[0]["git_dirty"] is True
    # the branch moves on and files are deleted; restore still rebuilds the exact tree
    git(project.path, "add", "-A", env=project.env)
    git(project.path, "commit", "-qm", "second", env=project.env)
    git(project.path, "rm", "-q", "train_v2.py", env=project.env)
    git(project.path, "commit", "-qm", "third", env=project.env)
    dest = tmp_path / "restored code"
    res = project.mlrunner("restore", str(exps[0]), str(dest), check=0)
    assert "python -c" in res.stdout  # the experiment's commands are shown
    assert (dest / "model.py").read_text() == "VERSION = 2\n"
    assert (dest / "helper.py").read_text() == "NAME = 'staged'\n"
    assert (dest / "train_v2.py").exists()
    assert not (dest / "weights.ckpt").exists()


def test_isolate_runs_queued_experiments_on_the_snapshot(project: Project) -> None:
    make_repo(project)
    project.write(
        """
        template:
          a: "python -c 'import model; print(model.VERSION)'; sleep 0.6"
        resource: [0]
        ---
        x: [1, 2, 3]
        """
    )
    git(project.path, "add", "params.yaml", env=project.env)
    proc = project.popen("--isolate")
    deadline = time.monotonic() + 20
    out = project.path / "output"
    while time.monotonic() < deadline and not list(out.glob("X_1/log.a.*")):
        time.sleep(0.05)
    (project.path / "model.py").write_text("VERSION = 3\n")  # edited mid-sweep
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stdout + stderr
    for x in (1, 2, 3):
        assert next(out.glob(f"X_{x}/log.a.*")).read_text() == "2\n"
    # {_output}-relative writes still land in the real experiment dirs
    assert all((out / f"X_{x}" / "param").exists() for x in (1, 2, 3))


def test_resume_warns_when_the_code_changed(project: Project) -> None:
    make_repo(project)
    project.write(
        """
        template:
          a: "test -e go"
        ---
        x: [1]
        """
    )
    project.run(check=1)
    (project.path / "model.py").write_text("VERSION = 4\n")
    (project.path / "go").touch()
    res = project.run("--resume", check=0)
    assert "code changed" in res.stderr
    doc = json.loads(project.mlrunner("ledger", "show", "1", "--json", check=0).stdout)
    assert doc["tasks"][0]["commands"][0]["attempts"] == 2


def test_outside_git_the_run_goes_on_with_one_warning(project: Project) -> None:
    project.write(
        """
        template:
          a: echo hi {x}
        ---
        x: [1, 2]
        """
    )
    res = project.run(check=0)
    assert res.stderr.count("WARNING") == 1 and "git" in res.stderr
    meta = json.loads((project.path / "output" / "X_1" / "git.json").read_text())
    assert meta["vcs"] is None


def test_other_runs_output_roots_never_enter_the_snapshot(project: Project, tmp_path: Path) -> None:
    """Issue 14.6, as a user met it: two runs in one repo, `-o out_a` then `-o out_b`, neither
    in .gitignore. The second (and every later) snapshot leaves every output root out,
    silently, also with MLRUNNER_LEDGER_DIR (the ledger elsewhere, .mlrunner/ still there)."""
    make_repo(project)
    project.write(
        """
        template:
          a: "echo {x} > {_output}/result.txt; head -c 1100000 /dev/zero > {_output}/big.bin"
        resource: {cpus: 2}
        ---
        x: [1, 2, 3, 4, 5, 6, 7]
        """
    )
    project.env["MLRUNNER_LEDGER_DIR"] = str(tmp_path / "ledgers")
    outs = ["out_a", "out_b", "out $(touch pwned) 'c'"]
    for out in outs:
        res = project.run("-o", out, check=0)
        assert "WARNING" not in res.stderr, res.stderr
    for out in outs:
        meta = json.loads((project.path / out / "X_1" / "git.json").read_text())
        # make_repo's dirty state only: model.py, params.yaml, helper.py (staged), train_v2.py
        assert meta["changes"] == {"conflicted": 0, "staged": 1, "unstaged": 2, "untracked": 1}
        assert meta["excluded"] == []
        tree = git(project.path, "ls-tree", "-r", "--name-only", meta["tree"], env=project.env)
        assert "train_v2.py" in tree and not [p for p in tree.splitlines() if p.startswith("out")]
        assert "out_a" not in (project.path / out / "X_1" / "git.patch").read_text()
    assert not (project.path / "pwned").exists()

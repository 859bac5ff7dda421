"""The README's demo commands really work: quickstart sweep, ledger, table (issue 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers import ROOT, Project


def test_quickstart_sweep_ledger_and_table(project: Project) -> None:
    shutil.copytree(ROOT / "examples" / "quickstart", project.path, dirs_exist_ok=True)
    res = project.run(check=0)
    assert "Tasks: 8, Commands: 16" in res.stdout and "No task failed." in res.stdout
    exps = [p for p in (project.path / "output").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(exps) == 8
    for exp in exps:
        train = next(exp.glob("log.train.*")).read_text().splitlines()
        assert len(train) == 30 and train[-1].startswith("epoch 30 loss ")
        assert json.loads((exp / "metrics.json").read_text())["val_acc"] > 0.5
        assert next(exp.glob("log.test.*")).read_text().startswith("TEST acc = ")
    runs = json.loads(project.mlrunner("ledger", "ls", "--json", check=0).stdout)
    assert runs[0]["n_finished"] == 8
    table = json.loads(project.mlrunner("table", "--ledger", "--json", check=0).stdout)
    assert len(table) == 8
    assert {"lr", "hidden", "seed", "val_acc", "_status"} <= set(table[0])
    assert {row["_status"] for row in table} == {"finished"}
    csv = project.mlrunner("table", "--regex", r"acc=TEST acc = ([\d.]+)", "--log", "test", "--csv", check=0)
    header = csv.stdout.splitlines()[0].split(",")
    assert "acc" in header and len(csv.stdout.splitlines()) == 9


def test_readme_example_analysis_prints_the_bleu_table(project: Project) -> None:
    shutil.copytree(ROOT / "examples" / "readme", project.path, dirs_exist_ok=True)
    project.run("-r", "0 1", check=0)
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "analyze.py"],
        cwd=project.path,
        env=project.env,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = res.stdout.strip().splitlines()
    assert lines[0].split("\t") == ["early-stop", "moment", "norm", "bleu"]
    assert len(lines) == 6


def test_examine_walkthrough_runs(project: Project) -> None:
    shutil.copytree(ROOT / "examples" / "quickstart", project.path, dirs_exist_ok=True)
    project.run(check=0)
    import subprocess
    import sys

    script = ROOT / "examples" / "examine" / "analysis.py"
    res = subprocess.run(
        [sys.executable, str(script), str(project.path / "output")],
        cwd=project.path,
        env=project.env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "seed" in res.stdout or "mean" in res.stdout
    assert Path(script).read_text().count("# %%") >= 3


def test_grammar_example_sweeps_the_quickstart_script(project: Project) -> None:
    """examples/grammar/: a zip, a conditional sub-grid with an exclude, a random document."""
    shutil.copytree(ROOT / "examples", project.path / "examples")
    where = project.path / "examples" / "grammar"
    project.path = where
    dry = project.run("--dry-run", "--json", check=0)
    tasks = json.loads(dry.stdout)
    assert len(tasks) == 6 + 4 + 4 and "Seed:" not in dry.stderr  # its _samples document has a _seed
    names = [t["name"] for t in tasks]
    assert names[:2] == ["Lr_0.05-Epochs_10-Hidden_4", "Lr_0.05-Epochs_10-Hidden_16"]
    assert names[6:10] == ["Hidden_4-Seed_0", "Hidden_4-Seed_1", "Hidden_32-Lr_0.1", "Hidden_32-Lr_0.3"]
    res = project.run(check=0, timeout=300)
    assert "Tasks: 14, Commands: 28" in res.stdout and "No task failed." in res.stdout
    assert "START   slot: 0" in res.stdout
    table = json.loads(project.mlrunner("table", "--ledger", "--json", check=0).stdout)
    assert len(table) == 14 and {row["_status"] for row in table} == {"finished"}
    assert all(row["val_acc"] > 0.3 for row in table)
    again = json.loads(project.run("--dry-run", "--json", check=0).stdout)
    assert [t["status"] for t in again] == ["finished"] * 14

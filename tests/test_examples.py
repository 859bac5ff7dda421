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

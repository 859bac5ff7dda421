"""Results v2 on a real sweep (issue 16): a real `run` in a git repo whose script writes a
metrics.jsonl history and a TensorBoard event file (tensorboardX, a real writer); 3 seeds x
2 configs, one member failing. Histories, summaries, aggregation, env.json, staleness,
`mlrunner table` and `mlrunner diff`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fake_gpus import install_fake_nvidia_smi
from helpers import Project

from mlrunner import envinfo
from mlrunner.examine import Examiner, Results, curves, diff, experiment_detail, experiments_rows

TRAIN = """
import json, os, sys
from tensorboardX import SummaryWriter

cfg, seed, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
writer = SummaryWriter(os.path.join(out, "tb"))
with open(os.path.join(out, "metrics.jsonl"), "w") as f:
    for step in range(6):
        val = (step - 3 - seed / 10) ** 2 + {"a": 0.0, "b": 0.5, "c": 0.25}[cfg]
        f.write(json.dumps({"step": step, "val_loss": val, "acc": step / 10 + seed / 100}) + "\\n")
        f.flush()
        writer.add_scalar("Loss/train", 1.0 / (step + 1), step)
        print(f"epoch {step} loss {val:.4f}", flush=True)
        if cfg == "b" and seed == 2 and step == 1:
            sys.exit("diverged")
writer.close()
"""

PARAMS = """
template:
  train: python train.py {cfg} {seed} {_output}
default: {}
resource: [0, 1]
---
cfg: [a, b]
seed: [0, 1, 2]
"""


def git(cwd: Path, *args: str, env: dict[str, str]) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def sweep(project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    install_fake_nvidia_smi(
        monkeypatch, tmp_path, [{"name": "NVIDIA Fake H100"}, {"name": "NVIDIA Fake H100"}]
    )
    monkeypatch.setenv("FAKE_NVIDIA_SMI_DRIVER", "550.54.15")
    for var in ("PATH", "FAKE_NVIDIA_SMI_GPUS", "FAKE_NVIDIA_SMI_DRIVER"):
        project.env[var] = os.environ[var]
    monkeypatch.chdir(project.path)  # the environment now: probed from where the runs were
    project.write(TRAIN, "train.py")
    project.write(PARAMS)
    (project.path / ".gitignore").write_text("output/\n")
    git(project.path, "init", "-q", "-b", "main", env=project.env)
    git(project.path, "add", "-A", env=project.env)
    git(project.path, "commit", "-qm", "first", env=project.env)
    res = project.run()
    assert res.returncode != 0, res.stdout + res.stderr  # Cfg_b-Seed_2 failed
    return project


def test_real_sweep_histories_summaries_agg_env_stale_and_diff(sweep: Project) -> None:
    output = sweep.path / "output"
    names = sorted(p.name for p in output.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert names == [f"Cfg_{c}-Seed_{s}" for c in "ab" for s in range(3)]

    examiner = Examiner()
    examiner.add_regex("loss", r"epoch (?P<step>\d+) loss (?P<value>[\d.]+)", history=True)
    examiner.exam(output)
    assert examiner.errors == []

    # histories: metrics.jsonl, the TensorBoard scalars, the regex over every log
    hist = examiner.history()
    assert list(hist.columns) == ["_name", "cfg", "seed", "step", "metric", "value"]
    one = hist[hist["_name"] == "Cfg_a-Seed_1"]
    assert sorted(one["metric"].unique()) == ["Loss/train", "acc", "loss", "val_loss"]
    val = one[one["metric"] == "val_loss"]
    assert val["step"].tolist() == list(range(6)) and val["step"].dtype == "int64"
    assert val["value"].tolist() == pytest.approx([(s - 3.1) ** 2 for s in range(6)])
    tb = one[one["metric"] == "Loss/train"]
    assert tb["value"].tolist() == pytest.approx([1 / (s + 1) for s in range(6)])
    failed = hist[(hist["_name"] == "Cfg_b-Seed_2") & (hist["metric"] == "val_loss")]
    assert failed["step"].tolist() == [0, 1]  # what it wrote before it failed
    assert examiner.history("acc")["metric"].unique().tolist() == ["acc"]

    # summaries: min, at-min:OTHER, _steps
    df = examiner.table(name=True, summary={"val_loss": "min", "acc": "at-min:val_loss", "loss": "max"})
    row = df.set_index("_name").loc["Cfg_a-Seed_1"]
    assert row["val_loss"] == pytest.approx(0.01)  # step 3: (3 - 3.1) ** 2
    assert row["acc"] == pytest.approx(0.31)  # acc at step 3
    assert row["loss"] == pytest.approx(9.61) and row["_steps"] == 6
    assert df.set_index("_name").loc["Cfg_b-Seed_2", "_steps"] == 2
    plain = examiner.table()
    assert plain.loc[0, "val_loss"] == pytest.approx((5 - 3) ** 2)  # last value by default (0.5.9)

    # aggregation over seeds: mean/std/sem, n, _n_failed, _n_missing
    agg = examiner.table(agg="seed", summary={"val_loss": "min"}, name=True)
    assert agg["cfg"].tolist() == ["a", "b"]
    assert agg["n"].tolist() == [3, 3] and agg["_n_failed"].tolist() == [0, 1]
    assert agg["_n_missing"].tolist() == [0, 0]
    assert agg.loc[0, "_members"] == ["Cfg_a-Seed_0", "Cfg_a-Seed_1", "Cfg_a-Seed_2"]
    mins = [0.0, 0.01, 0.04]
    assert agg.loc[0, "val_loss_mean"] == pytest.approx(sum(mins) / 3)
    assert agg.loc[0, "val_loss_std"] == pytest.approx(pd.Series(mins).std())
    assert agg.loc[0, "val_loss_sem"] == pytest.approx(pd.Series(mins).std() / 3**0.5)
    bands = examiner.history("val_loss", agg="seed")
    assert list(bands.columns) == ["_group", "cfg", "step", "metric", "mean", "std", "sem", "n"]
    b = bands[bands["cfg"] == "b"]
    assert b["n"].tolist() == [3, 3, 2, 2, 2, 2]  # the failed seed stopped after step 1

    # env.json: once per run, hard-linked into each experiment dir; its hash in the ledger
    envs = [output / n / "env.json" for n in names]
    assert len({os.stat(p).st_ino for p in envs}) == 1
    env = json.loads(envs[0].read_text())
    assert set(envinfo.KEYS) <= set(env)
    assert env["gpus"] == ["NVIDIA Fake H100", "NVIDIA Fake H100"] and env["driver"] == "550.54.15"
    assert env["python"] == ".".join(map(str, sys.version_info[:3])) and "tensorboardx" in env["packages"]
    assert env["host"] == os.uname().nodename and env["cpu"]
    ledger = examiner.table(ledger=True)
    assert set(ledger["_env"]) == {envinfo.env_hash(env)}
    assert ledger["_status"].tolist().count("failed") == 1

    # staleness: nothing changed yet; then an uncommitted code edit
    fresh = examiner.table(stale=True)
    assert fresh["_stale"].tolist() == [False] * 6 and fresh["_env_changed"].tolist() == [False] * 6
    train = sweep.path / "train.py"
    train.write_text(train.read_text().replace("writer.close()", "writer.close()  # v2"))
    sweep.write(PARAMS.replace("cfg: [a, b]\nseed: [0, 1, 2]", "cfg: [c]\nseed: [0]"), "more.yaml")
    sweep.run("-y", "more.yaml", check=0)
    examiner.exam(output)
    stale = examiner.table(stale=True, name=True).set_index("_name")["_stale"]
    assert stale.notna().all() and not stale["Cfg_c-Seed_0"]
    assert all(stale[n] for n in names)

    # diff: a param, the rendered command, the code edit, metrics side by side
    doc = diff(output, "Cfg_a-Seed_0", "Cfg_c-Seed_0", code=True)
    a_out, c_out = "output/Cfg_a-Seed_0", "output/Cfg_c-Seed_0"
    assert doc["experiments"] == ["Cfg_a-Seed_0", "Cfg_c-Seed_0"]
    assert doc["params"] == {"cfg": ["a", "c"]}
    assert doc["commands"] == {"train": [f"python train.py a 0 {a_out}", f"python train.py c 0 {c_out}"]}
    assert {"path": "train.py", "status": "M"} in doc["code"]["files"]
    assert "+writer.close()  # v2" in doc["code"]["patch"]
    assert "env" not in doc  # same environment
    assert doc["metrics"] == {"val_loss": [4.0, 4.25]}  # Loss/train, acc, step: the same on both sides
    json.dumps(doc)

    # the CLI: a thin renderer over the same data
    res = sweep.mlrunner("diff", "Cfg_a-Seed_0", "Cfg_c-Seed_0", "--json", check=0)
    assert json.loads(res.stdout)["params"] == {"cfg": ["a", "c"]}
    res = sweep.mlrunner("diff", "Cfg_a-Seed_0", str(output / "Cfg_c-Seed_0"), check=0)
    assert "cfg: a -> c" in res.stdout and "M train.py" in res.stdout and "--code" in res.stdout
    res = sweep.mlrunner("diff", "Cfg_a-Seed_0", "Cfg_a-Sed_1")
    assert (
        res.returncode == 2 and "did you mean 'Cfg_a-Seed_1'" in res.stderr and "Traceback" not in res.stderr
    )
    res = sweep.mlrunner(
        "table", "--agg", "seed", "--summary", "val_loss=min", "--summary", "acc=at-min:val_loss", "--json",
        check=0,
    )  # fmt: skip
    rows = json.loads(res.stdout)
    assert [r["_n_failed"] for r in rows] == [0, 1, 0] and rows[0]["val_loss_mean"] == pytest.approx(0.05 / 3)
    res = sweep.mlrunner("table", "--ledger", "--stale", "--csv", "--sort", "-acc", "--name", check=0)
    header = res.stdout.splitlines()[0].split(",")
    assert header[0] == "_name" and {"_env", "_stale", "_env_changed", "_git_commit"} <= set(header)


def test_results_api_gives_plain_data(sweep: Project) -> None:
    output = sweep.path / "output"
    rows = experiments_rows(output, summary={"val_loss": "min"})
    assert len(rows) == 6 and rows[0]["_name"] == "Cfg_a-Seed_0" and rows[0]["_status"] == "finished"
    assert isinstance(rows[0]["_started_at"], str) and rows[0]["_steps"] == 6
    json.dumps(rows)
    got = curves(output, ["val_loss"])
    assert got["metrics"] == ["val_loss"] and got["params"] == ["cfg", "seed"]
    first = got["series"][0]
    assert first["name"] == "Cfg_a-Seed_0" and first["params"] == {"cfg": "a", "seed": 0}
    assert first["step"] == [0, 1, 2, 3, 4, 5] and len(first["value"]) == 6
    bands = curves(output, "val_loss", agg="seed")
    assert [s["members"] for s in bands["series"]][1] == ["Cfg_b-Seed_0", "Cfg_b-Seed_1", "Cfg_b-Seed_2"]
    assert bands["series"][1]["n"] == [3, 3, 2, 2, 2, 2] and bands["series"][0]["params"] == {"cfg": "a"}
    json.dumps(bands, allow_nan=False)
    detail = experiment_detail(output, "Cfg_b-Seed_2")
    assert detail["params"] == {"cfg": "b", "seed": 2} and detail["commands"]["train"].startswith(
        "CUDA_VISIBLE_DEVICES="
    )
    assert detail["env"]["driver"] == "550.54.15" and detail["git"]["vcs"] == "git"
    assert "env.json" in detail["files"] and detail["metrics"]["val_loss"] == pytest.approx(5.34)
    results = Results(output)  # long-lived (a server's): each call sees what is on disk now
    assert len(results.rows()) == 6
    (output / "Cfg_a-Seed_0" / "metrics.jsonl").open("a").write('{"step": 6, "val_loss": 0.5}\n')
    assert results.rows()[0]["val_loss"] == 0.5

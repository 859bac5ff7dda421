"""Results v2 piece by piece (issue 16): metrics.jsonl histories read incrementally,
TensorBoard event files, regex histories, summaries, aggregation, tidy histories, the
environment fingerprint, command lines in diffs, and the terminal table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from fake_gpus import hide_nvidia_smi, install_fake_nvidia_smi
from helpers import cli_env, mlrunner_argv
from tensorboardX import SummaryWriter

from mlrunner import envinfo
from mlrunner.cli import tableview
from mlrunner.errors import UsageError
from mlrunner.examine import Examiner, ExamineWarning
from mlrunner.examine.diffing import command_of
from mlrunner.examine.series import CHECK_BYTES, read_jsonl
from mlrunner.plan import Command, shell_line

HOSTILE = ["with space", "quo'te\"s", "$(touch pwned)", "../..", "[bold red]markup[/]", "x" * 5000]


def experiment(output: Path, name: str, params: dict, **files: str) -> Path:
    exp = output / name
    exp.mkdir(parents=True)
    full = dict(params, _name=name, _output=str(exp), _time="20240101.000000")
    (exp / "param").write_text(yaml.safe_dump(full))
    for file, text in files.items():
        (exp / file.replace("__", ".")).write_text(text)
    return exp


def quiet(examiner: Examiner, output: Path, **kw: object) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExamineWarning)
        examiner.exam(output, **kw)  # type: ignore[arg-type]


# -- metrics.jsonl ------------------------------------------------------------------------


def line(step: int, **more: object) -> str:
    return json.dumps({"step": step, "loss": 1.0 / (step + 1), "pad": "p" * 300, **more}) + "\n"


def test_jsonl_is_read_on_from_where_it_stopped(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(line(s) for s in range(4)) + '{"step": 4, "lo')  # the 5th is being written
    state, hist, last, problem = read_jsonl(str(path), None)
    assert problem is None and hist["loss"][0].tolist() == [0, 1, 2, 3] and last["step"] == 3
    assert state.offset == len("".join(line(s) for s in range(4)).encode())
    # damage a line in the middle, away from the bytes checked: an incremental read cannot see it
    text = path.read_text()
    middle = len(line(0)) + 10
    assert CHECK_BYTES < middle < state.offset - CHECK_BYTES
    path.write_text(text[:middle] + "#" + text[middle + 1 :] + 'ss": 0.2, "acc": 5}\n' + line(5))
    state2, hist2, last2, problem2 = read_jsonl(str(path), state)
    assert problem2 is None  # line 2 was not read again
    assert hist2["loss"][0].tolist() == [0, 1, 2, 3, 4, 5] and hist2["acc"][0].tolist() == [4]
    assert last2["step"] == 5 and last2["acc"] == 5
    # the same file read from the start finds the damage
    _, hist3, _, problem3 = read_jsonl(str(path), None)
    assert problem3 is not None and problem3.startswith("metrics.jsonl: line 2 is not valid JSON (")
    assert hist3["loss"][0].tolist() == [0, 2, 3, 4, 5]
    # a rewritten (shorter, or replaced) file is read from the start
    path.write_text(line(7))
    _, hist4, _, _ = read_jsonl(str(path), state2)
    assert hist4["loss"][0].tolist() == [7]
    replaced = tmp_path / "new"
    replaced.write_text("".join(line(s) for s in range(9)))
    os.replace(replaced, path)
    _, hist5, _, _ = read_jsonl(str(path), state2)
    assert len(hist5["loss"][0]) == 9


def test_jsonl_x_values_odd_values_and_problems(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    records = [
        {"epoch": 0.5, "acc": 0.1, "name": "[b]x[/b]", "ok": True, "nested": {"a": 1, "b": {"c": 2}}},
        {"step": 10, "epoch": 1, "acc": 0.2, "huge": 10**400, "tiny": -(10**400), "none": None},
        {"acc": 0.3, "inf": 1e400},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n[1, 2]\nnot json\n")
    _, hist, last, problem = read_jsonl(str(path), None)
    assert hist["acc"][0].tolist() == [0.5, 10, 2]  # epoch, then step, then the record number
    assert hist["epoch"][0].tolist() == [10]  # epoch is a metric where step is the x
    assert hist["huge"][1].tolist() == [np.inf] and hist["tiny"][1].tolist() == [-np.inf]
    assert hist["nested.b.c"][1].tolist() == [2] and "name" not in hist and "ok" not in hist
    assert last["name"] == "[b]x[/b]" and last["ok"] is True and last["none"] is None
    assert problem == (
        "metrics.jsonl: lines 4, 5 are not JSON objects (line 4: a JSON list, not an object); "
        "write one object per line"
    )


def test_examiner_reads_a_growing_jsonl_incrementally_and_keeps_it_cached(tmp_path: Path) -> None:
    output = tmp_path / "out"
    exp = experiment(output, "run", {"x": 1}, metrics__jsonl="".join(line(s) for s in range(3)))
    examiner = Examiner()
    examiner.exam(output)  # the dir is fresh (racy): not a cache hit next time, but a head start
    text = (exp / "metrics.jsonl").read_text()
    damaged = text[:400] + "#" + text[401:] + line(3)
    (exp / "metrics.jsonl").write_text(damaged)
    examiner.exam(output)
    assert examiner.errors == []  # read on from the offset: the damaged line was not read again
    assert examiner.histories["run"]["loss"][0].tolist() == [0, 1, 2, 3]
    # a new Examiner (a new process) resumes from the cache on disk too
    (exp / "metrics.jsonl").write_text(damaged + line(4))
    again = Examiner()
    again.exam(output)
    assert again.errors == [] and again.histories["run"]["loss"][0].tolist() == [0, 1, 2, 3, 4]
    # finished long ago: a plain cache hit with the whole history
    past = time.time() - 3600
    for f in exp.iterdir():
        os.utime(f, (past, past))
    Examiner().exam(output)
    hit = Examiner()
    hit.exam(output)
    assert hit.histories["run"]["loss"][0].tolist() == [0, 1, 2, 3, 4]


# -- TensorBoard ----------------------------------------------------------------------------


def write_events(where: Path, tag_values: dict[str, list[float]]) -> None:
    writer = SummaryWriter(str(where))
    for tag, values in tag_values.items():
        for step, value in enumerate(values):
            writer.add_scalar(tag, value, step * 10)
    writer.close()


def test_tensorboard_event_files_anywhere_under_the_dir(tmp_path: Path) -> None:
    output = tmp_path / "out"
    exp = experiment(output, "keras like", {"x": 1})
    write_events(exp / "logs" / "train", {"epoch_loss": [3, 2, 1], "Loss/train": [0.5, 0.25]})
    write_events(exp / "logs" / "validation", {"epoch_loss": [4, 3]})
    write_events(exp / "a" / "b" / "c" / "d" / "too deep", {"deep": [1]})
    write_events(exp / ".hidden", {"hidden": [1]})
    examiner = Examiner()
    examiner.exam(output)
    assert examiner.errors == []
    hist = examiner.histories["keras like"]
    assert sorted(hist) == ["Loss/train", "logs/train/epoch_loss", "logs/validation/epoch_loss"]
    assert hist["logs/train/epoch_loss"][0].tolist() == [0, 10, 20]
    assert hist["logs/validation/epoch_loss"][1].tolist() == [4, 3]
    df = examiner.table(summary={"logs/train/epoch_loss": "min"})
    assert df.loc[0, "logs/train/epoch_loss"] == 1 and df.loc[0, "Loss/train"] == 0.25
    # a new event file in a sub-dir changes the dir's fingerprint: no stale cache
    time.sleep(0.01)
    write_events(exp / "logs" / "test", {"test_acc": [0.9]})
    examiner.exam(output)
    assert examiner.histories["keras like"]["test_acc"][1].tolist() == [pytest.approx(0.9)]


def test_missing_tensorboard_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    output = tmp_path / "out"
    exp = experiment(output, "e", {"x": 1}, metrics__jsonl=line(0))
    write_events(exp / "runs", {"a": [1]})
    for name in [m for m in sys.modules if m == "tensorboard" or m.startswith("tensorboard.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    examiner = Examiner()
    with pytest.warns(ExamineWarning, match=r"pip install 'mlrunner\[tensorboard\]'"):
        examiner.exam(output)
    assert "TensorBoard event file runs/events.out.tfevents." in examiner.errors[0]
    assert examiner.table().loc[0, "loss"] == 1.0  # the rest is there
    monkeypatch.delitem(sys.modules, "tensorboard")  # installed now: not served from the cache
    examiner = Examiner()
    examiner.exam(output)
    assert examiner.errors == [] and examiner.table().loc[0, "a"] == 1.0


# -- regex histories, summaries, aggregation, tidy histories ------------------------------------


def test_regex_every_log_history_and_step_group(tmp_path: Path) -> None:
    output = tmp_path / "out"
    experiment(
        output, "e", {"x": 1},
        **{"log__train__20240101.000000": "it 1 loss 0.9\nit 2 loss 0.5\n",
           "log__train__20240101.000000.2": "it 1 loss 0.8\nit 3 loss 0.4\n",  # a retry: the latest
           "log__test__20240101.000100": "loss 0.3\n"},
    )  # fmt: skip
    examiner = Examiner()
    examiner.add_regex("loss", r"loss ([\d.]+)", history=True)
    examiner.add_regex("it", r"it (?P<step>\d+) loss (?P<value>[\d.]+)", log="train", history=True)
    examiner.add_regex("last", r"loss ([\d.]+)")
    examiner.exam(output)
    hist = examiner.histories["e"]
    assert hist["loss"][1].tolist() == [0.8, 0.4, 0.3] and hist["loss"][0].tolist() == [0, 1, 2]
    assert hist["it"][0].tolist() == [1, 3] and hist["it"][1].tolist() == [0.8, 0.4]
    df = examiner.table()
    assert df.loc[0, "loss"] == 0.3 and df.loc[0, "last"] == 0.3 and df.loc[0, "it"] == 0.4


def test_summaries_agg_and_tidy_history_edge_cases(tmp_path: Path) -> None:
    output = tmp_path / "out"
    rows = [{"step": 0, "v": 3.0, "w": 1}, {"step": 1, "v": float("nan"), "w": 2}, {"step": 2, "v": 1.0}]
    text = "\n".join(json.dumps(r) for r in rows) + "\n"
    for i, value in enumerate(HOSTILE[:4]):
        experiment(output, f"e{i}", {"p": value, "seed": i % 2, "step": [i, {"k": "v"}], "_r": i},
                   metrics__jsonl=text, metrics__json=json.dumps({"final": i}))  # fmt: skip
    experiment(output, "empty", {"p": "none", "seed": 0, "step": 0})
    examiner = Examiner()
    quiet(examiner, output)
    s = {"v": "max", "w": "at-min:v", "final": "mean"}
    df = examiner.table(summary=s, name=True).set_index("_name")
    assert df.loc["e0", "v"] == 3.0 and df.loc["e0", "w"] == 2  # w as of step 2: its last point, step 1
    assert df.loc["e0", "final"] == 0 and df.loc["e3", "final"] == 3
    assert df.loc["e0", "_steps"] == 3 and df.loc["empty", "_steps"] == 0 and np.isnan(df.loc["empty", "v"])
    df = examiner.table(summary={"v": "at-max:w", "w": "first"}).iloc[0]
    assert df["v"] == 3.0 and df["w"] == 1  # v's point at step 1 is NaN, left out: as of step 0
    with pytest.raises(UsageError, match=r"unknown summary 'mean:v'") as err:
        examiner.table(summary={"v": "mean:v"})
    with pytest.raises(UsageError, match=r"no experiment has a metric 'vv'") as err:
        examiner.table(summary={"w": "at-min:vv"})
    assert "did you mean 'v'" in str(err.value)
    agg = examiner.table(agg=["p"], summary={"v": "min"})  # list and dict params group fine
    assert len(agg) == 5 and agg["n"].tolist() == [1, 1, 1, 1, 0] and agg["_n_missing"].tolist()[-1] == 1
    by_seed = examiner.table(agg="seed")
    assert len(by_seed) == 5  # p differs in every experiment: no two share a group
    with pytest.raises(UsageError, match="did you mean 'seed'"):
        examiner.table(agg="sed")
    tidy = examiner.history()
    assert list(tidy.columns) == ["_name", "p", "seed", "param.step", "step", "metric", "value"]
    assert tidy[tidy["_name"] == "e1"]["p"].iloc[0] == HOSTILE[1]
    assert tidy["step"].dtype == "int64" and len(tidy) == 4 * (3 + 2)
    with pytest.raises(UsageError, match="did you mean 'w'"):
        examiner.history("ww")
    bands = examiner.history("v", agg=["p", "seed", "step"])
    assert bands["n"].tolist() == [4, 4] and bands["mean"].tolist() == [3.0, 1.0]  # NaN points left out


# -- the environment fingerprint ----------------------------------------------------------------


def test_env_fingerprint_with_fake_gpus_and_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_nvidia_smi(
        monkeypatch, tmp_path, [{"name": "NVIDIA Fake A100"}, {"name": "NVIDIA Fake H100"}]
    )
    env = envinfo.fingerprint(tmp_path)
    assert env["gpus"] == ["NVIDIA Fake A100", "NVIDIA Fake H100"] and env["driver"] == "550.54.15"
    assert env["executable"] and env["packages"]["numpy"] == np.__version__ and "errors" not in env
    real = "NVIDIA H200, 580.159.04\n"  # what a real nvidia-smi on an H200 machine answered
    assert envinfo.probe.parse_nvidia(real) == (["NVIDIA H200"], "580.159.04")
    monkeypatch.setenv("FAKE_NVIDIA_SMI_FAIL", "9")
    broken = envinfo.fingerprint(tmp_path)
    assert broken["gpus"] == [] and "nvidia-smi failed (exit 9)" in broken["errors"][0]
    monkeypatch.delenv("FAKE_NVIDIA_SMI_FAIL")
    hide_nvidia_smi(monkeypatch)
    nowhere = envinfo.fingerprint(tmp_path, path=str(tmp_path / "empty"))
    assert nowhere["python"] is None and nowhere["packages"] == {} and nowhere["gpus"] == []
    assert "no python or python3 on PATH" in nowhere["errors"][0]
    assert envinfo.diff_env(env, nowhere)["packages"]["numpy"] == [np.__version__, None]
    assert envinfo.diff_env(env, env) == {} and envinfo.env_hash(env) != envinfo.env_hash(broken)
    run_copy = envinfo.write_env(env, tmp_path / "run")
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "env.json").write_text("stale")
    envinfo.link_env(run_copy, exp)
    envinfo.link_env(run_copy, exp)
    assert os.path.samefile(run_copy, exp / "env.json") and envinfo.read_env(exp) == env


def test_commands_compare_without_gpus_and_log(tmp_path: Path) -> None:
    for text in ["python train.py --lr 0.1", "echo 'it''s' \"$(date)\" && python x.py | tee y", *HOSTILE]:
        for gpu in ("0", "0,1"):
            line_ = shell_line(Command("c", text), gpu, tmp_path / "o u t" / "log.c.20240101.000000")
            assert command_of(line_) == text
    assert command_of("something else") == "something else" and command_of(3) == 3


# -- the terminal table -------------------------------------------------------------------------


def test_table_view_columns_sort_cells_and_width() -> None:
    cols = ["_name", "lr", "val_loss", "val_acc", "_status", "_git_commit", "_run_id", "_env"]
    assert tableview.pick_columns(cols, ["val_*", "lr"], ["_name"]) == ["_name", "val_loss", "val_acc", "lr"]
    with pytest.raises(UsageError, match="did you mean 'val_acc'"):
        tableview.pick_columns(cols, ["val_ac"])
    assert tableview.sort_spec("-val_loss", cols) == ("val_loss", False)
    assert tableview.sort_spec("lr:desc", cols) == ("lr", False)
    with pytest.raises(UsageError, match="--sort: no column 'lx'"):
        tableview.sort_spec("lx", cols)
    import pandas as pd

    assert tableview.cell("_git_commit", "0123456789abcdef" * 2) == "0123456789"
    assert tableview.cell("_started_at", pd.Timestamp("2024-01-02 03:04:05.123456")) == "2024-01-02 03:04:05"
    assert (
        tableview.cell("_duration_s", 3723.4) == "1h02m03s" and tableview.cell("_duration_s", 62) == "1m02s"
    )
    assert tableview.cell("x", pd.NA) == "" and tableview.cell("x", float("nan")) == ""
    assert tableview.cell("x", 0.123456789) == "0.123457" and tableview.cell("x", "[b]x") == "[b]x"
    headers = ["_name", "lr", "_status", "_git_commit", "_run_id", "_env"]
    rows = [["Lr_0.1", "0.1", "finished", "0123456789", "1", "abcdef0123"]]
    shown, hidden = tableview.fit_width(headers, rows, 50)
    assert [headers[i] for i in shown] == ["_name", "lr", "_status", "_git_commit"]
    assert hidden == ["_run_id", "_env"]


def test_table_in_a_terminal(tmp_path: Path) -> None:
    output = tmp_path / "out"
    for i, value in enumerate(HOSTILE[:5]):
        experiment(output, f"E{i}", {"p": value}, metrics__json=json.dumps({"acc": i / 10}))
    master, slave = os.openpty()
    env = cli_env({"COLUMNS": "100", "LINES": "50", "TERM": "xterm"})
    proc = subprocess.run(
        mlrunner_argv("table", "-o", str(output), "--ledger", "--sort", "-acc"),
        stdout=slave, stderr=subprocess.PIPE, env=env, timeout=60, text=True,
    )  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, proc.stderr
    assert "_name" in screen and "E4" in screen and screen.index("E4") < screen.index("E0")  # sorted
    assert "[bold red]markup[/]" in screen  # a value is text, never markup
    assert "_status" in screen and "more ledger columns" in proc.stderr and "--wide" in proc.stderr
    bad = subprocess.run(mlrunner_argv("table", "-o", str(output), "--summary", "acc=mni"),
                         capture_output=True, text=True, env=cli_env())  # fmt: skip
    assert bad.returncode == 2 and "did you mean 'min'" in bad.stderr and "Traceback" not in bad.stderr

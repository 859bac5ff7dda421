"""The Examiner: 0.5.9's table on 0.5.9-format dirs, parallel == serial, problems, caching,
one-line metrics, and the ledger join."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import textwrap
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import ROOT, Project
from hypothesis import given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from mlrunner.errors import ExamineError, UsageError
from mlrunner.examine import (
    Examiner,
    ExamineWarning,
    Experiment,
    cli_table,
    latest_log,
    parse_regex_options,
    records,
)
from mlrunner.examine.identity import parser_token
from mlrunner.examine.parsers import RegexParser
from mlrunner.expdir import yamlfast

TIME = "20220316.030151"
HOUR_AGO = time.time() - 3600


def write_old_dir(output: Path, name: str, params: dict, logs: dict[str, str] | None = None,
                  stat: dict | None = None, when: str = TIME) -> Path:  # fmt: skip
    """An experiment dir exactly as mlrunner 0.5.9 wrote it (yaml.dump, default Dumper)."""
    exp = output / name
    exp.mkdir(parents=True)
    full = dict(params)
    full.update(_name=name, _time=when, _output=str(exp), _scripts={c: f"python {c}.py" for c in logs or {}})
    with open(exp / "param", "w", encoding="utf-8") as f:
        yaml.dump(full, stream=f, width=1000000)
    for command, text in (logs or {}).items():
        (exp / f"log.{command}.{when}").write_text(text, encoding="utf-8")
    if stat is not None:
        with open(exp / "stat", "w") as f:
            yaml.dump(stat, stream=f)
    return exp


def age(root: Path, seconds_ago: float = 3600) -> None:
    """Make every file look finished long ago (fresh files are never cached: see cache.RACY_NS)."""
    t = time.time() - seconds_ago
    for dirpath, _, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(dirpath, f), (t, t))


class Calls:
    """Parser calls recorded in a file: seen from forked workers too, and a stable closure value."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def add(self, name: str) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(name + "\n")

    def take(self) -> list[str]:
        """The calls since the last take(), in order."""
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        os.remove(self.path)
        return lines


def quiet_exam(examiner: Examiner, *args: object, **kw: object) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExamineWarning)
        examiner.exam(*args, **kw)  # type: ignore[arg-type]


# -- the seed README's example ------------------------------------------------------------

README_SWEEP = [  # dir name, grid params, BLEU in the test log
    ("Norm_new-Moment_0.1", {"norm": "new", "moment": 0.1}, 11.0),
    ("Norm_new-Moment_0.05", {"norm": "new", "moment": 0.05}, 12.3),
    ("Norm_batch-Moment_0.1", {"norm": "batch", "moment": 0.1}, 14.4),
    ("Norm_batch-Moment_0.05", {"norm": "batch", "moment": 0.05}, 16.5),
    ("Norm_batch-EaStop_T", {"norm": "batch", "early-stop": True}, 15.0),
]
DEFAULTS = {"data": "iwslt14", "norm": "batch", "moment": 0.1, "early-stop": False}


def readme_output(root: Path) -> Path:
    output = root / "output"
    for name, grid, bleu in README_SWEEP:
        params = {**DEFAULTS, **grid}
        logs = {
            "train": "epoch 1 | loss 4.2\n",
            "avg": "averaged 5 checkpoints\n",
            "test": f"Generate test with beam=5: BLEU4 = {bleu:.2f}, 45.1/22.3/12.4/7.1\n",
        }
        write_old_dir(output, name, params, logs, stat={"train": "finished", "avg": "finished"})
    return output


def parse_bleu(log: Path) -> float:
    with open(log) as f:
        return float(re.findall(r"BLEU4 = ([\d.]+)", f.read())[-1])


def add_bleu(output_dir: Path, experiment: Experiment, caches: dict) -> None:
    latest_test_log = latest_log("test", output_dir)
    bleu = parse_bleu(latest_test_log)
    experiment.metric["bleu"] = bleu


def test_readme_bleu_example_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = readme_output(tmp_path)
    examiner = Examiner()
    examiner.add(add_bleu)
    examiner.exam(output=str(output), regex=".*")
    df = examiner.table(print_tsv=True)

    # 0.5.9 sorts the headers; the README lists the same columns and rows.
    assert list(df.columns) == ["early-stop", "moment", "norm", "bleu"]
    readme = {
        ("new", 0.1, False, 11.0),
        ("new", 0.05, False, 12.3),
        ("batch", 0.1, False, 14.4),
        ("batch", 0.05, False, 16.5),
        ("batch", 0.1, True, 15.0),
    }
    got = set(df[["norm", "moment", "early-stop", "bleu"]].itertuples(index=False, name=None))
    assert got == readme
    assert len(df) == 5
    # rows in sorted dir-name order
    assert list(examiner.experiments) == sorted(n for n, _, _ in README_SWEEP)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "early-stop\tmoment\tnorm\tbleu"
    assert printed[1] == "True\t0.1\tbatch\t15.0"
    assert len(printed) == 6
    assert examiner.errors == []


# -- 0.5.9 format dirs against a golden table --------------------------------------------


def golden_output(root: Path) -> Path:
    output = root / "golden"
    exps = [
        ("A", {"lr": 0.1, "seed": 1, "opt": "adam", "note": 'it\'s "quoted" $(rm -rf x)', "fixed": 3}, 0.5),
        ("B", {"lr": 0.01, "seed": 1, "opt": "adam", "note": 'it\'s "quoted" $(rm -rf x)', "fixed": 3}, 0.7),
        ("C", {"lr": 0.1, "seed": 2, "opt": "sgd", "note": 'it\'s "quoted" $(rm -rf x)', "fixed": 3}, None),
        ("D x", {"lr": 0.01, "seed": 2, "opt": "sgd", "only_here": "v", "fixed": 3, "flag": True}, 0.9),
        ("E", {"lr": 1, "seed": True, "opt": "sgd", "note": "../x;`id`", "fixed": 3, "flag": 1}, 1.5),
    ]
    for name, params, acc in exps:
        log = "".join(f"epoch {i} acc {acc or 0:.3f}\n" for i in range(3)) if acc is not None else ""
        write_old_dir(output, name, params, {"train": log})
    write_old_dir(output, "F-empty-param", {})  # an experiment whose only params are reserved
    (output / "not-an-experiment").mkdir()  # no param file: skipped, as 0.5.9 did
    (output / "a-file.txt").write_text("x")
    return output


GOLDEN_PARSER = """
import re
def get_acc(path, experiment, caches):
    log = latest_log("train", path)
    if log is None:
        return
    found = re.findall(r"acc ([\\d.]+)", open(log).read())
    if found:
        experiment.metric["acc"] = float(found[-1])
        experiment.metric["n_epochs"] = len(found)
"""


def our_golden_tables(output: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    scope: dict = {"latest_log": latest_log}
    exec(GOLDEN_PARSER, scope)
    examiner = Examiner()
    examiner.add(scope["get_acc"])
    with pytest.warns(ExamineWarning, match="F-empty-param: parser get_acc: no log.train"):
        examiner.exam(str(output))
    return examiner.table(), examiner.table(concise=False), list(examiner.experiments)


def old_golden_tables(
    old_python: Path, output: Path, tmp_path: Path
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    script = tmp_path / "old_examine.py"
    script.write_text(
        "import pickle, sys, mlrunner\nfrom mlrunner.examine import Examiner, latest_log\n"
        f"assert not mlrunner.__file__.startswith({str(ROOT)!r}), mlrunner.__file__\n"
        + GOLDEN_PARSER
        + textwrap.dedent(
            """
            e = Examiner()
            e.add(get_acc)
            e.exam(sys.argv[1])
            with open(sys.argv[2], "wb") as f:
                pickle.dump((e.table(), e.table(concise=False), list(e.experiments)), f)
            """
        )
    )
    result = tmp_path / "old.pkl"
    proc = subprocess.run(
        [str(old_python), str(script), str(output), str(result)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    with open(result, "rb") as f:
        return pickle.load(f)


def by_name(df: pd.DataFrame, names: list[str], order: list[str]) -> pd.DataFrame:
    pos = {n: i for i, n in enumerate(names)}
    return df.iloc[[pos[n] for n in order]].reset_index(drop=True)


def test_golden_table_matches_hard_coded_and_0_5_9(tmp_path: Path, old_python: Path) -> None:
    output = golden_output(tmp_path)
    concise, full, names = our_golden_tables(output)
    assert names == ["A", "B", "C", "D x", "E", "F-empty-param"]
    nan = None
    # concise: keys with more than one distinct (key, value) pair. 'fixed' never varies;
    # 'only_here' has one value, so it is left out although other rows lack it (0.5.9's rule);
    # flag True (D) and 1 (E) are one pair (True == 1), so 'flag' is left out too.
    expected = pd.DataFrame(
        [
            [0.1, 'it\'s "quoted" $(rm -rf x)', "adam", 1, 0.5, 3],
            [0.01, 'it\'s "quoted" $(rm -rf x)', "adam", 1, 0.7, 3],
            [0.1, 'it\'s "quoted" $(rm -rf x)', "sgd", 2, nan, nan],
            [0.01, nan, "sgd", 2, 0.9, 3],
            [1, "../x;`id`", "sgd", True, 1.5, 3],
            [nan, nan, nan, nan, nan, nan],
        ],
        columns=["lr", "note", "opt", "seed", "acc", "n_epochs"],
    )
    assert_frame_equal(concise, expected)
    assert list(full.columns) == [
        "fixed",
        "flag",
        "lr",
        "note",
        "only_here",
        "opt",
        "seed",
        "acc",
        "n_epochs",
    ]
    assert full["only_here"].tolist()[3] == "v"
    assert full["fixed"].tolist()[:5] == [3, 3, 3, 3, 3]

    # and the same tables as 0.5.9's own Examiner, row for row
    old_concise, old_full, old_names = old_golden_tables(old_python, output, tmp_path)
    assert sorted(old_names) == names
    assert_frame_equal(by_name(old_concise, old_names, names), concise)
    assert_frame_equal(by_name(old_full, old_names, names), full)


def test_workers_match_serial_on_golden_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mlrunner.examine.examiner.MIN_PARALLEL", 1)  # fork even for 7 dirs
    output = golden_output(tmp_path)
    scope: dict = {"latest_log": latest_log}
    exec(GOLDEN_PARSER, scope)
    serial, parallel = Examiner(cache=False), Examiner(cache=False)
    serial.add(scope["get_acc"])
    parallel.add(scope["get_acc"])
    quiet_exam(serial, str(output))
    quiet_exam(parallel, str(output), workers=2)
    assert_frame_equal(serial.table(), parallel.table())


def test_list_and_dict_params_do_not_break_concise(tmp_path: Path) -> None:
    write_old_dir(tmp_path, "a", {"layers": [64, 64], "opt": {"name": "adam"}, "x": 1})
    write_old_dir(tmp_path, "b", {"layers": [64, 128], "opt": {"name": "adam"}, "x": 2})
    examiner = Examiner()
    examiner.exam(str(tmp_path))
    df = examiner.table()
    assert list(df.columns) == ["layers", "x"]
    assert df["layers"].tolist() == [[64, 64], [64, 128]]


# -- parallel == serial ---------------------------------------------------------------------


def many_dirs(root: Path, n: int = 48) -> Path:
    output = root / "many"
    for i in range(n):
        lines = "".join(f"step {s} loss {1.0 / (s + i + 1):.5f}\n" for s in range(20))
        if i % 7 == 3:
            lines += "BLEU4 = broken\n"  # the closure parser raises on this one
        write_old_dir(
            output, f"Lr_{i % 4}-Seed_{i:02d} $(echo hi)", {"lr": i % 4, "seed": i}, {"train": lines}
        )
    return output


def make_parsers(scale: float):
    def helper(text: str) -> list[float]:
        return [float(x) for x in re.findall(r"loss ([\d.]+)", text)]

    def closure_parser(path: Path, experiment: Experiment, caches: dict) -> None:
        text = Path(latest_log("train", path)).read_text()
        losses = helper(text)
        caches.setdefault("first_seen", path.name)
        caches[f"n_{path.name}"] = len(losses)
        experiment.metric["best"] = min(losses) * scale
        experiment.cache["pid"] = os.getpid()
        if "broken" in text:
            float("broken")  # raises ValueError

    def uses_earlier(path: Path, experiment: Experiment, caches: dict) -> None:
        experiment.metric["best_x2"] = experiment.metric.get("best", 0) * 2

    return closure_parser, uses_earlier


def test_parallel_equals_serial_with_closure_and_lambda(tmp_path: Path) -> None:
    output = many_dirs(tmp_path)
    results = []
    for workers in (-1, 2):
        closure_parser, uses_earlier = make_parsers(scale=10.0)
        examiner = Examiner(cache=False)
        examiner.add(closure_parser)
        examiner.add(uses_earlier)
        examiner.add(lambda p, e, c: e.metric.__setitem__("name_len", len(p.name)))
        with pytest.warns(ExamineWarning, match="7 of 48 dirs"):
            examiner.exam(str(output), workers=workers)
        pids = {e.cache.pop("pid") for e in examiner.experiments.values()}
        results.append((examiner, pids))
    (serial, serial_pids), (parallel, parallel_pids) = results
    assert serial_pids == {os.getpid()}
    assert parallel_pids and os.getpid() not in parallel_pids  # really forked (one worker may take all)
    assert_frame_equal(serial.table(), parallel.table())
    assert serial.experiments == parallel.experiments
    assert serial.caches == parallel.caches
    assert serial.caches["first_seen"] == "Lr_0-Seed_00 $(echo hi)"
    assert serial.errors == parallel.errors and len(serial.errors) == 7
    assert serial.table()["best_x2"].tolist() == [2 * b for b in serial.table()["best"].tolist()]


def test_unpicklable_results_and_verbose(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    output = many_dirs(tmp_path)

    def keeps_a_lambda(path: Path, experiment: Experiment, caches: dict) -> None:
        experiment.cache["fn"] = lambda: path.name  # cannot come back from a worker, nor be cached
        experiment.metric["n"] = len(path.name)

    tables = []
    for workers in (2, -1):
        examiner = Examiner()
        examiner.add(keeps_a_lambda)
        examiner.add(RegexParser("last_loss", r"loss ([\d.]+)", log="train"))
        with caplog.at_level(logging.INFO, logger="mlrunner.examine"):
            examiner.exam(str(output), workers=workers, verbose=True)
        assert [e.cache["fn"]() for e in examiner.experiments.values()] == list(examiner.experiments)
        assert examiner.exams[0] is keeps_a_lambda and isinstance(examiner.exams[1], RegexParser)
        tables.append(examiner.table())
    assert_frame_equal(tables[0], tables[1])
    assert list(tables[0].columns) == ["lr", "seed", "last_loss", "n"]
    assert [r.getMessage() for r in caplog.records].count("Lr_0-Seed_00 $(echo hi)") == 2


def test_parallel_with_cache_reuses_results(tmp_path: Path) -> None:
    output = many_dirs(tmp_path)
    age(output)
    closure_parser, uses_earlier = make_parsers(scale=1.0)
    first = Examiner()
    first.add(closure_parser)
    first.add(uses_earlier)
    quiet_exam(first, str(output), workers=2)
    calls = Calls(tmp_path / "calls")

    def counting(path: Path, experiment: Experiment, caches: dict) -> None:
        calls.add(path.name)

    second = Examiner()
    second.add(closure_parser)
    second.add(uses_earlier)
    second.add(counting)
    quiet_exam(second, str(output), workers=2)  # a new pipeline: parsed again, in workers
    assert sorted(calls.take()) == sorted(second.experiments) and len(second.experiments) == 48
    third = Examiner()
    for parser in (closure_parser, uses_earlier, counting):
        third.add(parser)
    quiet_exam(third, str(output), workers=-1)  # cached now, but for the dirs where a parser raised
    broken = sorted(n for n in third.experiments if int(n.split("_")[-1].split()[0]) % 7 == 3)
    assert calls.take() == broken and len(broken) == 7
    first.experiments = {k: v._replace(cache={}) for k, v in first.experiments.items()}
    assert_frame_equal(first.table(), third.table())
    assert first.caches == third.caches
    assert first.errors == third.errors


# -- problems: one line per experiment, the rest of the table produced --------------------


def test_missing_logs_and_raising_parser_give_one_line_each(tmp_path: Path) -> None:
    output = readme_output(tmp_path)
    os.remove(output / "Norm_new-Moment_0.1" / f"log.test.{TIME}")
    (output / "Norm_batch-Moment_0.05" / f"log.test.{TIME}").write_text("BLEU4 = n/a\n")
    examiner = Examiner()
    examiner.add(add_bleu)
    examiner.add_regex("bleu_re", r"BLEU4 = ([\d.]+)")
    with pytest.warns(ExamineWarning, match=r"2 of 5 dirs .*the table has the rest"):
        examiner.exam(str(output))
    df = examiner.table()
    assert len(df) == 5
    assert df["bleu"].isna().tolist() == [False, True, False, False, True]
    assert df["bleu_re"].isna().tolist() == [False, True, False, False, True]
    errors = examiner.errors
    assert len(errors) == 2
    assert errors[0].startswith("Norm_batch-Moment_0.05: parser add_bleu raised IndexError: list index out")
    assert "test_examine.py:" in errors[0]
    assert "add_regex('bleu_re'): pattern 'BLEU4 = ([\\\\d.]+)' matched nothing" in errors[0]
    assert errors[1].startswith("Norm_new-Moment_0.1: parser add_bleu raised TypeError")
    assert "[no log.test.* in this dir]" in errors[1]
    # without log=, add_regex reads every command's latest log: here the two that are left
    assert "matched nothing in log.avg.20220316.030151, log.train.20220316.030151" in errors[1]


def test_parser_that_handles_a_missing_log_still_reports_it(tmp_path: Path) -> None:
    output = readme_output(tmp_path)
    os.remove(output / "Norm_new-Moment_0.1" / f"log.test.{TIME}")

    def careful(path: Path, experiment: Experiment, caches: dict) -> None:
        log = latest_log("test", path)
        if log is None:
            return
        experiment.metric["bleu"] = parse_bleu(log)

    examiner = Examiner()
    examiner.add(careful)
    with pytest.warns(ExamineWarning):
        examiner.exam(str(output))
    assert examiner.errors == ["Norm_new-Moment_0.1: parser test_parser_that_handles_a_missing_log_still_"
                               "reports_it.<locals>.careful: no log.test.* in this dir"]  # fmt: skip


def test_bad_param_files_and_odd_entries(tmp_path: Path) -> None:
    output = tmp_path / "out"
    write_old_dir(output, "good", {"x": 1})
    write_old_dir(output, "good2", {"x": 2})
    bad = output / "bad yaml"
    bad.mkdir()
    (bad / "param").write_text("x: 1\ny: [unclosed\n")
    (output / "a list").mkdir()
    (output / "a list" / "param").write_text("- 1\n- 2\n")
    (output / "empty").mkdir()
    (output / "empty" / "param").write_text("")
    hidden = output / ".mlrunner"
    hidden.mkdir()
    (hidden / "param").write_text("x: 99\n")
    (output / "..x").mkdir()
    (output / "..x" / "param").write_text("x: 98\n")
    tuple_dir = output / "tuple"
    tuple_dir.mkdir()
    (tuple_dir / "param").write_text("x: !!python/tuple [1, 2]\n")
    examiner = Examiner()
    with pytest.warns(ExamineWarning):
        examiner.exam(str(output))
    assert list(examiner.experiments) == ["good", "good2", "tuple"]
    assert examiner.table()["x"].tolist() == [1, 2, (1, 2)]
    errors = examiner.errors
    assert len(errors) == 2
    assert errors[0].startswith("a list: param: expected a YAML mapping of params, got list")
    assert errors[1].startswith("bad yaml: param:3: invalid YAML")


def test_re_exam_reflects_removed_and_broken_dirs(tmp_path: Path) -> None:
    output = readme_output(tmp_path)
    examiner = Examiner()
    examiner.add_regex("bleu", r"BLEU4 = ([\d.]+)")
    examiner.exam(str(output))
    assert len(examiner.table()) == 5
    shutil.rmtree(output / "Norm_new-Moment_0.1")
    (output / "Norm_new-Moment_0.05" / "param").write_text("norm: [new\n")
    with pytest.warns(ExamineWarning, match="1 of 1 dirs"):
        examiner.exam(str(output), regex="Norm_new")  # only these dirs: the others keep their rows
    assert list(examiner.experiments) == [
        "Norm_batch-EaStop_T",
        "Norm_batch-Moment_0.05",
        "Norm_batch-Moment_0.1",
    ]
    assert len(examiner.errors) == 1
    assert examiner.errors[0].startswith("Norm_new-Moment_0.05: param:2: invalid YAML (")
    assert examiner.errors[0].endswith("); fix or delete the file")


def test_output_and_regex_errors(tmp_path: Path) -> None:
    with pytest.raises(ExamineError, match="does not exist"):
        Examiner().exam(str(tmp_path / "nope"))
    (tmp_path / "f").write_text("")
    with pytest.raises(ExamineError, match="is a file"):
        Examiner().exam(str(tmp_path / "f"))
    with pytest.raises(ExamineError, match="invalid experiment regex"):
        Examiner().exam(str(tmp_path), regex="([")
    with pytest.raises(ExamineError, match="invalid pattern"):
        Examiner().add_regex("x", "([")


def test_regex_selects_dirs_and_parsers_run_in_order(tmp_path: Path) -> None:
    output = readme_output(tmp_path)
    order: list[str] = []

    def first(path: Path, e: Experiment, c: dict) -> None:
        order.append("first")
        e.metric["v"] = 1

    def second(path: Path, e: Experiment, c: dict) -> None:
        order.append("second")
        e.metric["v"] = e.metric["v"] + 1

    examiner = Examiner(cache=False)
    for parser in (first, second, first):  # adding twice is a no-op
        examiner.add(parser)
    examiner.exam(str(output), regex="^Norm_new")
    assert list(examiner.experiments) == ["Norm_new-Moment_0.05", "Norm_new-Moment_0.1"]
    assert order == ["first", "second"] * 2
    assert examiner.table()["v"].tolist() == [2, 2]


# -- caching ------------------------------------------------------------------------------


def counting_parser(calls: Calls, scale: float = 1.0):
    def parse(path: Path, experiment: Experiment, caches: dict) -> None:
        calls.add(path.name)
        experiment.metric["bleu"] = parse_bleu(latest_log("test", path)) * scale

    return parse


def test_cache_is_reused_and_never_stale(tmp_path: Path) -> None:
    output = readme_output(tmp_path)
    age(output)
    calls = Calls(tmp_path / "calls")
    parser = counting_parser(calls)

    def exam() -> pd.DataFrame:
        examiner = Examiner()
        examiner.add(parser)
        examiner.exam(str(output))
        return examiner.table()

    first = exam()
    assert len(calls.take()) == 5
    assert list((output / ".mlrunner" / "examine-cache").glob("*.pkl"))
    assert_frame_equal(exam(), first)  # a new Examiner: read from the disk cache
    assert calls.take() == []

    # a finished experiment's log changes: only that dir is parsed again
    log = output / "Norm_new-Moment_0.1" / f"log.test.{TIME}"
    log.write_text(log.read_text().replace("11.00", "19.00"))
    table = exam()
    assert calls.take() == ["Norm_new-Moment_0.1"]
    assert table.loc[4, "bleu"] == 19.0
    exam()  # modified just now: never cached (mtime granularity), parsed again
    assert calls.take() == ["Norm_new-Moment_0.1"]

    # same size, mtime moved back to another old value: still a change
    log.write_text(log.read_text().replace("19.00", "17.00"))
    os.utime(log, (HOUR_AGO - 100, HOUR_AGO - 100))
    assert exam().loc[4, "bleu"] == 17.0
    assert calls.take() == ["Norm_new-Moment_0.1"]
    exam()
    assert calls.take() == []

    # a new file in the dir (a new log) invalidates; latest_log picks the newer one
    newer = output / "Norm_new-Moment_0.1" / "log.test.20230101.000000"
    newer.write_text("BLEU4 = 30.00\n")
    os.utime(newer, (HOUR_AGO, HOUR_AGO))
    assert exam().loc[4, "bleu"] == 30.0
    assert calls.take() == ["Norm_new-Moment_0.1"]


def test_changed_parser_code_or_closure_is_not_served_from_cache(tmp_path: Path) -> None:
    output = readme_output(tmp_path)
    age(output)
    calls = Calls(tmp_path / "calls")

    def run(parser) -> pd.DataFrame:
        examiner = Examiner()
        examiner.add(parser)
        examiner.exam(str(output))
        return examiner.table()

    assert run(counting_parser(calls, scale=1.0))["bleu"].tolist()[4] == 11.0
    assert run(counting_parser(calls, scale=2.0))["bleu"].tolist()[4] == 22.0  # closure value differs
    assert len(calls.take()) == 10
    run(counting_parser(calls, scale=2.0))
    assert calls.take() == []

    scope: dict = {"latest_log": latest_log, "parse_bleu": parse_bleu, "K": 1}
    code = "def parse(path, e, c):\n    e.metric['bleu'] = parse_bleu(latest_log('test', path)) * K\n"
    exec(code, scope)
    assert run(scope["parse"])["bleu"].tolist()[4] == 11.0
    scope["K"] = 3  # a global the parser names changed
    assert run(scope["parse"])["bleu"].tolist()[4] == 33.0
    exec(code.replace("* K", "* K + 1"), scope)  # its code changed
    assert run(scope["parse"])["bleu"].tolist()[4] == 34.0


def test_cache_false_runs_user_parsers_every_time_but_caches_builtins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = readme_output(tmp_path)
    age(output)
    regex_calls: list[str] = []
    original = RegexParser.parse_all

    def counting_parse(self: RegexParser, exp_dir: str, names: tuple[str, ...]):
        regex_calls.append(exp_dir)
        return original(self, exp_dir, names)

    monkeypatch.setattr(RegexParser, "parse_all", counting_parse)
    calls = Calls(tmp_path / "calls")
    tables = []
    for _ in range(2):
        examiner = Examiner()
        examiner.add_regex("bleu_re", r"BLEU4 = ([\d.]+)")
        examiner.add(counting_parser(calls), cache=False)
        examiner.add_regex("loss", r"loss ([\d.]+)", log="train")
        examiner.exam(str(output))
        tables.append(examiner.table())
    assert len(calls.take()) == 10  # the user parser ran both times
    assert len(regex_calls) == 10  # the two regexes ran the first time only
    assert_frame_equal(tables[0], tables[1])
    assert tables[1]["loss"].tolist() == [4.2] * 5


def test_unhashable_closure_is_never_cached(tmp_path: Path) -> None:
    output = readme_output(tmp_path)
    age(output)
    calls: list[str] = []
    handle = open(os.devnull)  # noqa: SIM115 - an unpicklable closure value

    def parser(path: Path, experiment: Experiment, caches: dict) -> None:
        calls.append(handle.name)

    try:
        assert parser_token(parser) is None
        for _ in range(2):
            examiner = Examiner()
            examiner.add(parser)
            examiner.exam(str(output))
    finally:
        handle.close()
    assert len(calls) == 10


def test_parser_tokens() -> None:
    calls = Calls(Path("/nonexistent/calls"))
    a = counting_parser(calls, 1.0)
    assert parser_token(a) == parser_token(counting_parser(calls, 1.0))
    assert parser_token(a) != parser_token(counting_parser(calls, 2.0))
    assert parser_token(add_bleu) is not None
    assert parser_token(len) is None
    assert parser_token(RegexParser("x", "y")) == RegexParser("x", "y").token != RegexParser("x", "z").token


# -- one-line metrics ---------------------------------------------------------------------


def test_add_regex(tmp_path: Path) -> None:
    output = tmp_path / "out"
    write_old_dir(
        output, "a", {"x": 1}, {"test": "BLEU4 = 1.5\nBLEU4 = 2.5\nacc=good\n"}, when="20220101.000000"
    )
    (output / "a" / "log.test.20230101.000000").write_text("BLEU4 = 3.5, x\nBLEU4 = 4.5 end\nacc=fine\n")
    write_old_dir(output, "b", {"x": 2}, {"test": "nothing here\n", "train": "loss 0.25\n"})
    examiner = Examiner()
    examiner.add_regex("bleu", r"BLEU4 = ([\d.]+)")
    examiner.add_regex("acc", r"acc=(\w+)")
    examiner.add_regex("whole", r"BLEU4 = [\d.]+ end")
    examiner.add_regex("loss", r"loss ([\d.]+)", log="train")
    examiner.add_regex("never", r"NEVER (\d)")
    with pytest.warns(ExamineWarning):
        examiner.exam(str(output))
    df = examiner.table()
    assert list(df.columns) == ["x", "acc", "bleu", "loss", "never", "whole"]
    assert df.loc[0, "bleu"] == 4.5  # the last match in the latest log
    assert df.loc[0, "acc"] == "fine"  # not a number: the string
    assert df.loc[0, "whole"] == "BLEU4 = 4.5 end"
    assert df.loc[1, "loss"] == 0.25
    assert df["never"].isna().all()
    assert pd.isna(df.loc[0, "loss"])
    assert examiner.errors[0].startswith("a: add_regex('loss'): no log.train.* file; add_regex('never')")
    assert examiner.errors[1].startswith("b: add_regex('bleu'): pattern")


def test_metrics_json_and_jsonl(tmp_path: Path) -> None:
    output = tmp_path / "out"
    a = write_old_dir(output, "a", {"x": 1})
    (a / "metrics.json").write_text(json.dumps({"acc": 0.5, "val": {"loss": 1.25, "n": 3}, "tag": "best"}))
    (a / "metrics.jsonl").write_text('{"step": 1, "acc": 0.6}\n\n{"step": 2, "acc": 0.7}\n\n')
    b = write_old_dir(output, "b", {"x": 2})
    (b / "metrics.jsonl").write_text('{"step": 1, "acc": 0.1}\n{"step": 2, "ac')  # being written
    c = write_old_dir(output, "c", {"x": 3})
    (c / "metrics.json").write_text("[1, 2]")
    (c / "metrics.jsonl").write_text('{"step": 1}\nnot json\n')
    d = write_old_dir(output, "d", {"x": 4})
    (d / "metrics.jsonl").write_text('{"step": 9, "acc": 0.9}')  # a complete last line without \n
    examiner = Examiner()
    with pytest.warns(ExamineWarning):
        examiner.exam(str(output))
    df = examiner.table()
    assert list(df.columns) == ["x", "acc", "step", "tag", "val.loss", "val.n"]
    assert df["acc"].tolist()[:2] == [0.7, 0.1]
    assert df.loc[3, "acc"] == 0.9
    assert df["step"].tolist()[:2] == [2, 1]
    assert df.loc[0, "val.loss"] == 1.25
    assert examiner.errors == [
        "c: metrics.json: expected a JSON object, got a list; metrics.jsonl: line 2 is not valid "
        "JSON (Expecting value: line 1 column 1 (char 0)); write one object per line"
    ]
    plain = Examiner(metrics_files=False)
    plain.exam(str(output))
    assert list(plain.table().columns) == ["x"]


# -- ledger join --------------------------------------------------------------------------


def test_ledger_join_after_a_sweep_with_a_failure_and_a_resume(tmp_path: Path) -> None:
    from mlrunner.ledger import Ledger

    output = tmp_path / "output"
    for name, lr in (("Lr_0.1", 0.1), ("Lr_0.2", 0.2), ("Lr_0.3", 0.3)):
        write_old_dir(output, name, {"lr": lr}, {"train": f"loss {lr}\n"})
    write_old_dir(output, "Old_0.5.9", {"lr": 9.0})  # ran by 0.5.9: not in the ledger
    snap = {"vcs": "git", "commit": "c0ffee" * 6 + "abcd", "dirty": True, "snapshot_id": "s1"}
    with Ledger(output) as ledger:
        tasks = [
            {
                "key": f"k{i}",
                "name": n,
                "output_dir": str(output / n),
                "params": {"lr": i},
                "commands": ["train"],
            }
            for i, n in enumerate(["Lr_0.1", "Lr_0.2", "Lr_0.3"])
        ]
        run1 = ledger.create_run(argv=["run"], cwd=tmp_path, params_path=None, params_text=None,
                                 options={}, snapshot=snap)  # fmt: skip
        ledger.register_tasks(run1, tasks)
        ids = {}
        for task in tasks:
            ids[task["key"]] = ledger.start_attempt(
                run_id=run1, task_key=task["key"], command="train", resource="0", gpus=[0], log_path=None
            )
        ledger.end_attempt(ids["k0"], status="finished", exit_code=0)
        ledger.end_attempt(ids["k1"], status="oom", exit_code=1, failure_class="oom")
        ledger.end_attempt(ids["k2"], status="interrupted", signal=15)
        run2 = ledger.create_run(argv=["run", "--resume"], cwd=tmp_path, params_path=None, params_text=None,
                                 options={}, snapshot=snap)  # fmt: skip
        ledger.register_tasks(run2, [tasks[2]])
        resumed = ledger.start_attempt(run_id=run2, task_key="k2", command="train", resource="1", gpus=[1],
                                       log_path=None)  # fmt: skip
        ledger.end_attempt(resumed, status="finished", exit_code=0)

    examiner = Examiner()
    examiner.add_regex("loss", r"loss ([\d.]+)", log="train")
    with pytest.warns(ExamineWarning, match=r"Old_0\.5\.9: add_regex\('loss'\): no log\.train"):
        examiner.exam(str(output))
    plain = examiner.table()
    df = examiner.table(ledger=True)
    assert_frame_equal(df[list(plain.columns)], plain)
    ledger_columns = ["_status", "_git_commit", "_git_dirty", "_run_id", "_started_at", "_duration_s",
                      "_resource", "_attempts", "_code_changed", "_failure", "_env"]  # fmt: skip
    assert list(df.columns) == list(plain.columns) + ledger_columns
    assert df["_status"].tolist()[:3] == ["finished", "failed", "finished"]
    assert df["_failure"].tolist()[:3] == [None, "oom", None]
    assert df["_run_id"].tolist()[:3] == [run1, run1, run2]
    assert df["_attempts"].tolist()[:3] == [1, 1, 2]
    assert df["_resource"].tolist()[:3] == ["0", "0", "1"]
    assert df["_git_commit"].tolist()[:3] == [snap["commit"]] * 3
    assert df["_git_dirty"].tolist()[:3] == [True] * 3
    assert df["_code_changed"].tolist()[:3] == [False] * 3
    assert (df["_duration_s"][:3] >= 0).all()
    started = df["_started_at"][0]
    assert isinstance(started, pd.Timestamp) and abs(started - pd.Timestamp.now()) < pd.Timedelta(minutes=5)
    old = df.iloc[3]  # the 0.5.9 dir: missing values everywhere
    assert old["_status"] is None and pd.isna(old["_run_id"]) and pd.isna(old["_started_at"])
    assert pd.isna(old["_git_dirty"]) and pd.isna(old["_duration_s"])
    json.dumps(records(df))  # JSON-able for `mlrunner table --json`


TRAIN = """
import json, os, sys
lr, out = float(sys.argv[1]), sys.argv[2]
print(f"loss {lr / 10}")
if lr == 0.2 and not os.path.exists("fixed"):
    sys.exit("diverged")
with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump({"final_loss": lr / 10}, f)
"""


def test_ledger_join_after_a_real_sweep_with_a_failure_and_a_resume(project: Project) -> None:
    project.write(TRAIN, "train.py")
    project.write(
        """
        template:
          train: python train.py {lr} {_output}
        default: {}
        resource: [0, 1]
        ---
        lr: [0.1, 0.2, 0.3]
        """
    )
    assert project.run().returncode != 0  # lr 0.2 failed
    output = project.path / "output"
    examiner = Examiner()
    examiner.add_regex("loss", r"loss ([\d.]+)", log="train")
    examiner.exam(output)
    assert examiner.errors == []  # a dir without metrics.json is no problem
    df = examiner.table(ledger=True, name=True)
    assert df["_name"].tolist() == ["Lr_0.1", "Lr_0.2", "Lr_0.3"]
    assert df["_status"].tolist() == ["finished", "failed", "finished"]
    assert df["loss"].tolist() == [0.01, 0.02, 0.03]  # the failed run's log is still parsed
    assert pd.isna(df.loc[1, "final_loss"]) and df.loc[0, "final_loss"] == 0.01
    assert df["_attempts"].tolist() == [1, 1, 1]

    (project.path / "fixed").write_text("")
    project.run("--resume", check=0)
    examiner.exam(output)  # the same Examiner, again: the resumed dir is parsed again
    df = examiner.table(ledger=True)
    assert df["_status"].tolist() == ["finished"] * 3
    assert df["final_loss"].tolist() == [0.01, 0.02, 0.03]
    assert df["_attempts"].tolist() == [1, 2, 1]
    assert df["_run_id"].tolist() == [1, 1, 1] and df["_failure"].isna().all()  # resumed in run 1
    assert examiner.errors == []


def test_ledger_join_without_a_ledger_gives_missing_values(tmp_path: Path) -> None:
    output = readme_output(tmp_path)
    examiner = Examiner()
    examiner.exam(str(output))
    df = examiner.table(ledger=True, name=True)
    assert df["_name"].tolist() == sorted(n for n, _, _ in README_SWEEP)
    assert df["_status"].isna().all() and df["_run_id"].isna().all() and df["_started_at"].isna().all()


# -- the CLI's function -------------------------------------------------------------------


def test_cli_table_and_regex_options(tmp_path: Path) -> None:
    output = readme_output(tmp_path)
    os.remove(output / "Norm_new-Moment_0.1" / f"log.test.{TIME}")
    regexes = parse_regex_options(["bleu=BLEU4 = ([\\d.]+)", " loss = loss ([\\d.]+)"], ["test", "train"])
    assert regexes == [("bleu", "BLEU4 = ([\\d.]+)", "test"), ("loss", " loss ([\\d.]+)", "train")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the CLI shows the problems itself
        df = cli_table(str(output), regexes, ledger=True, name=True)
    assert list(df.columns[:6]) == ["_name", "early-stop", "moment", "norm", "bleu", "loss"]
    assert df["bleu"].isna().sum() == 1
    assert df.attrs["errors"] == ["Norm_new-Moment_0.1: add_regex('bleu'): no log.test.* file"]
    rows = records(df)
    assert rows[4]["bleu"] is None and rows[0]["bleu"] == 15.0 and rows[0]["_status"] is None
    assert parse_regex_options(["a=x"], []) == [("a", "x", None)]  # every log
    assert parse_regex_options(["a=x", "b=y"], ["train"]) == [("a", "x", "train"), ("b", "y", "train")]
    with pytest.raises(UsageError, match="not NAME=PATTERN"):
        parse_regex_options(["bleu"], [])
    with pytest.raises(UsageError, match="2 --regex but 3 --log"):
        parse_regex_options(["a=1", "b=2"], ["x", "y", "z"])


def test_latest_log(tmp_path: Path) -> None:
    exp = write_old_dir(tmp_path, "e", {"x": 1}, {"test": "1"}, when="20220101.000000")
    (exp / "log.test.20230101.000000").write_text("2")
    (exp / "log.testing.20240101.000000").write_text("other command")
    assert latest_log("test", exp) == exp / "log.test.20230101.000000"
    assert latest_log("test", str(exp), index=0) == exp / "log.test.20220101.000000"
    assert latest_log("test", exp, index=-3) is None
    assert latest_log("train", exp) is None
    assert latest_log("test", tmp_path / "missing") is None
    with pytest.raises(TypeError):
        latest_log("test", exp, index="0")  # type: ignore[arg-type]


# -- the fast param reader is exact or declines ---------------------------------------------


def same(a: object, b: object) -> bool:
    """Equal with the same types all the way down (True is not 1), NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)  # type: ignore[index]
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    if isinstance(a, float) and a != a:
        return b != b
    return a == b


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["yes", "No", "on", "~", "null", "1:30", "0x1F", "0o17", "1_000", "2022-01-01", ".inf",
                     "-.NaN", "1e3", "+1", "'", "''", "a: b", "a #b", "#x", "- x", "-x", "x:", "é", "=", "<<",
                     "@x", "`x", "%x", "!x", "&x", "*x", "|", ">", "?x", "? x", " x", "x ", "a\tb", "a\nb"]),
)  # fmt: skip
keys = st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,12}", fullmatch=True), st.text(max_size=8))
params = st.dictionaries(
    keys,
    st.one_of(scalars, st.dictionaries(keys, scalars, max_size=3), st.lists(scalars, max_size=3)),
    max_size=8,
)


@settings(max_examples=80, deadline=None)
@given(params, st.booleans())
def test_fast_param_reader_is_exact_or_declines(data: dict, ours_dumper: bool) -> None:
    if ours_dumper:  # mlrunner 1.x's param writer
        text = yaml.dump(data, Dumper=yaml.CSafeDumper, width=1_000_000, allow_unicode=True, sort_keys=False)
    else:  # 0.5.9's
        text = yaml.dump(data, width=1000000)
    fast = yamlfast.load(text)
    if fast is not None:
        assert same(fast, yaml.load(text, Loader=yaml.CSafeLoader)), text


def test_fast_param_reader_on_hand_written_yaml() -> None:
    cases = [
        "a: yes\nb: 0x1F\nc: 1:30\nd: 2022-01-01\ne: .inf\nf: ~\ng: 'it''s'\nh:\ni: -1\nj: 1_000\n",
        "_scripts:\n  train: python t.py > out/log.train.1 2>&1\n  test:\nlr: 0.1\n",
        "name: a b  c\nurl: http://x/y?z=1\nneg: -x\ny: 1\n",
    ]
    for text in cases:
        assert same(yamlfast.load(text), yaml.safe_load(text)), text
    declined = ["a: x #c\n", "a: [1, 2]\n", "a:\n- 1\n", 'a: "x"\n', "yes: 1\n", "a: &x 1\n", "---\na: 1\n",
                "a:\n    b: 1\n", "a: 'x\n  y'\n", "", "a: b\n\tc: d\n", "1: x\n"]  # fmt: skip
    for text in declined:
        assert yamlfast.load(text) is None, text

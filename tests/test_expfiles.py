"""The param/stat files: the fast YAML writer matches the dumper, and the delayed Writer."""

from __future__ import annotations

import math
import random
import threading
import time
from pathlib import Path

import pytest
import yaml

from mlrunner.expdir import files as expfiles

HOSTILE = [
    "plain",
    "with space",
    "CUDA_VISIBLE_DEVICES=0 python train.py --lr 0.1 > out/log.main 2>&1",
    "$(rm -rf /)",
    "`id`",
    "a: b",
    "a:b",
    "ends:",
    "# comment",
    "a #b",
    "a#b",
    "'quoted'",
    '"double"',
    "it's",
    "..",
    "../up",
    "---",
    "...",
    "- item",
    "-flag",
    "--flag",
    "?q",
    "[list]",
    "{map}",
    "a,b",
    "&anchor",
    "*alias",
    "!tag",
    "|",
    ">",
    "%x",
    "@at",
    "yes",
    "No",
    "on",
    "OFF",
    "true",
    "False",
    "null",
    "NULL",
    "~",
    "",
    " lead",
    "trail ",
    "1",
    "1.5",
    "1e3",
    "1.0e+3",
    ".inf",
    "-.inf",
    ".nan",
    "0x1F",
    "0o17",
    "0b101",
    "1_000",
    "12:30:00",
    "2026-11-28",
    "2001-12-14t21:59:43.10-05:00",
    "=",
    "<<",
    "tab\there",
    "line\nbreak",
    "é",
    "日本",
    "back\\slash",
    "x" * 5000,
]
VALUES = [0, -3, 2**70, 0.5, 1e-05, 1e17, -0.0, 2.5e-10, 1 / 3]
VALUES += [math.inf, -math.inf, math.nan, True, False, None]


def check(data: dict) -> bool:
    """The fast writer either declines or writes exactly what the dumper writes."""
    fast = expfiles._simple_yaml(data)
    if fast is None:
        return False
    assert fast == expfiles.dump_yaml(data), data
    return True


def test_param_text_equals_the_dumper_on_hostile_strings() -> None:
    plain = 0
    for s in HOSTILE:
        plain += check({"k": s})
        plain += check({s: 1}) if s else 0
        plain += check({"_scripts": {"main": s}})
    for v in VALUES:
        assert check({"v": v, "_scripts": {"main": "python train.py"}})
    assert plain > 10  # the fast path is taken for the ordinary ones
    assert not check({"k": [1, 2]}) and not check({"_scripts": {}}) and not check({1: "a"})


def test_param_text_fuzz_against_the_dumper() -> None:
    rng = random.Random(7)
    pieces = list("ab Z09_-./:#'\"$()=&|><,!?*@%`~[]{}\\+;eE")
    pieces += ["yes", "null", "1.5", "2020-01-01", ": ", " #"]
    taken = 0
    for _ in range(30000):
        s = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        if check({"k": s}):
            taken += 1
            assert yaml.safe_load(expfiles.param_text({"k": s}))["k"] == s
    assert taken > 1000


def test_param_text_of_a_real_param() -> None:
    params = {
        "lr": 0.05,
        "norm": "batch",
        "early-stop": False,
        "_name": "Lr_0.05-Norm_batch",
        "_output": "output/Lr_0.05-Norm_batch",
        "_time": "20261128.175703",  # a float to YAML: quoted, by the dumper
        "_scripts": {"main": "CUDA_VISIBLE_DEVICES=0 python train.py > output/log 2>&1"},
    }
    text = expfiles.param_text(params)
    assert text == expfiles.dump_yaml(params)
    assert yaml.safe_load(text) == params


def test_writer_delayed_write_is_replaced_by_a_later_one(tmp_path: Path) -> None:
    w = expfiles.Writer()
    w.stat(str(tmp_path), {"main": "running"}, delay=0.2)
    w.stat(str(tmp_path), {"main": "finished"})  # at once: the pending 'running' is dropped
    time.sleep(0.4)
    assert (tmp_path / "stat").read_text() == "main: finished\n"
    w.close()


def test_writer_delayed_write_happens_after_the_delay(tmp_path: Path) -> None:
    w = expfiles.Writer()
    w.stat(str(tmp_path), {"main": "running"}, delay=0.05)
    assert not (tmp_path / "stat").exists()
    deadline = time.monotonic() + 5
    while not (tmp_path / "stat").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (tmp_path / "stat").read_text() == "main: running\n"
    w.close()
    assert not any(t.name == "mlrunner-files" for t in threading.enumerate())


def test_writer_close_writes_what_is_pending(tmp_path: Path) -> None:
    w = expfiles.Writer()
    w.stat(str(tmp_path), {"a": "running"}, delay=60)
    w.param(str(tmp_path), {"x": 1})
    w.close()
    assert (tmp_path / "stat").read_text() == "a: running\n"
    assert (tmp_path / "param").read_text() == "x: 1\n"


def test_writer_failed_delayed_write_is_raised_by_the_next_call(tmp_path: Path) -> None:
    w = expfiles.Writer()
    w.stat(str(tmp_path / "gone"), {"a": "running"}, delay=0.01)  # its dir does not exist
    time.sleep(0.3)
    with pytest.raises(FileNotFoundError):
        w.stat(str(tmp_path), {"a": "finished"})
    w.stat(str(tmp_path), {"a": "finished"})  # raised once; the writer goes on
    w.close()
    assert (tmp_path / "stat").read_text() == "a: finished\n"


def test_writer_failed_delayed_write_is_raised_by_close(tmp_path: Path) -> None:
    w = expfiles.Writer()
    gone = tmp_path / "gone"
    w.stat(str(gone), {"a": "running"}, delay=0.01)  # its dir does not exist
    time.sleep(0.3)
    with pytest.raises(FileNotFoundError):
        w.close()

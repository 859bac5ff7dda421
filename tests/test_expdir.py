"""The experiment dir: the fast YAML writer matches the dumper, the fast reader matches
PyYAML (one set of rules, a round-trip property), the one ``param`` reader, the stat words,
log names, and the delayed Writer."""

from __future__ import annotations

import math
import random
import threading
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlrunner import expdir
from mlrunner.expdir import files as expfiles
from mlrunner.expdir import yamlfast
from mlrunner.status import AttemptStatus

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


def same(a: object, b: object) -> bool:
    """Equal with the same types all the way down (True is not 1), NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)  # type: ignore[index]
    if isinstance(a, float) and a != a:
        return b != b
    return a == b


def check(data: dict) -> bool:
    """The fast writer either declines or writes exactly what the dumper writes."""
    fast = yamlfast.dump(data)
    if fast is None:
        return False
    assert fast == yamlfast.dump_yaml(data), data
    assert same(yamlfast.load(fast), yaml.safe_load(fast)), fast
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
    assert not check({"k": "\U0001f600"})  # libyaml quotes what is outside the BMP


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
    assert text == yamlfast.dump_yaml(params)
    assert yaml.safe_load(text) == params


# -- one set of rules: fast dump -> fast load == safe_load == the input -----------------------

HOSTILE_PIECES = list("aZ09 _-./:#'\"()=&|>,!?*@%`~[]{}\\+;eE\n\t")
HOSTILE_PIECES += ["$(", "é", "日本", "\xa0", "\x85", "\u2028", "\ufeff", "\U0001f600", "yes", "on", "null"]
HOSTILE_PIECES += ["1.5", "0x1F", "2020-01-01", "12:30:00", ": ", " #", "---", "..."]
hostile_text = st.one_of(
    st.sampled_from(HOSTILE),
    st.lists(st.sampled_from(HOSTILE_PIECES), max_size=6).map("".join),
    st.text(max_size=20),
    st.integers().map(str),
    st.floats().map(repr),
    st.datetimes().map(str),
    st.dates().map(str),
    st.sampled_from(["x" * 4096, "x" * 4097, "a b " * 2000, "k" * 127, "k" * 128]),
)
key_text = st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,12}", fullmatch=True), hostile_text)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    hostile_text,
)
scripts = st.dictionaries(key_text, hostile_text, min_size=1, max_size=4)
param_maps = st.builds(
    lambda top, extra: {**top, **extra},
    st.dictionaries(key_text, scalar, max_size=8),
    st.one_of(st.just({}), st.builds(lambda s: {"_scripts": s}, scripts)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(param_maps)
def test_param_round_trip_property(data: dict) -> None:
    """Whatever mlrunner writes: the fast writer is the dumper or declines; the fast reader
    reads everything the fast writer writes, and reads it back as the input, as PyYAML does."""
    text = expfiles.param_text(data)
    assert text == yamlfast.dump_yaml(data)
    assert same(yaml.safe_load(text), data), text
    fast = yamlfast.dump(data)
    loaded = yamlfast.load(text)
    if fast is not None:
        assert fast == text
        assert loaded is not None, text  # the reader reads what the writer writes: the same rules
    if loaded is not None:
        assert same(loaded, data), text


@settings(max_examples=300, deadline=None)
@given(hostile_text)
def test_plain_is_what_the_dumper_writes_plain(text: str) -> None:
    """yamlfast.plain agrees with the emitter: a plain string is written as it is (or
    single-quoted for its implicit type), and read back by both readers."""
    dumped = yamlfast.dump_yaml({"k": text})
    if yamlfast.plain(text):
        expected = text if yamlfast.tag(text) == yamlfast.STR_TAG else "'" + text.replace("'", "''") + "'"
        assert dumped == f"k: {expected}\n"
        assert yamlfast.load(dumped) == {"k": text}


def test_the_fast_paths_are_taken_for_the_ordinary_shape() -> None:
    script = "CUDA_VISIBLE_DEVICES=0 python train.py --lr 0.1 > output/x/log 2>&1"
    params = {"lr": 0.1, "norm": "batch", "n": 3, "flag": True, "none": None, "_time": "20261128.175703",
              "_name": "Lr_0.1-Norm_batch", "_output": "output/Lr_0.1-Norm_batch", "path": "ünïcode/dir",
              "_scripts": {"main": script}}  # fmt: skip
    text = yamlfast.dump(params)
    assert text is not None and text == yamlfast.dump_yaml(params)
    assert yamlfast.load(text) == params
    assert yamlfast.dump({"s": AttemptStatus.FINISHED}) == "s: finished\n"  # str enums: their text
    assert yamlfast.dump_yaml({"s": [AttemptStatus.LOST]}) == "s:\n- lost\n"


# -- the one param reader --------------------------------------------------------------------


def test_read_param_shapes(tmp_path: Path) -> None:
    problems: list[str] = []
    assert expdir.read_param(tmp_path / "missing", problems) is None and problems == []
    cases = {
        "ok": ("a: 1\n_scripts:\n  main: python t.py\n", {"a": 1, "_scripts": {"main": "python t.py"}}, None),
        "slow": ('a: "x"\nb: [1, 2]\n', {"a": "x", "b": [1, 2]}, None),
        "tuple": ("a: !!python/tuple [1, 2]\n", {"a": (1, 2)}, None),  # 0.5.9 read with FullLoader
        "empty": ("", None, None),
        "list": ("- 1\n", None, "param: expected a YAML mapping of params, got list"),
        "bad": ("a: 1\nb: [\n", None, "param:3: invalid YAML ("),
    }
    for name, (text, expected, problem) in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "param").write_text(text)
        problems = []
        assert expdir.read_param(tmp_path / name, problems) == expected, name
        assert expdir.read_param(tmp_path / name) == expected, name
        if problem is None:
            assert problems == [], name
        else:
            assert len(problems) == 1 and problems[0].startswith(problem), (name, problems)
    (tmp_path / "bytes").mkdir()
    (tmp_path / "bytes" / "param").write_bytes(b"a: \xff\n")
    problems = []
    assert expdir.read_param(tmp_path / "bytes", problems) is None
    assert problems[0].startswith("cannot read param: ")


def test_read_param_reads_what_the_writer_wrote(tmp_path: Path) -> None:
    params = {"lr": 0.5, "s": "yes", "_scripts": {"main": "a: b # c"}, "t": "2020-01-01"}
    w = expdir.Writer()
    w.param(str(tmp_path), params)
    w.close()
    assert expdir.read_param(tmp_path) == params


def test_stat_words_and_log_names() -> None:
    stat = {str(s): s for s in AttemptStatus}
    text = expdir.stat_text(stat)
    words = yaml.safe_load(text)
    assert set(words.values()) == {"finished", "failed", "running", "interrupted"}  # 0.5.9's words
    assert words["oom"] == "failed" and words["lost"] == "interrupted" and words["preempted"] == "interrupted"
    assert expdir.stat_text({"a": "weird"}) == "a: weird\n"
    assert expdir.log_name("train", "20240102.030405") == "log.train.20240102.030405"
    names = ["log.train.2", "log.test.1", "log.train.1", "param", "log.trainer.0"]
    assert expdir.log_names(names, "train") == ["log.train.1", "log.train.2"]


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

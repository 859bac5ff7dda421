"""Planning: grid expansion, aliases, dedup, 0.5.9 names made safe, rendering that bash reads literally."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import subprocess
import sys
import textwrap
import unicodedata
from pathlib import Path

import pytest
from helpers import README_EXAMPLE
from hypothesis import given, settings
from hypothesis import strategies as st

from mlrunner.errors import SpecError, UsageError
from mlrunner.expdir import log_name
from mlrunner.plan import (
    EMPTY_NAME,
    Command,
    experiment_name,
    legacy_name,
    plan,
    safe_name,
    shell_line,
)
from mlrunner.spec import parse_spec

TIME = "20240102.030405"


def make_plan(text: str, **kw):
    kw.setdefault("time", TIME)
    return plan(parse_spec(textwrap.dedent(text)), **kw)


def canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- the README example
def test_readme_example_plans_5_tasks_15_commands() -> None:
    p = plan(parse_spec(README_EXAMPLE), output="output", time=TIME)
    assert (len(p.tasks), p.n_commands, p.orphans, p.warnings) == (5, 15, (), ())
    assert [t.name for t in p.tasks] == [
        "Norm_new-Moment_0.1",
        "Norm_new-Moment_0.05",
        "Norm_batch-Moment_0.1",
        "Norm_batch-Moment_0.05",
        "Norm_batch-EaStop_T",  # norm=batch,early-stop=False is norm=batch,moment=0.1 again: skipped
    ]
    assert [t.index for t in p.tasks] == [0, 1, 2, 3, 4]
    first = p.tasks[0]
    assert first.output_dir == "output/Norm_new-Moment_0.1"
    assert first.params == {"norm": "new", "moment": 0.1, "data": "iwslt14", "early-stop": False}
    assert first.grid_params == {"norm": "new", "moment": 0.1}
    assert first.gpus == 1
    assert first.commands == (
        Command(
            "train",
            "python train.py data-bin/iwslt14 --save-dir output/Norm_new-Moment_0.1 --norm new --moment 0.1",
        ),
        Command(
            "avg",
            "python checkpoint_avg.py --inputs output/Norm_new-Moment_0.1 --num 5 "
            "--output output/Norm_new-Moment_0.1/avg.pt",
        ),
        Command(
            "test", "python generate.py data-bin/iwslt14 --beam 5 --path output/Norm_new-Moment_0.1/avg.pt"
        ),
    )
    assert p.tasks[4].commands[0].text.endswith("--norm batch --moment 0.1 --early-stop")


def test_key_is_sha256_of_params_templates_and_output_dir_not_time() -> None:
    spec = parse_spec(README_EXAMPLE)
    p = plan(spec, output="out dir", time=TIME)
    t = p.tasks[1]
    expected = canonical([t.params, [[c.name, spec.template_map[c.name]] for c in t.commands], t.output_dir])
    assert t.key == hashlib.sha256(expected.encode()).hexdigest()
    assert [x.key for x in plan(spec, output="out dir", time="19990101.000000").tasks] == [
        x.key for x in p.tasks
    ]
    assert len({x.key for x in p.tasks}) == 5
    assert plan(spec, output="elsewhere", time=TIME).tasks[1].key != t.key
    assert plan(spec, output="out dir", commands=["train"], time=TIME).tasks[1].key != t.key


# --------------------------------------------------------------------------- 0.5.9 names
GOLDEN = [  # (grid params, the name mlrunner 0.5.9's spec2name gives them), cwd = fixture below
    ({"norm": "new", "moment": 0.1}, "Norm_new-Moment_0.1"),
    ({"norm": "batch", "early-stop": False}, "Norm_batch-EaStop_F"),
    ({"early-stop": True}, "EaStop_T"),
    ({"learning_rate": 1e-05}, "LeRate_1e-05"),
    ({"a_b_c": 1}, "abC_1"),
    ({"lr2x": 3}, "Lr2X_3"),
    ({"n": 100000000000000000000}, "N_1e+20"),
    ({"big": 123456789}, "Big_1.23457e+08"),
    ({"f": 0.30000000000000004}, "F_0.3"),
    ({"neg": -2.5}, "Neg_-2.5"),
    ({"inf": math.inf}, "Inf_inf"),
    ({"x": 1.0}, "X_1"),
    ({"my-very-long-key-name": "v"}, "myVeLoKeName_v"),
    ({"ab-cd": 1}, "abCd_1"),
    ({"a_bb_ccc_dddd": "z"}, "abbCcDddd_z"),
    ({"data": "data/cifar"}, "Data_cifar"),  # an existing path: its basename
    ({"data": "data/cifar/"}, "Data_"),
    ({"ckpt": "model.pt"}, "Ckpt_model.pt"),
    ({"ckpt": "./missing/model.pt"}, "Ckpt_missing_model.pt"),
    ({"p": "../../etc/passwd"}, "P_etc_passwd"),
    ({"p": "/abs/path/x"}, "P_abs_path_x"),
    ({"p": "..."}, "P_"),
    ({"p": ""}, "P_"),
    ({"s": "with space"}, "S_with space"),
    ({"s": "ünïcødé"}, "S_ünïcødé"),
    ({"s": "x" * 120 + "_end"}, "S_" + "x" * 96 + "_end"),  # the last 100 characters
    ({"UPPER_case": "Mixed"}, "UpCase_Mixed"),
    ({"k": "a/b/c"}, "K_a_b_c"),
    ({"k": "$(touch pwned)"}, "K_$(touch pwned)"),
    ({"arch": "preln", "seed": 0}, "Arch_preln-Seed_0"),
]


@pytest.fixture
def name_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cwd where data/cifar and model.pt exist (0.5.9 names an existing path by its basename)."""
    (tmp_path / "data" / "cifar").mkdir(parents=True)
    (tmp_path / "model.pt").write_text("")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _random_case(rng: random.Random) -> dict:
    keys = [
        "lr",
        "learning_rate",
        "early-stop",
        "a_b",
        "x-y_z",
        "ABC_def",
        "k2",
        "data",
        "n_layers-max",
        "é_ü",
    ]
    strings = ["new", "data/cifar", "model.pt", "./model.pt", "../up", "/abs/x", ".hidden", "a b", "ü/ß",
               "x" * 150, "", "...", "a\nb", "T", "1", "dir/", "$(x)", "1e-3"]  # fmt: skip
    case = {}
    for key in rng.sample(keys, rng.randint(1, 4)):
        kind = rng.randrange(5)
        if kind == 0:
            case[key] = rng.choice(strings) + rng.choice(["", "/", "_x", "/y"])
        elif kind == 1:
            case[key] = rng.randint(-(10**12), 10**12) // rng.choice([1, 10**6, 10**11])
        elif kind == 2:
            case[key] = rng.choice([0.1, 1e-7, 1.0000001e-7, 2.5e10, -0.0, 123456.789, 1 / 3, 1e300])
        elif kind == 3:
            case[key] = rng.random() < 0.5
        else:
            case[key] = rng.choice(["", "-", "_"]).join(rng.choice(keys) for _ in range(2))
    return case


def test_names_match_059(name_cwd: Path, old_python: Path) -> None:
    cases = [c for c, _ in GOLDEN]
    expected = [n for _, n in GOLDEN]
    rng = random.Random(20240102)
    extra = [_random_case(rng) for _ in range(300)]
    # also ask 0.5.9 itself, the golden table included
    script = (
        "import json, sys\n"
        "from mlrunner.utils.misc import spec2name\n"
        "print(json.dumps([spec2name(c, 100) for c in json.load(sys.stdin)]))\n"
    )
    out = subprocess.run(
        [str(old_python), "-c", script],
        input=json.dumps(cases + extra),
        capture_output=True,
        text=True,
        cwd=name_cwd,
        check=True,
    ).stdout
    live = json.loads(out)
    assert live[: len(cases)] == expected
    cases, expected = cases + extra, live
    assert [legacy_name(c) for c in cases] == expected
    for case, name in zip(cases, expected, strict=True):
        ours = experiment_name(case)
        if name and "/" not in name and "\n" not in name and not name.startswith("."):
            assert ours == name  # a safe 0.5.9 name is kept unchanged
        else:
            assert ours != name and len(ours) <= 255


def test_unsafe_names_are_sanitised_with_a_hash_suffix(name_cwd: Path) -> None:
    assert experiment_name({}) == EMPTY_NAME
    long = experiment_name({f"k{i}": "v" * 100 for i in range(5)})
    assert len(long.encode()) == 255 and long.startswith("K0_vvvv")
    assert long[-17] == "-" and all(c in "0123456789abcdef" for c in long[-16:])
    wide = experiment_name({"k": "ü" * 100, "j": "中" * 100})  # multi-byte: cut at a character boundary
    assert len(wide.encode()) <= 255 and wide.encode().decode() == wide
    assert experiment_name({"a/b": 1}).startswith("A_B_1-")
    assert experiment_name({".x": 1}).startswith("_X_1-")
    assert experiment_name({"k": "a\nb"}).startswith("K_a_b-")
    assert experiment_name({"k": "a\x00b\x85c\u2028d"}).startswith("K_a_b_c_d-")
    assert experiment_name({"k": "a\nb"}) != experiment_name({"k": "a_b"}) == "K_a_b"
    assert safe_name("X_\ud800") != safe_name("X__")  # a lone surrogate cannot crash the encoder


def test_names_are_stable_across_processes(name_cwd: Path) -> None:
    cases = [{"k": "a\nb"}, {f"k{i}": "v" * 100 for i in range(5)}, {"norm": "new"}, {"/": True}]
    script = (
        "import json, sys\nfrom mlrunner.plan import experiment_name\n"
        "print(json.dumps([experiment_name(c) for c in json.load(sys.stdin)]))\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert json.loads(out) == [experiment_name(c) for c in cases]


# Property tests. What is guaranteed (names depend on os.path.exists, so the cwd is fixed):
#  * stable: the same grid params give the same name, in any process;
#  * never escapes: the name is one path component -- not '', '.', '..', no '/', NUL, control or
#    line-break character, no leading '.', at most 255 UTF-8 bytes -- so join(root, name) stays in root;
#  * 0.5.9-compatible: a name that 0.5.9 would give and that is already safe is kept as is;
#  * injective where 0.5.9 is: different 0.5.9 names never become equal (changed names carry a
#    64-bit hash of the 0.5.9 name). Where 0.5.9 itself collides (%g rounding, T vs True, basenames,
#    '/' -> '_', the last 100 characters), plan() renames the later task (test_colliding_names...).
NASTY = st.text(alphabet=st.sampled_from(list("ab_-./ \n\x00\x1b\x7f\x85é中") + ["\u2028"]), max_size=12)
VALUES = st.one_of(
    NASTY,
    st.text(max_size=140),
    st.integers(min_value=-(10**18), max_value=10**18),
    st.floats(allow_nan=False),
    st.booleans(),
)
GRID_PARAMS = st.dictionaries(st.one_of(NASTY, st.text(max_size=30)), VALUES, max_size=6)


def _is_one_safe_component(name: str) -> bool:
    root = "/srv/output root"
    return (
        name not in ("", ".", "..")
        and "/" not in name
        and not name.startswith(".")
        and not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in name)
        and len(name.encode("utf-8")) <= 255
        and os.path.dirname(os.path.normpath(os.path.join(root, name))) == root
    )


@settings(max_examples=300, deadline=None)
@given(GRID_PARAMS)
def test_property_names_never_escape_and_are_stable(grid_params: dict) -> None:
    name = experiment_name(grid_params)
    assert _is_one_safe_component(name)
    assert experiment_name(dict(grid_params)) == name
    raw = legacy_name(grid_params)
    if raw and _is_one_safe_component(raw):
        assert name == raw


@settings(max_examples=300, deadline=None)
@given(GRID_PARAMS, GRID_PARAMS)
def test_property_names_injective_where_059_is(a: dict, b: dict) -> None:
    if legacy_name(a) != legacy_name(b):
        assert experiment_name(a) != experiment_name(b)


@settings(max_examples=200, deadline=None)
@given(st.lists(NASTY, min_size=2, max_size=2, unique=True))
def test_property_values_differing_only_in_unsafe_characters_keep_distinct_names(values: list[str]) -> None:
    a, b = ({"k": v} for v in values)
    if legacy_name(a) != legacy_name(b):
        assert experiment_name(a) != experiment_name(b)


# --------------------------------------------------------------------------- rendering
HOSTILE = [
    "$(touch pwned)",
    "`touch pwned`",
    "a; touch pwned",
    "a && touch pwned",
    "x | touch pwned",
    "it's",
    'say "hi"',
    "back\\slash",
    "new\nline",
    "tab\there",
    "cr\rhere",
    "*",
    "~",
    "-n",
    "--flag",
    "",
    " lead",
    "trail ",
    "$HOME",
    "${HOME}",
    "!!",
    "{p}",
    "[p]",
    "{_output}",
    "é ü 中",
    "..",
    "../../etc/passwd",
    "/abs/path",
    "> /dev/null",
    "#comment",
]


def _hostile_spec(values: list[str]) -> str:
    grid = "\n".join(f"  - {json.dumps(v)}" for v in values)
    return (
        "template:\n"
        "  show: printf '%s\\0' {p} {_name} {_output}\n"
        "  flag: printf '%s\\0' [p] [f]\n"
        "default: {f: true}\n"
        f"---\np:\n{grid}\n"
    )


def test_hostile_values_reach_bash_as_literal_text(tmp_path: Path) -> None:
    output = str(tmp_path / "out dir 'q' $(touch pwned)")
    p = plan(parse_spec(_hostile_spec(HOSTILE)), output=output, time=TIME)
    assert len(p.tasks) == len(HOSTILE)
    script = "\n".join(f"{c.text}; printf '\\1'" for t in p.tasks for c in t.commands)
    work = tmp_path / "work"
    work.mkdir()
    out = subprocess.run(["bash", "-c", script], cwd=work, capture_output=True, check=True).stdout
    chunks = out.decode().split("\x01")[:-1]
    assert len(chunks) == 2 * len(HOSTILE)
    for i, (task, value) in enumerate(zip(p.tasks, HOSTILE, strict=True)):
        assert chunks[2 * i].split("\0")[:-1] == [value, task.name, task.output_dir]
        assert chunks[2 * i + 1].split("\0")[:-1] == ["--p", value, "--f"]
        assert os.path.dirname(task.output_dir) == output
        assert task.params["p"] == value
    assert not list(work.iterdir()) and not (tmp_path / "pwned").exists()


def test_names_that_collide_in_059_get_distinct_dirs(name_cwd: Path) -> None:
    # '' and '...' are both 'P_' in 0.5.9 ('.' and '..' exist: 'P_.', 'P_..'); 1, 1.0 and '1' are all
    # 'P_1'; True and 'T' are both 'P_T'. The first keeps the 0.5.9 name, later ones get a hash suffix.
    values = ["", ".", "..", "...", 1, 1.0, "1", True, "T"]
    grid = "\n".join(f"  - {json.dumps(v)}" for v in values)
    text = f"template:\n  a: echo [p]\n---\np:\n{grid}\n"
    p = plan(parse_spec(text), output="out", time=TIME)
    assert [t.params["p"] for t in p.tasks] == values
    names = [t.name for t in p.tasks]
    assert len(set(names)) == len(values)
    assert [names[i] for i in (0, 1, 2, 4, 7)] == ["P_", "P_.", "P_..", "P_1", "P_T"]
    for i, base in ((3, "P_"), (5, "P_1"), (6, "P_1"), (8, "P_T")):
        assert names[i].startswith(base + "-") and len(names[i]) == len(base) + 9
    renamed = [w for w in p.warnings if "0.5.9 names are not unique" in w]
    assert len(renamed) == 4 and len(p.warnings) == 5
    # 1 and '1' are two tasks (typed params) that run the same `echo --p 1`: said loudly
    assert "1 task would run exactly the commands of an earlier task" in p.warnings[4]
    assert "'P_1-" in p.warnings[4] and "differ only in p (rendered alike)" in p.warnings[4]
    assert [t.name for t in plan(parse_spec(text), output="out", time=TIME).tasks] == names


def test_bracket_and_brace_rendering() -> None:
    p = make_plan(
        """\
        template:
          a: run {s} {i} {f} [t] [j] [g] [up] [down] [neg-x] x{s}y
        default: {up: true, down: false, neg-x: -1, t: a b, j: 3, g: 1.5e-07}
        ---
        s: [a b]
        i: [3]
        f: [1.5e-07]
        """
    )
    assert p.tasks[0].commands[0].text == (
        "run 'a b' 3 1.5e-07 --t 'a b' --j 3 --g 1.5e-07 --up  --neg-x -1 x'a b'y"
    )


def test_shell_variables_in_braces_need_a_value() -> None:
    with pytest.raises(SpecError) as info:
        make_plan("template:\n  a: echo ${HOME}\n---\np: 1\n")
    assert "{HOME}" in str(info.value) and "template.a" in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "echo plain",
        "echo a; echo b",
        "echo a && echo b >&2",
        "cd sub && pwd -P | sed 's|.*/||'",
        "echo $CUDA_VISIBLE_DEVICES",
        "echo x # a comment",
        "echo 'quoted ; > | &'",
        "echo one > f.txt; cat f.txt",
        "for i in 1 2; do echo $i; done",
        "(echo sub)",
        "echo `echo tick`",
        "VAR=1 bash -c 'echo $VAR'",
        "false; echo after",
    ],
)
def test_shell_line_runs_like_the_worker(tmp_path: Path, text: str) -> None:
    """The copy-pasteable line logs exactly what bash with CUDA_VISIBLE_DEVICES in the env logs."""
    logs = {}
    for how in ("worker", "line"):
        cwd = tmp_path / how
        (cwd / "sub").mkdir(parents=True)
        log = cwd / "exp dir 'x'" / "log.train.1"
        log.parent.mkdir()
        env = dict(os.environ)
        env.pop("CUDA_VISIBLE_DEVICES", None)
        if how == "worker":
            with open(log, "wb") as f:
                subprocess.run(
                    ["bash", "-c", text], cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                    env=dict(env, CUDA_VISIBLE_DEVICES="0,1"),
                )  # fmt: skip
        else:
            line = shell_line(Command("train", text), "0,1", log)
            subprocess.run(["bash", "-c", line], cwd=cwd, env=env, check=False)
        logs[how] = log.read_bytes()
    assert logs["line"] == logs["worker"]


def test_shell_line_plain_form_for_simple_commands() -> None:
    line = shell_line(Command("train", "python train.py --lr 0.1"), "2", "out/E x/log.train.1")
    assert line == "CUDA_VISIBLE_DEVICES=2 python train.py --lr 0.1 > 'out/E x/log.train.1' 2>&1"
    assert (
        shell_line(Command("a", "echo a; echo b"), "", "l")
        == "CUDA_VISIBLE_DEVICES='' bash -c 'echo a; echo b' > l 2>&1"
    )


def test_log_names() -> None:
    assert log_name("train", TIME) == f"log.train.{TIME}"
    assert log_name("train", TIME, "Lr_0.1") == f"log.train.{TIME}.Lr_0.1"
    long = log_name("train", TIME, "X" * 250)  # --no-subdir with a long experiment name
    assert long.startswith(f"log.train.{TIME}.XXX") and len(long.encode()) == 240
    assert long == log_name("train", TIME, "X" * 250) != log_name("train", TIME, "X" * 251)


# --------------------------------------------------------------------------- planning
def test_dedup_is_typed_and_first_occurrence_wins() -> None:
    p = make_plan(
        """\
        template: {a: 'echo [p]'}
        ---
        p: [1, 1.0, true, '1', 1]
        ---
        p: [1.0]
        q: 2
        ---
        p: ['1']
        """
    )
    assert [(t.params["p"], type(t.params["p"])) for t in p.tasks] == [
        (1, int),
        (1.0, float),
        (True, bool),
        ("1", str),
        (1.0, float),
    ]
    assert p.tasks[4].params == {"p": 1.0, "q": 2}
    assert p.orphans == ("q",)


def test_same_task_with_other_commands_in_the_same_dir_adds_them() -> None:
    p = make_plan(
        """\
        template: {train: 'echo t {p}', test: 'echo e {p}', avg: echo a}
        ---
        _cmd: train
        p: [1, 2]
        ---
        _cmd: [test, train]
        p: [2, 3]
        """
    )
    assert [(t.name, [c.name for c in t.commands]) for t in p.tasks] == [
        ("P_1", ["train"]),
        ("P_2", ["train", "test"]),
        ("P_3", ["test", "train"]),
    ]
    assert p.n_commands == 5
    assert p.orphans == ()


def test_commands_option_overrides_cmd_and_orphans_follow_the_commands_run() -> None:
    text = """\
        template: {train: 'echo t {p}', test: 'echo e {q}'}
        default: {q: 1}
        ---
        _cmd: test
        p: [1]
        """
    assert [c.name for c in make_plan(text).tasks[0].commands] == ["test"]
    assert make_plan(text).orphans == ("p",)
    p = make_plan(text, commands=["train", "train"])
    assert [c.name for c in p.tasks[0].commands] == ["train"]
    assert p.orphans == ("q",)
    with pytest.raises(UsageError) as info:
        make_plan(text, commands=["tarin"])
    assert "'tarin'" in str(info.value) and "did you mean 'train'?" in info.value.hint
    assert "known commands: train, test" in info.value.hint


def test_title_filter() -> None:
    text = """\
        template: {a: 'echo {p}'}
        ---
        _title: small
        p: [1, 2]
        ---
        _title: big
        p: [3]
        ---
        _title: small
        p: [4]
        """
    assert [t.params["p"] for t in make_plan(text, title="small").tasks] == [1, 2, 4]
    assert [t.params["p"] for t in make_plan(text).tasks] == [1, 2, 3, 4]
    with pytest.raises(UsageError) as info:
        make_plan(text, title="smal")
    assert "known titles: small, big" in info.value.hint and "did you mean 'small'?" in info.value.hint
    with pytest.raises(UsageError, match="no grid") as info:
        make_plan("template: {a: 'echo {p}'}\n---\np: 1\n", title="x")
    assert info.value.key == "-t/--title"


def test_alias_expansion() -> None:
    p = make_plan(
        """\
        template: {train: 'python t.py [enc-pre] [dec-pre] --seed {seed}'}
        default: {arch: postln, seed: 0}
        alias:
          arch:
            preln: {enc-pre: true, dec-pre: true}
            postln: {enc-pre: false, dec-pre: false}
        ---
        arch: [preln, postln]
        seed: [1]
        ---
        seed: [1, 2]
        """
    )
    assert [t.name for t in p.tasks] == ["Arch_preln-Seed_1", "Arch_postln-Seed_1", "Seed_2"]
    assert p.tasks[0].params == {"enc-pre": True, "dec-pre": True, "seed": 1}
    assert p.tasks[0].grid_params == {"arch": "preln", "seed": 1}
    assert p.tasks[0].commands[0].text == "python t.py --enc-pre --dec-pre --seed 1"
    assert p.tasks[1].commands[0].text == "python t.py   --seed 1"  # False -> '' (spaces kept, as 0.5.9)
    # 'seed: 1' from the second grid, with the default alias, is 'arch: postln, seed: 1': the same task
    assert p.tasks[2].params == {"seed": 2, "enc-pre": False, "dec-pre": False}
    assert p.orphans == ()


def test_alias_targets_no_template_uses_are_orphans() -> None:
    p = make_plan(
        """\
        template: {a: 'echo {x}'}
        alias: {mode: {fast: {steps: 1}, slow: {steps: 9}}}
        ---
        mode: [fast, slow]
        x: 1
        """
    )
    assert p.orphans == ("steps",)
    assert [t.name for t in p.tasks] == ["Mode_fast-X_1", "Mode_slow-X_1"]


def test_placeholder_without_value_names_command_and_param() -> None:
    with pytest.raises(SpecError) as info:
        make_plan("template:\n  train: echo {p}\n  test: echo [q]\n---\np: 1\n---\nq: 2\n")
    err = info.value
    assert (err.line, err.key) == (3, "template.test")
    assert "command 'test' uses [q]" in str(err) and "grid 1" in str(err)
    assert "default:" in err.hint


def test_bool_in_braces_is_an_error_with_a_hint() -> None:
    with pytest.raises(SpecError) as info:
        make_plan("template:\n  train: echo {flag}\n---\nflag: [false]\n")
    assert "boolean" in str(info.value) and "[flag]" in info.value.hint
    assert info.value.key == "template.train" and info.value.line == 2
    assert make_plan("template:\n  train: echo {flag}\n---\nflag: ['false']\n").tasks[0].commands[0].text == (
        "echo false"
    )


def test_sample_is_reproducible_and_keeps_plan_order() -> None:
    text = """\
        template: {a: 'echo {x} {y}'}
        ---
        x: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
        y: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
        ---
        x: [100, 101, 102]
        y: [0]
        """
    full = [t.name for t in make_plan(text).tasks]
    a = [t.name for t in make_plan(text, sample=7, seed=3).tasks]
    assert a == [t.name for t in make_plan(text, sample=7, seed=3).tasks]
    assert len(a) == 7 + 3  # per grid; a grid smaller than N runs whole
    assert a == [n for n in full if n in set(a)]  # plan order among the chosen
    assert a != [t.name for t in make_plan(text, sample=7, seed=4).tasks]
    assert a[:7] == [t.name for t in make_plan(text, sample=7, seed=3, title=None).tasks][:7]
    # the same in another process (no dependence on hash randomisation)
    script = (
        "import sys, textwrap\nfrom mlrunner.spec import parse_spec\nfrom mlrunner.plan import plan\n"
        "p = plan(parse_spec(textwrap.dedent(sys.stdin.read())), sample=7, seed=3, time='t')\n"
        "print(' '.join(t.name for t in p.tasks))\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="999")
    out = subprocess.run(
        [sys.executable, "-c", script], input=text, capture_output=True, text=True, env=env, check=True
    ).stdout
    assert out.split() == a
    with pytest.raises(UsageError):
        make_plan(text, sample=0)


def test_sample_of_a_huge_grid_does_not_expand_it() -> None:
    values = ", ".join(str(i) for i in range(100))
    p = make_plan(f"template: {{a: echo}}\n---\na: [{values}]\nb: [{values}]\nc: [{values}]\nd: [{values}]\n",
                  sample=5, seed=1)  # fmt: skip
    assert len(p.tasks) == 5  # of 10**8 combinations
    assert sorted(p.tasks, key=lambda t: tuple(t.grid_params.values())) == list(p.tasks)


def test_no_subdir_shares_the_output_dir() -> None:
    p = make_plan(
        """\
        template: {a: 'echo {_output} {_name} {_time}'}
        ---
        lr: [0.1, 0.2]
        """,
        output="my out",
        no_subdir=True,
    )
    assert [t.output_dir for t in p.tasks] == ["my out", "my out"]
    assert [t.name for t in p.tasks] == ["Lr_0.1", "Lr_0.2"]
    assert p.tasks[0].commands[0].text == f"echo 'my out' Lr_0.1 {TIME}"
    assert p.orphans == ("lr",)
    assert p.tasks[0].key != p.tasks[1].key


def test_gpus_and_empty_grid() -> None:
    p = make_plan(
        """\
        template: {a: 'echo {x} {_output}'}
        default: {x: 5}
        ---
        _gpus: 2
        x: [1]
        --- {}
        """,
        output="",
    )
    assert [(t.name, t.gpus, t.output_dir) for t in p.tasks] == [
        ("X_1", 2, "X_1"),
        (EMPTY_NAME, 1, EMPTY_NAME),
    ]
    assert p.tasks[1].params == {"x": 5} and p.tasks[1].grid_params == {}


def test_plan_is_linear_in_shape_for_a_big_grid() -> None:
    values = ", ".join(str(i) for i in range(100))
    p = make_plan(f"template: {{a: 'train {{a}} [b]'}}\n---\na: [{values}]\nb: [{values}]\n")
    assert len(p.tasks) == 10_000 and p.n_commands == 10_000
    assert len({t.name for t in p.tasks}) == len({t.key for t in p.tasks}) == 10_000
    assert p.tasks[-1].commands[0].text == "train 99 --b 99"

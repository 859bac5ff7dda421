"""params.yaml parsing: semantics of 0.5.9, and a located, helpful SpecError for every bad input."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from helpers import README_EXAMPLE

from mlrunner.errors import SpecError, UsageError
from mlrunner.spec import (
    SLURM_KEYS,
    Axis,
    Grid,
    ResourceSpec,
    fold_template,
    load_spec,
    parse_memory_mib,
    parse_resource_option,
    parse_spec,
    template_fields,
)


def spec_of(text: str, path: str = "params.yaml"):
    return parse_spec(textwrap.dedent(text), path)


def spec_error(text: str, path: str = "params.yaml") -> SpecError:
    with pytest.raises(SpecError) as info:
        spec_of(text, path)
    return info.value


# --------------------------------------------------------------------------- good input
def test_readme_example_parses_like_059() -> None:
    spec = parse_spec(README_EXAMPLE, "conf/params.yaml")
    assert spec.path == "conf/params.yaml"
    assert spec.text == README_EXAMPLE
    assert [n for n, _ in spec.templates] == ["train", "avg", "test"]
    assert spec.template_map["train"] == (
        "python train.py data-bin/{data} --save-dir {_output} --norm {norm} [moment] [early-stop]"
    )
    assert spec.default_map == {"data": "iwslt14", "norm": "batch", "moment": 0.1, "early-stop": False}
    assert spec.resource == ResourceSpec(slots=("0", "1", "2", "3"))
    assert spec.grids == (
        Grid(1, 22, (("norm", ("new", "batch")), ("moment", (0.1, 0.05))), None, None, None,
             axes=(Axis("norm", 22, ("new", "batch")), Axis("moment", 23, (0.1, 0.05)))),
        Grid(2, 26, (("norm", ("batch",)), ("early-stop", (True, False))), None, None, None,
             axes=(Axis("norm", 26, ("batch",)), Axis("early-stop", 27, (True, False)))),
    )  # fmt: skip
    assert all(g.plain for g in spec.grids)
    assert spec.slurm is None and spec.slurm_map == {}
    assert spec.aliases == () and spec.alias_map == {}
    assert spec.locations["template.avg"] == 7


def test_values_keep_their_yaml_types() -> None:
    spec = spec_of(
        """\
        template: {a: x}
        ---
        i: [1, -3, 0x10, 1_000]
        f: [0.5, 1e-3, 1.0e-3, .inf]
        b: [true, False, yes, off]
        s: ['1', "0.5", 'true', hello world, 2020-01-01]
        one: 7
        """
    )
    params = dict(spec.grids[0].params)
    assert params["i"] == (1, -3, 16, 1000) and all(type(v) is int for v in params["i"])
    # YAML 1.1 (PyYAML, as in 0.5.9): 1e-3 without a dot is text; 1.0e-3 is a float
    assert params["f"] == (0.5, "1e-3", 0.001, float("inf"))
    assert params["b"] == (True, False, True, False) and all(type(v) is bool for v in params["b"])
    # a date stays the text the user wrote (0.5.9 made a datetime.date that no template could render)
    assert params["s"] == ("1", "0.5", "true", "hello world", "2020-01-01")
    assert params["one"] == (7,)


def test_folded_and_literal_templates_collapse_whitespace_around_newlines() -> None:
    spec = parse_spec(
        "template:\n"
        "  folded: >\n    python train.py\n      --lr {lr}\n\n"
        "  literal: |\n    python a.py   \n        --x 1\n"
        '  plain: "  echo   a  "\n'
        "---\nlr: [1]\n"
    )
    assert spec.template_map == {
        "folded": "python train.py --lr {lr}",
        "literal": "python a.py --x 1",
        "plain": "echo   a",
    }
    assert fold_template("a \n\n  b\n") == "a b"


def test_template_fields_match_word_and_dash_names_only() -> None:
    assert template_fields("x {a} [b-c] {d_1} [ e ] {f.g} ${HOME} [0-9]") == [
        ("{", "a"),
        ("[", "b-c"),
        ("{", "d_1"),
        ("{", "HOME"),
        ("[", "0-9"),
    ]


def test_flow_style_grids_titles_commands_and_gpus() -> None:
    spec = spec_of(
        """\
        template: {train: 'python t.py [a]', test: 'python e.py'}
        --- { _title: x, a: 1 }
        --- {_title: 2, _cmd: test, _gpus: 2, a: [1, 2]}
        ---
        _cmd: [test, train, test]
        a: 3
        """
    )
    g1, g2, g3 = spec.grids
    assert (g1.title, g1.commands, g1.gpus, g1.params) == ("x", None, None, (("a", (1,)),))
    assert (g2.title, g2.commands, g2.gpus) == ("2", ("test",), 2)
    assert g3.commands == ("test", "train")  # order kept, repeats dropped
    assert [g.index for g in spec.grids] == [1, 2, 3]


def test_empty_documents_are_skipped_but_an_empty_mapping_is_a_grid() -> None:
    spec = spec_of(
        """\
        template: {a: echo}
        ---
        ---
        x: 1
        --- {}
        ---
        """
    )
    assert [(g.index, g.params) for g in spec.grids] == [(2, (("x", (1,)),)), (3, ())]


def test_alias_and_default_alias() -> None:
    spec = spec_of(
        """\
        template: {train: 'python t.py [enc] [dec]'}
        default: {arch: preln}
        alias:
          arch:
            preln: {enc: true, dec: true}
            postln: {dec: false, enc: false}
          size:
            1: {enc: 1}
            true: {enc: 2}
        ---
        arch: [preln, postln]
        """
    )
    assert spec.alias_map["arch"] == {
        "preln": {"enc": True, "dec": True},
        "postln": {"dec": False, "enc": False},
    }
    assert list(spec.alias_map["size"]) == ["1", "True"]  # choices are kept as text


def test_merge_keys_and_anchors_work_and_explicit_keys_win() -> None:
    spec = spec_of(
        """\
        template: {a: 'echo {p} {q}'}
        ---
        p: &vals [1, 2]
        q: *vals
        ---
        <<: {p: 5, q: 6}
        q: 7
        """
    )
    assert spec.grids[0].params == (("p", (1, 2)), ("q", (1, 2)))
    assert dict(spec.grids[1].params) == {"p": (5,), "q": (7,)}


def test_resource_forms() -> None:
    base = "template: {a: echo}\n%s---\nx: 1\n"
    assert parse_spec(base % "").resource == ResourceSpec(slots=("0",))
    assert parse_spec(base % "resource:\n").resource == ResourceSpec(slots=("0",))
    assert parse_spec(base % 'resource: [0, "1,2", " 3 , 4 ", 0, ""]\n').resource.slots == (
        "0",
        "1,2",
        "3,4",
        "0",
        "",
    )
    assert parse_spec(base % "resource: auto\n").resource == ResourceSpec(slots=None, auto=True)
    r = parse_spec(base % "resource: {gpus: auto, per_gpu: 2, min_free_memory: 10GiB}\n").resource
    assert r == ResourceSpec(slots=None, auto=True, gpus=None, per_gpu=2, min_free_memory_mib=10240)
    r = parse_spec(base % "resource: {gpus: [0, 3], min_free_memory: 500}\n").resource
    assert r == ResourceSpec(slots=None, auto=False, gpus=(0, 3), per_gpu=1, min_free_memory_mib=500)


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        ("10GiB", 10240),
        ("500MiB", 500),
        ("1.5G", 1536),
        ("1TiB", 1048576),
        ("1GB", 954),
        ("2048 KiB", 2),
        ("300", 300),
        (64, 64),
        (0, 0),
    ],
)
def test_memory_sizes(text: object, mib: int) -> None:
    assert parse_memory_mib(text) == mib


@pytest.mark.parametrize("bad", ["10 parsecs", "-1GiB", "", "GiB", True, -5])
def test_bad_memory_sizes(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_memory_mib(bad)


def test_slurm_section() -> None:
    spec = spec_of(
        """\
        template: {a: echo}
        slurm:
          partition: gpu
          time: 120
          gpus_per_task: 1
          mem: 32GB
          additional_parameters: {mail-type: END, exclude: [n1, n2]}
        ---
        x: 1
        """
    )
    assert spec.slurm_map == {
        "partition": "gpu",
        "time": 120,
        "gpus_per_task": 1,
        "mem": "32GB",
        "additional_parameters": {"mail-type": "END", "exclude": ["n1", "n2"]},
    }


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["0,1", "2,3"], ResourceSpec(slots=("0,1", "2,3"))),
        (["0 1 2"], ResourceSpec(slots=("0", "1", "2"))),
        (["0, 1", " 2 "], ResourceSpec(slots=("0,1", "2"))),
        (["auto"], ResourceSpec(slots=None, auto=True)),
        (["GPU-3f2a", "MIG-GPU-1/2/0"], ResourceSpec(slots=("GPU-3f2a", "MIG-GPU-1/2/0"))),
    ],
)
def test_resource_option(values: list[str], expected: ResourceSpec) -> None:
    assert parse_resource_option(values) == expected


@pytest.mark.parametrize(
    ("values", "message"),
    [([], "no resource slot"), ([" "], "no resource slot"), (["auto", "0"], "'auto'"), (["0;rm"], "invalid")],
)
def test_bad_resource_option(values: list[str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_resource_option(values)
    assert message in str(info.value)
    assert "-r/--resource" in str(info.value) and "hint:" in str(info.value)


# --------------------------------------------------------------------------- bad input
T = "template:\n  train: python train.py {p}\n"
# fmt: off
BAD = [
    # (id, text, line, key, words in the message, words in the hint)
    ("syntax", "template:\n  a: [x\nb: 1\n", 3, None, "YAML syntax error", "brackets"),
    ("tab-indent", "template:\n\ta: x\n", 2, None, "YAML syntax error", "indentation"),
    ("undefined-anchor", T + "---\np: *nope\n", 4, None, "undefined alias", "&name anchor"),
    ("only-comments", "# nothing\n\n", None, None, "empty", "mlrunner init"),
    ("first-not-mapping", "- a\n- b\n", 1, None, "first YAML document", "mlrunner init"),
    ("no-template", "default: {p: 1}\n---\np: [1]\n", 1, "template", "no 'template'", "train:"),
    ("template-null", "template:\n---\np: [1]\n", 1, "template", "empty", "train:"),
    ("template-list", "template: [a, b]\n---\np: [1]\n", 1, "template", "mapping", "train:"),
    ("template-int", "template:\n  train: 5\n---\np: [1]\n", 2, "template.train", "string", "train:"),
    ("template-blank", "template:\n  train: '  '\n---\np: [1]\n", 2, "template.train", "empty", "train:"),
    ("cmd-name", "template:\n  ../x: echo\n---\np: [1]\n", 2, "template.../x", "command name", "rename"),
    ("unknown-top", T + "defaults: {p: 1}\n---\np: [1]\n", 3, "defaults", "unknown key", "'default'"),
    ("unknown-top-far", T + "zzz: 1\n---\np: [1]\n", 3, "zzz", "unknown key", "valid keys"),
    ("dup-top", T + "default: {p: 1}\ndefault: {p: 2}\n---\np: [1]\n", 4, "default", "duplicate", "remove"),
    ("dup-template", "template:\n  a: x\n  a: y\n---\np: [1]\n", 3, "template.a", "line 2", "remove one"),
    ("dup-grid", T + "---\np: [1]\nq: 1\np: [2]\n", 6, "p", "duplicate key", "[a, b]"),
    ("dup-default", T + "default:\n  p: 1\n  p: 2\n---\nq: [1]\n", 5, "default.p", "duplicate", "remove"),
    ("dup-flow", T + "--- {p: 1, p: 2}\n", 3, "p", "duplicate", "remove"),
    ("nested-mapping", T + "---\np: [{q: 1}]\n", 4, "p", "mapping", "alias"),
    ("nested-mapping-value", T + "---\np: {q: 1}\n", 4, "p", "mapping", "alias"),
    ("list-in-list", T + "---\np: [[1, 2]]\n", 4, "p", "list", "quote it"),
    ("default-list", T + "default: {p: [1, 2]}\n---\nq: 1\n", 3, "default.p", "not a list", "grid"),
    ("default-nested", T + "default: {p: {a: 1}}\n---\nq: 1\n", 3, "default.p", "mapping", "alias"),
    ("null-value", T + "---\np: [1, ~]\n", 4, "p", "empty (null)", "''"),
    ("null-scalar", T + "---\np:\n", 4, "p", "empty (null)", "''"),
    ("nul-char", T + '---\np: ["a\\0b"]\n', 4, "p", "NUL", "\\0"),
    ("empty-list", T + "---\np: []\n", 4, "p", "empty", "at least one"),
    ("int-key", T + "---\n1: [2]\n", 4, None, "must be a string", "quote it"),
    ("bool-key", T + "---\non: [2]\n", 4, None, "must be a string", "booleans"),
    ("binary-tag", T + "---\np: !!binary aGk=\n", 4, "p", "unsupported YAML tag", "plain"),
    ("python-tag", T + "---\np: !!python/name:os.system x\n", 4, "p", "unsupported YAML tag", "plain"),
    ("grid-list", T + "---\n- 1\n", 4, None, "grid document must be a mapping", "lr:"),
    ("self-merge", T + "--- &x\np: [1]\n<<: *x\n", 3, None, "merges itself", None),
    ("no-grid", T + "default: {p: 1}\n", 1, None, "no grid document", "--- {}"),
    ("no-grid-empty-docs", T + "---\n---\n", 1, None, "no grid document", "lr:"),
    ("unknown-setting", T + "---\n_titel: a\np: 1\n", 4, "_titel", "reserved", "'_title'"),
    ("reserved-param", T + "---\n_output: x\np: 1\n", 4, "_output", "reserved", "_cmd"),
    ("reserved-default", T + "default: {_name: x}\n---\np: 1\n", 3, "default._name", "reserved", None),
    ("cmd-unknown", T + "---\n_cmd: [trian]\np: 1\n", 4, "_cmd", "'trian'", "'train'? known commands: train"),
    ("cmd-empty", T + "---\n_cmd: []\np: 1\n", 4, "_cmd", "no command", None),
    ("gpus-zero", T + "---\n_gpus: 0\np: 1\n", 4, "_gpus", ">= 1", None),
    ("gpus-bool", T + "---\n_gpus: true\np: 1\n", 4, "_gpus", ">= 1", None),
    ("title-list", T + "---\n_title: [a]\np: 1\n", 4, "_title", "list", None),
    ("both-forms", "template:\n  t: x {p} [p]\n---\np: 1\n", 2, "template.t", "both", "[p] for --p"),
    ("reserved-bracket", "template:\n  t: x [_output]\n---\np: 1\n", 2, "template.t", "reserved",
     "{_output}"),
    ("alias-in-template", "template:\n  t: x {arch}\nalias:\n  arch: {a: {e: 1}}\n---\np: 1\n", 2,
     "template.t", "alias 'arch'", "params it sets: e"),
    ("alias-choice", "template:\n  t: x [e]\nalias:\n  arch:\n    pre: {e: 1}\n    post: {e: 2}\n"
     "---\narch: [pre, mid]\n", 8, "arch", "'mid' is not a choice", "valid choices: pre, post"),
    ("alias-choice-default", "template:\n  t: x [e]\ndefault: {arch: mid}\nalias:\n  arch:\n    pre: {e: 1}\n"
     "---\np: 1\n", 3, "default.arch", "not a choice", "valid choices: pre"),
    ("alias-keys-differ", "template:\n  t: x [e]\nalias:\n  arch:\n    pre: {e: 1}\n    post: {d: 2}\n"
     "---\narch: pre\n", 6, "alias.arch.post", "same params", "add the missing"),
    ("alias-empty-choice", "template:\n  t: x\nalias:\n  arch:\n    pre: {}\n---\np: 1\n", 5,
     "alias.arch.pre", "at least one param", None),
    ("alias-no-choice", "template:\n  t: x\nalias:\n  arch:\n---\np: 1\n", 4, "alias.arch",
     "at least one choice", "small:"),
    ("alias-nested", "template:\n  t: x\nalias:\n  a: {x: {b: 1}}\n  b: {y: {c: 1}}\n---\np: 1\n", 4,
     "alias.a", "itself an alias", "nested"),
    ("alias-and-target", "template:\n  t: x [e]\nalias:\n  arch: {pre: {e: 1}}\n---\narch: pre\ne: [2]\n",
     7, "e", "both here and by alias 'arch'", "drop 'e'"),
    ("two-aliases-one-target", "template:\n  t: x [e]\nalias:\n  a: {x: {e: 1}}\n  b: {y: {e: 2}}\n"
     "---\na: x\nb: y\n", 8, "b", "both set 'e'", "only one"),
    ("resource-scalar", T + "resource: 0\n---\np: 1\n", 3, "resource", "must be a list", "auto"),
    ("resource-string", T + "resource: gpus\n---\np: 1\n", 3, "resource", "must be a list", "auto"),
    ("resource-empty", T + "resource: []\n---\np: 1\n", 3, "resource", "no slot", "auto"),
    ("resource-float", T + "resource: [0.5]\n---\np: 1\n", 3, "resource", "GPU index", '"2,3"'),
    ("resource-shell", T + "resource: ['0; rm -rf x']\n---\np: 1\n", 3, "resource", "invalid", '"2,3"'),
    ("resource-nested", T + "resource: [[0, 1]]\n---\np: 1\n", 3, "resource", "list", None),
    ("resource-key", T + "resource: {gpus: auto, pergpu: 2}\n---\np: 1\n", 3, "resource.pergpu", "unknown",
     "'per_gpu'"),
    ("resource-per-gpu", T + "resource: {per_gpu: 0}\n---\np: 1\n", 3, "resource.per_gpu", ">= 1", None),
    ("resource-gpus", T + "resource: {gpus: [0, 0]}\n---\np: 1\n", 3, "resource.gpus", "twice", "per_gpu"),
    ("resource-gpus-neg", T + "resource: {gpus: [-1]}\n---\np: 1\n", 3, "resource.gpus", ">= 0", None),
    ("resource-memory", T + "resource: {min_free_memory: lots}\n---\np: 1\n", 3, "resource.min_free_memory",
     "memory size", "10GiB"),
    ("slurm-key", T + "slurm: {partiton: gpu}\n---\np: 1\n", 3, "slurm.partiton", "unknown slurm",
     "'partition'"),
    ("slurm-type", T + "slurm: {cpus_per_task: many}\n---\np: 1\n", 3, "slurm.cpus_per_task", "integer",
     None),
    ("slurm-list", T + "slurm: [partition]\n---\np: 1\n", 3, "slurm", "mapping", None),
]
# fmt: on


@pytest.mark.parametrize(
    ("text", "line", "key", "words", "hint"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_input_names_file_line_key_and_hint(
    text: str, line: int | None, key: str | None, words: str, hint: str | None
) -> None:
    err = spec_error(text, "conf/my params.yaml")
    message = str(err)
    assert err.file == "conf/my params.yaml"
    assert err.line == line, message
    assert err.key == key, message
    assert message.startswith(f"conf/my params.yaml:{line}:" if line else "conf/my params.yaml: ")
    if key:
        assert f"key '{key}'" in message
    assert words in message
    if hint:
        assert err.hint and hint in err.hint, message
        assert "\n  hint: " in message
    assert "Traceback" not in message


def test_syntax_error_has_a_column() -> None:
    err = spec_error("template:\n  a: [x\nb: 1\n")
    assert (err.line, err.column) == (3, 2)
    assert str(err).startswith("params.yaml:3:2: YAML syntax error")


def test_slurm_valid_keys_are_listed() -> None:
    err = spec_error(T + "slurm: {nodes: 2}\n---\np: 1\n")
    assert all(k in err.hint for k in SLURM_KEYS)


def test_load_spec_missing_file_suggests_init(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "params.yaml")
    assert info.value.file == str(tmp_path / "params.yaml")
    assert "not found" in str(info.value) and "mlrunner init" in info.value.hint


def test_load_spec_reads_files_and_rejects_dirs_and_binary(tmp_path: Path) -> None:
    good = tmp_path / "dir with space" / "p.yaml"
    good.parent.mkdir()
    good.write_text(README_EXAMPLE, encoding="utf-8")
    spec = load_spec(good)
    assert spec.path == str(good) and len(spec.grids) == 2
    with pytest.raises(SpecError, match="directory"):
        load_spec(tmp_path)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"template: {a: \xff\xfe}\n")
    with pytest.raises(SpecError, match="UTF-8"):
        load_spec(binary)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(SpecError, match="empty") as info:
        load_spec(empty)
    assert "mlrunner init" in info.value.hint

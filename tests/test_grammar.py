"""Sweep grammar v2 (issue 15), planned in-process: value generators against numpy, conditional
sub-grids, _zip, _exclude, _include, _order, _samples, env, {_attempt}; names; seeds; property
tests. The CLI side (exit 2 for every malformed form, --dry-run --json, the environment commands
see) is in tests/test_grammar_cli.py."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlrunner.errors import SpecError
from mlrunner.plan import Plan, plan
from mlrunner.spec import Gen, parse_spec, round12
from mlrunner.spec.generators import check_dist, check_gen

TIME = "20240102.030405"


def make_plan(text: str, **kw: object) -> Plan:
    kw.setdefault("time", TIME)
    return plan(parse_spec(textwrap.dedent(text)), **kw)  # type: ignore[arg-type]


def values_of(p: Plan, key: str) -> list[object]:
    return [t.params[key] for t in p.tasks]


def close(ours: list[float], theirs: np.ndarray) -> bool:
    return len(ours) == len(theirs) and all(
        math.isclose(a, float(b), rel_tol=1e-11, abs_tol=1e-300) for a, b in zip(ours, theirs, strict=True)
    )


# --------------------------------------------------------------------------- generators
def test_range_is_pythons_with_exact_float_steps() -> None:
    assert check_gen("range", [0.1, 0.5, 0.1]).values() == (0.1, 0.2, 0.3, 0.4)
    assert check_gen("range", [0, 10, 3]).values() == (0, 3, 6, 9)  # ints stay ints
    assert check_gen("range", [3, 0, -1]).values() == (3, 2, 1)
    assert check_gen("range", [1, 0, -0.25]).values() == (1.0, 0.75, 0.5, 0.25)
    assert check_gen("range", [0, 1, 0.1]).values()[-1] == 0.9 and check_gen("range", [0, 1, 0.1]).size == 10
    big = check_gen("range", [0, 10**12])
    assert big.size == 10**12 and big.at(10**12 - 1) == 10**12 - 1  # never listed to be counted
    assert check_gen("range", [0, 10**4000, 7]).size == -(-(10**4000) // 7)  # past what len() takes


@settings(max_examples=200, deadline=None)
@given(
    st.integers(-1000, 1000),
    st.integers(-1000, 1000),
    st.integers(-50, 50).filter(bool),
)
def test_property_int_range_is_python_range(start: int, stop: int, step: int) -> None:
    expected = tuple(range(start, stop, step))
    if not expected:
        with pytest.raises(ValueError, match="gives no value"):
            check_gen("range", [start, stop, step])
        return
    assert check_gen("range", [start, stop, step]).values() == expected


FINITE = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False).map(lambda x: round(x, 3))


@settings(max_examples=200, deadline=None)
@given(FINITE, FINITE, st.integers(1, 60))
def test_property_linspace_and_logspace_match_numpy(start: float, stop: float, num: int) -> None:
    ours = check_gen("linspace", [start, stop, num]).values()
    assert close(list(ours), np.array([round12(x) for x in np.linspace(start, stop, num)]))
    a, b = start / 1e4, stop / 1e4  # exponents within a float's range
    logs = check_gen("logspace", [a, b, num]).values()
    assert close(list(logs), np.array([round12(x) for x in np.logspace(a, b, num)]))


@settings(max_examples=200, deadline=None)
@given(
    st.floats(1e-6, 1e6).map(lambda x: round(x, 6) or 1.0),
    st.floats(1e-6, 1e6).map(lambda x: round(x, 6) or 2.0),
    st.integers(1, 60),
    st.booleans(),
)
def test_property_geomspace_matches_numpy(start: float, stop: float, num: int, negative: bool) -> None:
    if negative:
        start, stop = -start, -stop
    ours = check_gen("geomspace", [start, stop, num]).values()
    assert close(list(ours), np.array([round12(x) for x in np.geomspace(start, stop, num)]))


@settings(max_examples=200, deadline=None)
@given(FINITE, FINITE, st.floats(0.001, 1000).map(lambda x: round(x, 3) or 0.5), st.booleans())
def test_property_generated_values_stay_within_their_bounds(
    a: float, b: float, step: float, down: bool
) -> None:
    lo, hi = min(a, b), max(a, b)
    if lo == hi:
        hi = lo + 1
    start, stop, step = (hi, lo, -step) if down else (lo, hi, step)
    try:
        gen = check_gen("range", [start, stop, step])
    except ValueError:
        return  # no value between them
    first = round12(start)  # a bound of more than 12 digits is rounded like the values
    for v in _sampled(gen):
        assert (stop < v <= first) if down else (first <= v < stop)  # type: ignore[operator]
    values = check_gen("linspace", [lo, hi, 7]).values()
    assert all(round12(lo) <= v <= round12(hi) for v in values)  # type: ignore[operator]
    glo, ghi = abs(lo) + 0.5, abs(lo) + 0.5 + abs(hi)  # bounds of more than 12 digits: rounded too
    assert all(
        round12(glo) <= v <= round12(ghi)  # type: ignore[operator]
        for v in check_gen("geomspace", [glo, ghi, 7]).values()
    )


def _sampled(gen: Gen) -> list[object]:
    n = gen.size
    return [gen.at(i) for i in sorted({0, 1, n // 2, n - 2, n - 1}) if 0 <= i < n]


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32), FINITE, FINITE, st.integers(-100, 100), st.integers(1, 100))
def test_property_draws_stay_within_their_bounds(seed: int, a: float, b: float, i: int, width: int) -> None:
    import random

    rng = random.Random(seed)
    lo, hi = min(a, b), max(a, b)
    for _ in range(20):
        assert round12(lo) <= check_dist("uniform", [lo, hi]).draw(rng) <= round12(hi)  # type: ignore[operator]
        x, y = abs(lo) + 1e-3, abs(lo) + 1e-3 + abs(hi)
        assert round12(x) <= check_dist("loguniform", [x, y]).draw(rng) <= round12(y)  # type: ignore[operator]
        assert i <= check_dist("randint", [i, i + width]).draw(rng) < i + width  # type: ignore[operator]
        assert check_dist("choice", ["a", 1, True]).draw(rng) in ("a", 1, True)
        assert math.isfinite(check_dist("normal", [lo, abs(hi)]).draw(rng))  # type: ignore[arg-type]


def test_generated_floats_never_reach_a_command_unrounded() -> None:
    p = make_plan(
        """\
        template: {a: "echo {x} {y}"}
        ---
        x: {range: [0.1, 0.4, 0.1]}
        y: {linspace: [0, 0.3, 4]}
        """
    )
    texts = " ".join(c.text for t in p.tasks for c in t.commands) + " ".join(t.name for t in p.tasks)
    assert "0.30000000000000004" not in texts and "0.1 0.3" in texts
    assert values_of(p, "x")[::4] == [0.1, 0.2, 0.3] and sorted(set(values_of(p, "y"))) == [0, 0.1, 0.2, 0.3]
    assert p.tasks[-1].name == "X_0.3-Y_0.3"


# --------------------------------------------------------------------------- sub-grids, zip
MODELS = textwrap.dedent(
    """\
    template:
      train: python train.py --model {model} [layers] [heads] [hidden] --lr {lr}
    default: {layers: 2, heads: 1, hidden: 64}
    ---
    model:
      transformer: {layers: [6, 12], heads: [4, 8]}
      lstm: {hidden: [256, 512]}
      linear: {}
    lr: [0.1, 0.01]
    """
)


def test_conditional_sub_grid_crosses_each_branch_with_the_rest() -> None:
    p = make_plan(MODELS)
    assert len(p.tasks) == 14  # (4 transformer + 2 lstm + 1 linear) x 2 lr
    assert [t.name for t in p.tasks[:3]] == [
        "Model_transformer-Layers_6-Heads_4-Lr_0.1",
        "Model_transformer-Layers_6-Heads_4-Lr_0.01",
        "Model_transformer-Layers_6-Heads_8-Lr_0.1",
    ]
    assert [t.name for t in p.tasks[8:]] == [
        "Model_lstm-Hidden_256-Lr_0.1",
        "Model_lstm-Hidden_256-Lr_0.01",
        "Model_lstm-Hidden_512-Lr_0.1",
        "Model_lstm-Hidden_512-Lr_0.01",
        "Model_linear-Lr_0.1",
        "Model_linear-Lr_0.01",
    ]
    lstm = p.tasks[8]
    assert lstm.params == {"model": "lstm", "hidden": 256, "lr": 0.1, "layers": 2, "heads": 1}
    assert lstm.grid_params == {"model": "lstm", "hidden": 256, "lr": 0.1}
    assert lstm.commands[0].text == "python train.py --model lstm --layers 2 --heads 1 --hidden 256 --lr 0.1"
    assert p.orphans == () and p.warnings == ()


def test_sub_grids_nest_and_follow_product_order() -> None:
    p = make_plan(
        """\
        template: {a: "echo {lr} {opt} [beta] [momentum]"}
        default: {beta: 0, momentum: 0}
        ---
        lr: [1, 2]
        opt:
          adam: {beta: {linspace: [0.9, 0.99, 2]}}
          sgd:
            momentum:
              nesterov: {}
              heavy: {damping: [0.1]}
        """
    )
    assert [t.name for t in p.tasks] == [
        "Lr_1-Opt_adam-Beta_0.9",
        "Lr_1-Opt_adam-Beta_0.99",
        "Lr_1-Opt_sgd-Momentum_nesterov",
        "Lr_1-Opt_sgd-Momentum_heavy-Damping_0.1",
        "Lr_2-Opt_adam-Beta_0.9",
        "Lr_2-Opt_adam-Beta_0.99",
        "Lr_2-Opt_sgd-Momentum_nesterov",
        "Lr_2-Opt_sgd-Momentum_heavy-Damping_0.1",
    ]
    assert p.orphans == ("damping",)


def test_zip_pairs_lists_and_crosses_the_rest() -> None:
    p = make_plan(
        """\
        template: {a: "echo {lr} {bs} {warmup} {data} {lang}"}
        ---
        lr: [0.1, 0.2, 0.3]
        bs: [8, 16]
        warmup: {range: [100, 400, 100]}
        data: [wmt, iwslt]
        lang: [de, fr]
        _zip: [[warmup, lr], [data, lang]]
        """
    )
    assert len(p.tasks) == 3 * 2 * 2
    assert [(t.params["lr"], t.params["warmup"]) for t in p.tasks[::4]] == [
        (0.1, 100),
        (0.2, 200),
        (0.3, 300),
    ]
    assert {(t.params["data"], t.params["lang"]) for t in p.tasks} == {("wmt", "de"), ("iwslt", "fr")}
    assert p.tasks[0].name == "Lr_0.1-Bs_8-Warmup_100-Data_wmt-Lang_de"  # names: document order
    assert [t.params["bs"] for t in p.tasks[:4]] == [8, 8, 16, 16]  # lr's group is the outer factor


def test_zip_inside_a_sub_grid_pairs_its_own_params() -> None:
    p = make_plan(
        """\
        template: {a: "echo {m} [lr] [wu] [d]"}
        default: {wu: 0, d: z}
        ---
        m:
          warm:
            lr: [1, 2, 3]
            wu: {range: [10, 40, 10]}
            d: [x, y]
            _zip: [wu, lr]
          cold: {lr: 9}
        """
    )
    assert [t.name for t in p.tasks] == [
        "M_warm-Lr_1-Wu_10-D_x",
        "M_warm-Lr_1-Wu_10-D_y",
        "M_warm-Lr_2-Wu_20-D_x",
        "M_warm-Lr_2-Wu_20-D_y",
        "M_warm-Lr_3-Wu_30-D_x",
        "M_warm-Lr_3-Wu_30-D_y",
        "M_cold-Lr_9",
    ]


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 30), st.integers(1, 4), st.integers(0, 3))
def test_property_zip_of_n_length_lists_gives_n_combinations(n: int, width: int, others: int) -> None:
    keys = [f"z{i}" for i in range(width + 1)]
    lines = [f"{k}: [{', '.join(f'{k}v{j}' for j in range(n))}]" for k in keys]
    lines += [f"o{i}: [a, b]" for i in range(others)]
    lines.append(f"_zip: [{', '.join(keys)}]")
    text = (
        'template: {a: "echo '
        + " ".join(f"{{{k}}}" for k in keys + [f"o{i}" for i in range(others)])
        + '"}\n'
    )
    p = make_plan(text + "---\n" + "\n".join(lines) + "\n")
    assert len(p.tasks) == n * 2**others
    for t in p.tasks:
        assert len({str(t.params[k]).split("v")[1] for k in keys}) == 1  # same position in every list


def test_exclude_drops_matching_combinations_include_adds_them_as_they_are() -> None:
    extra = """\
        _exclude:
          - {model: lstm, lr: 0.01}
          - {layers: 12, heads: [4, 8]}
          - {hidden: 64, model: linear}
        _include:
          - {model: transformer, layers: 24, lr: 0.001}
          - {model: lstm, lr: 0.01}
        """
    p = make_plan(MODELS + textwrap.dedent(extra))
    names = [t.name for t in p.tasks]
    assert "Model_lstm-Hidden_256-Lr_0.01" not in names and "Model_lstm-Hidden_256-Lr_0.1" in names
    assert not any("Layers_12" in n for n in names)
    assert not any(n.startswith("Model_linear") for n in names)  # hidden is 64 there by default
    assert names[-2:] == [
        "Model_transformer-Layers_24-Lr_0.001",
        "Model_lstm-Lr_0.01",
    ]  # included, not excluded
    assert len(names) == 4 + 2 + 2


def test_exclude_matches_numbers_by_value_and_alias_targets() -> None:
    p = make_plan(
        """\
        template: {a: "echo {x} [enc]"}
        alias: {arch: {pre: {enc: true}, post: {enc: false}}}
        ---
        x: {linspace: [1, 3, 3]}
        arch: [pre, post]
        _exclude: [{x: 2}, {enc: false, x: 3}]
        """
    )
    assert [t.name for t in p.tasks] == ["X_1-Arch_pre", "X_1-Arch_post", "X_3-Arch_pre"]


EXCLUDE_VALUES = st.lists(st.sampled_from([0, 1, 2, "a", "b", True]), min_size=1, max_size=3)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.fixed_dictionaries({}, optional={"p": EXCLUDE_VALUES, "q": EXCLUDE_VALUES}), max_size=3))
def test_property_excludes_never_leave_a_matching_combination(entries: list[dict[str, list[object]]]) -> None:
    import json

    entries = [e for e in entries if e]
    text = 'template: {a: "echo {p} [q]"}\n---\np: [0, 1, 2, a]\nq: [a, b, true, 1]\n'
    if entries:
        text += f"_exclude: {json.dumps(entries)}\n"
    p = make_plan(text)

    def matches(v: object, allowed: list[object]) -> bool:
        return any(type(v) is type(a) and v == a for a in allowed)

    for t in p.tasks:
        assert not any(all(matches(t.params[k], vs) for k, vs in e.items()) for e in entries)
    expected = sum(
        1
        for pv in [0, 1, 2, "a"]
        for qv in ["a", "b", True, 1]
        if not any(all(matches({"p": pv, "q": qv}[k], vs) for k, vs in e.items()) for e in entries)
    )
    assert len(p.tasks) == expected


# --------------------------------------------------------------------------- seeds: samples, order
SAMPLED = """\
    template: {a: "echo {lr} {bs} {model} [hidden]"}
    default: {hidden: 0}
    ---
    _samples: 12
    lr: {loguniform: [0.0001, 0.1]}
    bs: [16, 32, 64]
    model:
      lstm: {hidden: {randint: [64, 512]}}
      linear: {}
    drop: {uniform: [0, 0.5]}
    noise: {normal: [0, 1]}
    act: {choice: [relu, gelu]}
    _exclude: [{model: linear, bs: 64}]
    """


def test_samples_are_drawn_within_bounds_and_reproducible_for_a_seed() -> None:
    a = make_plan(SAMPLED, seed=5)
    assert len(a.tasks) == 12 and a.drew and a.seed == 5
    for t in a.tasks:
        assert 0.0001 <= t.params["lr"] <= 0.1 and t.params["bs"] in (16, 32, 64)
        assert 0 <= t.params["drop"] <= 0.5 and t.params["act"] in ("relu", "gelu")
        assert not (t.params["model"] == "linear" and t.params["bs"] == 64)
        if t.params["model"] == "lstm":
            assert 64 <= t.params["hidden"] < 512 and "Hidden_" in t.name
        assert round12(t.params["lr"]) == t.params["lr"]  # type: ignore[arg-type]
    assert [t.params for t in a.tasks] == [t.params for t in make_plan(SAMPLED, seed=5).tasks]
    assert [t.params for t in a.tasks] != [t.params for t in make_plan(SAMPLED, seed=6).tasks]
    fixed = make_plan(SAMPLED.replace("_samples: 12", "_samples: 12\n    _seed: 5"), seed=99)
    assert [t.params for t in fixed.tasks] == [t.params for t in a.tasks]  # _seed wins over the seed given
    chosen = make_plan(SAMPLED)
    assert isinstance(chosen.seed, int)  # none given: one is chosen, and it repeats the draw
    assert [t.params for t in make_plan(SAMPLED, seed=chosen.seed).tasks] == [t.params for t in chosen.tasks]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**40), st.integers(1, 20))
def test_property_expansion_is_deterministic_for_a_seed(seed: int, n: int) -> None:
    text = SAMPLED.replace("_samples: 12", f"_samples: {n}\n    _order: shuffle")
    first = make_plan(text, seed=seed)
    again = make_plan(text, seed=seed)
    assert [(t.name, t.params, t.commands) for t in first.tasks] == [
        (t.name, t.params, t.commands) for t in again.tasks
    ]


def test_shuffle_is_a_seeded_permutation_of_the_document_order() -> None:
    text = (
        "template: {a: 'echo {x} {y}'}\n---\nx: {range: [0, 6]}\ny: [a, b]\n"
        "---\nx: [7, 8, 9]\ny: c\n_order: shuffle\n"
    )
    plain = make_plan(text.replace("_order: shuffle", ""), seed=1)
    one = make_plan(text, seed=1, order="shuffle")
    assert sorted(t.name for t in one.tasks) == sorted(t.name for t in plain.tasks)
    assert [t.name for t in one.tasks[:12]] != [t.name for t in plain.tasks[:12]]  # each document shuffled
    assert {t.name for t in one.tasks[:12]} == {t.name for t in plain.tasks[:12]}  # ... within itself
    assert [t.name for t in one.tasks] == [t.name for t in make_plan(text, seed=1, order="shuffle").tasks]
    assert [t.name for t in one.tasks] != [t.name for t in make_plan(text, seed=2, order="shuffle").tasks]
    assert make_plan(text, seed=1).tasks[:12] == plain.tasks[:12]  # _order: shuffle only in grid 2
    assert not plain.drew and one.drew


def test_sample_of_a_059_grid_draws_what_it_drew_before_issue_15() -> None:
    p = make_plan("template: {a: 'echo {x} {y}'}\n---\nx: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\ny: [a, b, c]\n",
                  sample=4, seed=11)  # fmt: skip
    assert [t.name for t in p.tasks] == ["X_1-Y_c", "X_2-Y_b", "X_6-Y_b", "X_8-Y_a"]  # the pre-issue-15 draw


def test_sample_of_new_forms_is_reproducible_and_respects_excludes() -> None:
    text = MODELS + "_exclude: [{model: transformer}]\n"
    a = make_plan(text, sample=3, seed=4)
    assert len(a.tasks) == 3 and not any("transformer" in t.name for t in a.tasks)
    assert [t.name for t in a.tasks] == [t.name for t in make_plan(text, sample=3, seed=4).tasks]
    huge = make_plan(
        "template: {a: 'echo {x} {m}'}\n---\nx: {range: [0, 1000000000000]}\nm: {a: {}, b: {}}\n"
        "_exclude: [{m: a}]\n",
        sample=5,
        seed=1,
    )  # 2e12 combinations: sampled without being listed
    assert len(huge.tasks) == 5 and all(t.params["m"] == "b" for t in huge.tasks)
    ranges = make_plan(
        "template: {a: 'echo {x} {y}'}\n---\nx: {range: [0, 1000000000000]}\n"
        "y: {linspace: [0, 1, 1000000000000]}\n_zip: [x, y]\n",
        sample=3,
        seed=1,
    )  # a plain document of huge ranges: only the drawn values are listed
    text = "template: {a: 'echo {x} {y}'}\n---\nx: {range: [0, 10000000000]}\ny: {range: [0, 10000000000]}\n"
    beyond = make_plan(text, sample=2, seed=1)
    assert len(beyond.tasks) == 2  # 10**20 combinations: more than len() takes
    assert len(ranges.tasks) == 3 and all(
        t.params["y"] == round12(t.params["x"] / 999999999999) for t in ranges.tasks
    )


# --------------------------------------------------------------------------- dedup, env, attempt
@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=6), st.lists(st.integers(0, 5), min_size=1, max_size=6)
)
def test_property_dedup_holds_across_documents_of_any_form(xs: list[int], ys: list[int]) -> None:
    text = (
        "template: {a: 'echo {x}'}\n"
        f"---\nx: {xs}\n"
        f"---\nx: {{range: [0, {max(ys) + 1}]}}\n"
        "---\nm: {a: {x: " + str(ys) + "}}\n"
        "---\n_samples: 8\nx: {randint: [0, 6]}\n"
    )
    p = make_plan(text, seed=3)
    resolved = [tuple(sorted(t.params.items())) for t in p.tasks]
    assert len(resolved) == len(set(resolved))  # every set of resolved params runs once
    assert [t.params["x"] for t in p.tasks[: len(set(xs))]] == list(dict.fromkeys(xs))  # first wins


def test_env_renders_placeholders_as_text_and_attempt_as_a_shell_variable() -> None:
    p = make_plan(
        """\
        template: {train: "python t.py --data {data} --try {_attempt}"}
        default: {data: "my data $(x)"}
        env: {OMP_NUM_THREADS: 1, RUN: "{_name}/{data}", KEEP: "[data] {{not a field}}"}
        ---
        lr: [0.1]
        _env: {OMP_NUM_THREADS: 4, TAG: "lr={lr} at {_output}"}
        """,
        output="out dir",
    )
    t = p.tasks[0]
    assert dict(t.env) == {
        "OMP_NUM_THREADS": "4",  # the grid's _env wins
        "RUN": "Lr_0.1/my data $(x)",  # no shell quoting: it is an environment value
        "KEEP": "[data] {{not a field}}",
        "TAG": "lr=0.1 at out dir/Lr_0.1",
    }
    assert t.commands[0].text == "python t.py --data 'my data $(x)' --try ${MLRUNNER_ATTEMPT}"
    assert p.orphans == ()  # lr is used by an environment value


def test_tasks_differing_only_in_env_are_not_identical() -> None:
    p = make_plan("template: {a: echo}\nenv: {X: '{x}'}\n---\nx: [1, 2]\n")
    assert p.warnings == ()
    q = make_plan("template: {a: echo}\n---\nx: [1, 2]\n")
    assert len(q.warnings) == 1 and "differ only in x (used by no command)" in q.warnings[0]


def test_sample_option_draws_at_most_n_of_a_samples_document() -> None:
    p = make_plan(SAMPLED, seed=5, sample=4)
    assert [t.params for t in p.tasks] == [t.params for t in make_plan(SAMPLED, seed=5).tasks][:4]


def test_samples_document_never_lists_its_product() -> None:
    p = make_plan(
        "template: {a: 'echo {a} {b} {c}'}\n---\n_samples: 3\n"
        "a: {range: [0, 1000000000000]}\nb: {range: [0, 1000000000000]}\nc: {uniform: [0, 1]}\n",
        seed=1,
    )
    assert len(p.tasks) == 3


def test_error_when_excludes_reject_every_draw() -> None:
    with pytest.raises(SpecError) as info:
        make_plan(
            "template: {a: 'echo {x}'}\n---\n_samples: 2\nx: {randint: [0, 3]}\n_exclude: [{x: [0, 1, 2]}]\n"
        )
    assert (
        info.value.key == "_exclude"
        and info.value.line == 5
        and "rejects nearly every draw" in str(info.value)
    )


def test_reference_params_yaml_examples_of_the_grammar_plan() -> None:
    """The commented examples of the reference params.yaml (mlrunner init) are valid as written."""
    from helpers import ROOT

    text = (ROOT / "params.yaml").read_text()
    _, _, section = text.partition("the sweep grammar\n")
    lines = section.splitlines()
    start = lines.index("# ---")
    grids = "\n".join(line[2:] for line in lines[start:] if line.startswith("# ") or line == "#")
    env = text[text.index("# env:\n") :].split("\n\n")[0]
    first = "template:\n  a: echo {_name}\n" + "\n".join(line[2:] for line in env.splitlines()) + "\n"
    p = make_plan(first + grids + "\n", seed=1, allow_orphans=True)
    first_doc, second_doc = 4 * 5 * 4 * 3, 8 - 4 + 4 - 2 + 2 + 1  # zip x 5 x 4 x 3; 14 - 6 excluded + 1
    assert len(p.tasks) == first_doc + second_doc + 20
    assert sum(t.name.startswith("Model_") for t in p.tasks) == second_doc
    assert p.tasks[0].name == "Lr_0.1-Epochs_10-Warmup_0-Wd_0.0001-Eps_1e-08"
    assert dict(p.tasks[0].env) == {"OMP_NUM_THREADS": "1", "WANDB_NAME": p.tasks[0].name}
    assert dict(p.tasks[-1].env)["OMP_NUM_THREADS"] == "2"


def test_readme_sweep_grammar_example_plans() -> None:
    from helpers import ROOT

    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Sweep grammar", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    first = "template:\n  a: echo {model} [layers] [heads] [hidden] {lr} {warmup} {batch}\n"
    first += "default: {layers: 0, heads: 0, hidden: 0, warmup: 0, batch: 0, model: none}\n"
    p = make_plan(first + block, seed=2)
    assert len(p.tasks) == 14 - 2 + 1 + 20  # an exclude drops 2, an include adds 1; 20 samples
    assert all(dict(t.env) == {"OMP_NUM_THREADS": "2"} for t in p.tasks[:13]) and not p.tasks[13].env
    assert sorted(t.name for t in p.tasks[:13])[0] == "Model_linear-Lr_0.1-Warmup_100"


HOSTILE = [
    "$(touch pwned)",
    "it's",
    'say "hi"',
    "a; touch pwned",
    "..",
    "../../etc",
    "[b]bold[/b]",
    " x ",
    "{p}",
]


def test_hostile_values_of_every_form_reach_bash_and_the_environment_literally(tmp_path: object) -> None:
    import json
    import os
    import subprocess
    from pathlib import Path

    work = Path(str(tmp_path))
    grid = {
        "m": {v: {"q": [v]} for v in HOSTILE},  # conditional sub-grid: hostile keys and values
        "z": HOSTILE,
        "w": list(reversed(HOSTILE)),
        "_zip": ["z", "w"],
    }
    text = (
        'template: {a: "printf \'%s\\\\0\' {m} {q} {z} {w} \\"$E\\" > {_output}/out"}\n'
        "env: {E: '{z}|{q}'}\n---\n" + json.dumps(grid) + "\n"
    )
    p = make_plan(text, output=str(work / "out 'dir' $(x)"))
    assert len(p.tasks) == len(HOSTILE) ** 2
    for t in p.tasks:
        os.makedirs(t.output_dir, exist_ok=True)
        env = {**os.environ, **t.env}
        subprocess.run(["bash", "-c", t.commands[0].text], cwd=work, env=env, check=True)
        got = (Path(t.output_dir) / "out").read_bytes().decode().split("\0")[:-1]
        m, q, z, w = (t.params[k] for k in "mqzw")
        assert got == [m, q, z, w, f"{z}|{q}"]
        assert os.path.dirname(t.output_dir) == str(work / "out 'dir' $(x)")
    assert not (work / "pwned").exists()

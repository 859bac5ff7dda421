"""Sweep grammar v2 (issue 15) through the real `run` command: every malformed form is a params.yaml
error (exit 2, file:line:key, a hint, no traceback), `--dry-run --json`, the environment commands
see (env:, MLRUNNER_*, CPU slots), seeds printed, stored and reused by `--resume`."""

from __future__ import annotations

import json
import os
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import Project
from slurm_support import slurm_cluster

from mlrunner.errors import SpecError
from mlrunner.plan import plan
from mlrunner.spec import parse_spec

__all__ = ["slurm_cluster"]  # the fixture, imported for pytest

T = "template:\n  train: python train.py {p}\n"
G = T + "---\n"
DEEP = "".join(f"{'    ' * i}p{i}:\n{'    ' * i}  v:\n" for i in range(40)) + " " * 160 + "x: 1\n"
BOMB = "&a0 {k: 1}"
for _i in range(1, 9):
    BOMB = f"&a{_i} {{<<: [{BOMB}, " + ", ".join([f"*a{_i - 1}"] * 8) + "]}"

# fmt: off
BAD = [
    # (id, text, line, key, words in the message, words in the hint)
    ("gen-unknown", G + "p: {arange: [0, 5]}\n", 4, "p", "'arange' is not a value generator", "'range'"),
    ("gen-not-alone", G + "p: {range: [0, 5], x: [1]}\n", 4, "p", "must be the only key", "valid forms"),
    ("range-zero-step", G + "p: {range: [0, 5, 0]}\n", 4, "p", "step of a range cannot be 0",
     "{range: [start, stop, step]}"),
    ("range-empty", G + "p: {range: [5, 0]}\n", 4, "p", "gives no value", "stop excluded"),
    ("range-one-arg", G + "p: {range: [5]}\n", 4, "p", "[start, stop]", "{range:"),
    ("range-text", G + "p: {range: [a, 5]}\n", 4, "p", "must be a number", "{range:"),
    ("range-scalar", G + "p: {range: 5}\n", 4, "p", "takes a list", "{range:"),
    ("range-inf", G + "p: {range: [0, .inf]}\n", 4, "p", "finite", "{range:"),
    ("linspace-float-count", G + "p: {linspace: [0, 1, 2.5]}\n", 4, "p", "must be an integer",
     "{linspace: [start, stop, num]}"),
    ("linspace-no-count", G + "p: {linspace: [0, 1, 0]}\n", 4, "p", "at least 1", "{linspace:"),
    ("linspace-two-args", G + "p: {linspace: [0, 1]}\n", 4, "p", "[start, stop, num]", "{linspace:"),
    ("geomspace-zero", G + "p: {geomspace: [0, 1, 3]}\n", 4, "p", "same sign", "{geomspace:"),
    ("logspace-overflow", G + "p: {logspace: [0, 400, 3]}\n", 4, "p", "exponents", "{logspace:"),
    ("dist-without-samples", G + "q: 1\np: {uniform: [0, 1]}\n", 5, "p", "draws no samples", "_samples: 20"),
    ("uniform-reversed", G + "_samples: 2\np: {uniform: [1, 0]}\n", 5, "p", "lower bound comes first",
     "{uniform:"),
    ("loguniform-zero", G + "_samples: 2\np: {loguniform: [0, 1]}\n", 5, "p", "0 < a", "{loguniform:"),
    ("randint-float", G + "_samples: 2\np: {randint: [0, 1.5]}\n", 5, "p", "two integers", "{randint:"),
    ("randint-empty", G + "_samples: 2\np: {randint: [3, 3]}\n", 5, "p", "a must be < b", "{randint:"),
    ("normal-negative", G + "_samples: 2\np: {normal: [0, -1]}\n", 5, "p", "cannot be negative", "{normal:"),
    ("choice-empty", G + "_samples: 2\np: {choice: []}\n", 5, "p", "at least one value", "{choice:"),
    ("empty-mapping", G + "p: {}\n", 4, "p", "empty mapping", "sub-grid"),
    ("subgrid-scalar", G + "p: {a: 1}\n", 4, "p", "must be a mapping of param", "alias"),
    ("subgrid-setting", G + "p:\n  a: {_title: x}\n", 5, "_title", "cannot be set in a sub-grid", "_zip"),
    ("subgrid-key-above", G + "lr: [1]\np:\n  a: {lr: [2]}\n", 6, "lr", "set twice", "once"),
    ("subgrid-crossing", G + "p: {a: {x: [1]}}\nq: {b: {x: [2]}}\n", 5, "x", "set twice", "once"),
    ("branch-twice", G + "p:\n  1: {}\n  1: {}\n", 6, "p.1", "duplicate", "remove"),
    ("branch-twice-typed", G + "p:\n  1: {}\n  '1': {}\n  1: {}\n", 6, "p.1", "duplicate", "remove"),
    ("exclude-empty-values", G + "p: [1]\n_exclude: [{p: []}]\n", 5, "_exclude", "list of values is empty",
     "{p: [a, b]}"),
    ("zip-lengths", G + "p: [1, 2]\nq: [1]\n_zip: [p, q]\n", 6, "_zip", "'p' (2 values) with 'q' (1 value)",
     "same length"),
    ("zip-unknown", G + "p: [1, 2]\nqq: [1, 2]\n_zip: [p, q]\n", 6, "_zip", "not a param here", "'qq'"),
    ("zip-alone", G + "p: [1, 2]\n_zip: [p]\n", 5, "_zip", "at least two", "_zip: [lr, warmup]"),
    ("zip-twice", G + "p: [1]\nq: [1]\nr: [1]\n_zip: [[p, q], [q, r]]\n", 7, "_zip", "twice", "_zip:"),
    ("zip-subgrid", G + "p: [1]\nm: {a: {}}\n_zip: [p, m]\n", 6, "_zip", "conditional sub-grid",
     "same length"),
    ("zip-scalar", G + "p: [1]\n_zip: p\n", 5, "_zip", "must list the params", "_zip: [lr"),
    ("exclude-unknown", G + "lr: [1]\n_exclude: [{lrr: 1}]\n", 5, "_exclude", "'lrr'", "did you mean 'lr'?"),
    ("exclude-mapping", G + "p: [1]\n_exclude: {p: 1}\n", 5, "_exclude", "list of mappings", "_exclude: ["),
    ("exclude-empty-entry", G + "p: [1]\n_exclude: [{}]\n", 5, "_exclude", "each '_exclude' entry", "e.g."),
    ("include-reserved", G + "p: [1]\n_include: [{_output: x}]\n", 5, "_include", "cannot be set", "e.g."),
    ("include-list", G + "p: [1]\n_include: [{p: [1, 2]}]\n", 5, "_include.p", "cannot be a list",
     "quote it"),
    ("samples-zero", G + "_samples: 0\np: 1\n", 4, "_samples", ">= 1", "_samples: 20"),
    ("seed-text", G + "_seed: abc\np: 1\n", 4, "_seed", "an integer", "_seed: 1"),
    ("order-unknown", G + "_order: random\np: 1\n", 4, "_order", "document, shuffle", "_order: shuffle"),
    ("env-name", T + "env: {'A B': 1}\n---\np: 1\n", 3, "env.A B", "letters, digits", "OMP_NUM_THREADS"),
    ("env-reserved", G + "_env: {MLRUNNER_ATTEMPT: 1}\np: 1\n", 4, "_env.MLRUNNER_ATTEMPT", "set by mlrunner",
     "MLRUNNER_*"),
    ("env-cuda", T + "env: {CUDA_VISIBLE_DEVICES: 1}\n---\np: 1\n", 3, "env.CUDA_VISIBLE_DEVICES",
     "set by mlrunner", "resource"),
    ("env-bool", T + "env: {X: true}\n---\np: 1\n", 3, "env.X", "boolean", "quote it: X: 'true'"),
    ("env-list", T + "env: [a]\n---\np: 1\n", 3, "env", "must be a mapping", "OMP_NUM_THREADS"),
    ("gpus-huge", G + "_gpus: 1000000000000\np: 1\n", 4, "_gpus", "more than 1024", "_gpus: 2"),
    ("cpus-zero", T + "resource: {cpus: 0}\n---\np: 1\n", 3, "resource.cpus", "from 1 to", "{cpus: 4}"),
    ("cpus-mixed", T + "resource: {cpus: 2, per_gpu: 2}\n---\np: 1\n", 3, "resource.cpus",
     "cannot be combined", "{cpus: 4}"),
    ("int-digits", G + "p: [" + "9" * 5000 + "]\n", 4, "p", "more than 4300 digits", "quote it"),
    ("hex-digits", G + "p: 0x" + "f" * 4000 + "\n", 4, "p", "more than 4300 digits", "quote it"),
    ("alias-bomb", G + "<<: " + BOMB + "\np: 1\n", 4, None, "aliases (*name) of this document repeat",
     "fewer aliases"),
    ("alias-loop", G + "p: &a {x: *a}\n", 4, None, "refers to a node that contains it", "*name"),
    ("subgrid-too-deep", G + DEEP, 68, "p32", "nest more than 32 deep", "flatten"),
    # found while planning
    ("env-no-value", T + "env: {X: '{nope}'}\n---\np: 1\n", 3, "env.X", "'nope' has no value", "default:"),
    ("env-bool-param", G + "_env: {X: '{q}'}\nq: [true]\np: 1\n", 4, "_env.X", "is a boolean", "quote"),
    ("orphan-initials", "template:\n  t: python train.py [learning-rate]\ndefault: {learning-rate: 0.1}\n"
     "---\nlr: [0.01, 0.001]\n", 5, "lr", "'lr' is used by no command; did you mean 'learning-rate'?",
     "--allow-orphans"),
    ("orphan-typo", "template:\n  t: python train.py [n-embed]\ndefault: {n-embed: 64}\n---\n"
     "n-embd: [32, 128]\n", 5, "n-embd", "did you mean 'n-embed'?", "--allow-orphans"),
    ("placeholder-typo", "template:\n  t: python train.py [n-embed]\n---\nn-embd: [32, 128]\n", 2,
     "template.t", "'n-embed' has no value", "did you mean 'n-embd'"),
    ("orphan-default", "template:\n  t: python train.py [batch-size]\n"
     "default: {batch_size: 8, batch-size: 4}\n---\nx: 1\n", 3, "default.batch_size",
     "did you mean 'batch-size'?", "rename"),
]
# fmt: on


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        plan(parse_spec(text, "conf/my params.yaml"), time="t", seed=1)
    return info.value


@pytest.mark.parametrize(
    ("text", "line", "key", "words", "hint"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_malformed_form_names_file_line_key_and_hint(
    text: str, line: int | None, key: str | None, words: str, hint: str | None
) -> None:
    err = _error(text)
    message = str(err)
    assert (err.file, err.line, err.key) == ("conf/my params.yaml", line, key), message
    assert words in message, message
    assert err.exit_code == 2
    assert hint is not None and err.hint and hint in err.hint, message  # every mistake has a hint


def test_every_malformed_form_exits_2_through_the_cli_without_a_traceback(project: Project) -> None:
    def one(case: tuple[str, str, int | None, str | None, str, str | None]) -> str | None:
        name, text, line, key, words, hint = case
        sub = project.path / name
        sub.mkdir()
        (sub / "params.yaml").write_text(text)
        res = project.run("--dry-run", "-y", f"{name}/params.yaml", "-o", f"{name}/out", timeout=60)
        where = f"{name}/params.yaml:{line}:" if line else f"{name}/params.yaml: "
        problems = [
            res.returncode != 2 and f"exit {res.returncode}",
            "Traceback" in res.stderr + res.stdout and "traceback",
            not res.stderr.startswith(f"error: {where}") and "no file:line",
            key is not None and f"key '{key}'" not in res.stderr and "no key",
            words not in res.stderr and "message",
            "\n  hint: " not in res.stderr and "no hint",
            (sub / "out").exists() and "wrote the output",
        ]
        bad = [p for p in problems if p]
        return f"{name}: {bad}\n{res.stderr}" if bad else None

    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [f for f in pool.map(one, BAD) if f]
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------- running the grammar
def _write(project: Project, text: str) -> None:
    project.write(textwrap.dedent(text))


def test_dry_run_json_lists_tasks_with_their_status_and_writes_nothing(project: Project) -> None:
    _write(
        project,
        """\
        template:
          train: echo train {model} [hidden] {lr} > {_output}/out.txt
          test: test {model} = lstm
        default: {hidden: 0}
        env: {OMP_NUM_THREADS: 1}
        resource: {cpus: 2}
        ---
        model:
          lstm: {hidden: [8, 16]}
          "bad $(x) 'q'": {}
        lr: {linspace: [0.1, 0.2, 2]}
        _exclude: [{hidden: 16, lr: 0.2}]
        """,
    )
    res = project.run("--dry-run", "--json", check=0)
    tasks = json.loads(res.stdout)
    assert [t["name"] for t in tasks] == [
        "Model_lstm-Hidden_8-Lr_0.1",
        "Model_lstm-Hidden_8-Lr_0.2",
        "Model_lstm-Hidden_16-Lr_0.1",
        "Model_bad $(x) 'q'-Lr_0.1",
        "Model_bad $(x) 'q'-Lr_0.2",
    ]
    first = tasks[0]
    assert first["params"] == {"model": "lstm", "hidden": 8, "lr": 0.1}
    assert first["output_dir"] == "output/Model_lstm-Hidden_8-Lr_0.1"
    assert first["commands"] == {
        "train": "echo train lstm --hidden 8 0.1 > output/Model_lstm-Hidden_8-Lr_0.1/out.txt",
        "test": "test lstm = lstm",
    }
    assert {t["status"] for t in tasks} == {"pending"}  # no ledger yet
    assert "Orphan params: set()" in res.stderr and "Dry run: 5 tasks" in res.stderr
    assert not (project.path / "output").exists()

    ran = project.run(check=1)  # the 'bad' tasks fail their test command
    assert "START   slot: 0" in ran.stdout and "gpu:" not in ran.stdout
    after = json.loads(project.run("--dry-run", "--json", check=0).stdout)
    assert [t["status"] for t in after] == ["finished"] * 3 + ["pending"] * 2
    forced = json.loads(project.run("--dry-run", "--json", "-f", check=0).stdout)
    assert {t["status"] for t in forced} == {"pending"}  # what a rerun with -f would do
    res = project.run("--json", check=2)
    assert "--json goes with --dry-run" in res.stderr


def test_commands_see_env_attempt_and_the_run(project: Project) -> None:
    _write(
        project,
        """\
        template:
          show: >
            printf '%s\\n' "$OMP_NUM_THREADS" "$TAG" "$MLRUNNER_ATTEMPT" "$MLRUNNER_RESUMED"
            "$MLRUNNER_EXPERIMENT_DIR" "$MLRUNNER_RUN_ID" "[$CUDA_VISIBLE_DEVICES]" {_attempt}
            ${MLRUNNER_RETRY:+--resume} > {_output}/env.$MLRUNNER_ATTEMPT;
            case {x} in ok) true;; "fails once") test -e {_output}/env.2;; *) test -e resume.ok;; esac
        env: {OMP_NUM_THREADS: 1, TAG: "{x} of {_name}"}
        ---
        x: [ok, "fails once", late]
        _env: {OMP_NUM_THREADS: 3}
        """,
    )
    res = project.run("-r", "cpu:2", "--retries", "1", check=1)
    assert res.stdout.count("START   slot: ") == 5 and "gpu:" not in res.stdout  # 1 + 2 + 2 attempts
    out = project.path / "output"
    ok = (out / "X_ok" / "env.1").read_text().splitlines()
    assert ok == ["3", "ok of X_ok", "1", "0", str(out / "X_ok"), "1", "[]", "1"]
    first = (out / "X_fails once" / "env.1").read_text().splitlines()
    retry = (out / "X_fails once" / "env.2").read_text().splitlines()
    assert first[1:4] == ["fails once of X_fails once", "1", "0"] and len(first) == 8
    assert retry[2:4] == ["2", "0"] and retry[7:] == ["2", "--resume"]  # the checkpoint idiom
    (project.path / "resume.ok").write_text("")
    project.run("--resume", check=0)
    late = (out / "X_late" / "env.1").read_text().splitlines()
    assert late[2:6] == ["1", "1", str(out / "X_late"), "1"]  # attempt 1 of the resume, the same run


SAMPLED = """\
    template:
      train: test ! -e fail.flag
    ---
    _samples: 6
    lr: {loguniform: [0.0001, 0.1]}
    bs: [8, 16, 32]
    _order: shuffle
    """


def test_a_chosen_seed_is_printed_stored_and_reused_by_resume(project: Project) -> None:
    _write(project, SAMPLED)
    dry = project.run("--dry-run", "--json", check=0)
    seed = next(line for line in dry.stderr.splitlines() if line.startswith("Seed: ")).split()[1]
    names = [t["name"] for t in json.loads(dry.stdout)]
    again = json.loads(project.run("--dry-run", "--json", "--seed", seed, check=0).stdout)
    assert [t["name"] for t in again] == names  # a rerun with that seed: the same tasks, same order
    (project.path / "fail.flag").write_text("")
    ran = project.run(check=1)  # a run chooses its own seed, prints and stores it; every task fails
    run_seed = next(line for line in ran.stdout.splitlines() if line.startswith("Seed: ")).split()[1]
    planned = [t["name"] for t in json.loads(project.run("--dry-run", "--json", "--seed", run_seed).stdout)]
    out = project.path / "output"
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and p.name[0] != ".") == sorted(planned)
    (project.path / "fail.flag").unlink()
    res = project.run("--resume", check=0)  # the stored seed: the same 6 tasks, now finished
    assert "Tasks: 6, Commands: 6" in res.stdout and res.stdout.count("START") == 6
    assert "Seed:" not in res.stdout
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and p.name[0] != ".") == sorted(planned)
    order = [line.split(", ")[-1] for line in res.stdout.splitlines() if line.startswith("START")]
    assert [os.path.basename(o) for o in order] == planned  # the stored seed's shuffle


def test_order_shuffle_and_max_tasks_options(project: Project) -> None:
    _write(project, "template:\n  a: echo {x}\n---\nx: {range: [0, 30]}\n")
    plain = [t["name"] for t in json.loads(project.run("--dry-run", "--json", check=0).stdout)]
    shuffled = project.run("--dry-run", "--json", "--order", "shuffle", "--seed", "3", check=0)
    names = [t["name"] for t in json.loads(shuffled.stdout)]
    assert sorted(names) == sorted(plain) and names != plain
    assert "Seed:" not in shuffled.stderr  # given, not chosen
    res = project.run("--dry-run", "--max-tasks", "29", check=2)
    assert "30 tasks, more than the limit of 29" in res.stderr and "--max-tasks" in res.stderr
    project.run("--dry-run", "--max-tasks", "30", check=0)
    assert "unknown order" in project.run("--dry-run", "--order", "random", check=2).stderr


def test_identical_commands_are_said_loudly_before_anything_runs(project: Project) -> None:
    _write(
        project,
        """\
        template:
          train: touch {_output}/ran; echo --learning-rate [learning-rate]
        default: {learning-rate: 0.1}
        ---
        lr: [0.01, 0.001]
        """,
    )
    res = project.run(check=2)
    assert "'lr' is used by no command; did you mean 'learning-rate'?" in res.stderr
    assert not (project.path / "output").exists()
    dry = project.run("--dry-run", "--allow-orphans", check=0)  # said at planning: before anything runs
    assert "WARNING: 1 task would run exactly the commands of an earlier task" in dry.stderr
    assert (
        "'Lr_0.001' runs what 'Lr_0.01' runs; their params differ only in lr (used by no command)"
        in dry.stderr
    )
    assert "did you mean 'learning-rate'? (allowed by --allow-orphans)" in dry.stderr
    res = project.run("--allow-orphans", check=0)
    assert "Orphan params: {'lr'}" in res.stdout  # the 0.5.9 line, unchanged
    assert "would run exactly the commands" in res.stderr


@pytest.mark.parametrize("flag", ["x", "0,x", "cpu:0", "cpu:x", "auto,0"])
def test_resource_option_that_is_no_gpu_is_a_usage_error(project: Project, flag: str) -> None:
    _write(project, "template:\n  a: echo {x}\n---\nx: 1\n")
    res = project.run("--dry-run", "-r", flag, check=2)
    assert res.stderr.startswith("error: key '-r/--resource'") and "hint:" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.slurm
def test_slurm_jobs_see_env_attempt_and_the_run(slurm_cluster: None, project: Project) -> None:
    _write(
        project,
        """\
        template:
          show: >-
            printf '%s\\n' "$OMP_NUM_THREADS" "$TAG" "$MLRUNNER_ATTEMPT" "[$MLRUNNER_RETRY]"
            "$MLRUNNER_RESUMED" "$MLRUNNER_EXPERIMENT_DIR" "$MLRUNNER_RUN_ID"
            > {_output}/env.$MLRUNNER_ATTEMPT.$MLRUNNER_RESUMED;
            case {x} in a) test -e {_output}/env.2.0;; *) test -e again;; esac
        env: {OMP_NUM_THREADS: 1, TAG: "{x} of {_name}"}
        slurm: {time: 5, cpus_per_task: 1}
        ---
        x: [a, b]
        """,
    )
    project.run("--backend", "slurm", "--retries", "1", check=1)
    out = project.path / "output"
    a1 = (out / "X_a" / "env.1.0").read_text().splitlines()
    a2 = (out / "X_a" / "env.2.0").read_text().splitlines()
    assert a1 == ["1", "a of X_a", "1", "[]", "0", str(out / "X_a"), "1"]
    assert a2[2:5] == ["2", "[1]", "0"]  # the resubmitted job is the command's second attempt
    (project.path / "again").touch()
    project.run("--resume", check=0)
    b = (out / "X_b" / "env.1.1").read_text().splitlines()
    assert b[2:] == ["1", "[]", "1", str(out / "X_b"), "1"]  # attempt 1 of the resume, run 1


def test_status_names_a_cpu_slot_as_a_slot(project: Project) -> None:
    import signal
    import time

    _write(project, "template:\n  a: touch {_output}/started; sleep 60\n---\nx: [1, 2]\n")
    proc = project.popen("-r", "cpu:1", "--grace", "1")
    try:
        deadline = time.monotonic() + 30
        while not list((project.path / "output").glob("*/started")):
            assert time.monotonic() < deadline and proc.poll() is None, "the command never started"
            time.sleep(0.1)
        res = project.mlrunner("status", check=0)
        assert "  slot 0  a  " in res.stdout and "gpu" not in res.stdout, res.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert "START   slot: 0, a" in out

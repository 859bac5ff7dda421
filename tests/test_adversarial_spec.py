"""Hostile params.yaml files and options (issue 13, items 7, 8 first half, 14): each test is named
for the promise it protects, and runs the real `run` command in a subprocess, under a time limit
and a 2 GiB address-space limit, so a regression shows as a failure, never as a hung or swapping
test machine."""

from __future__ import annotations

import resource
import subprocess
import time

import pytest
from helpers import Project, run_argv

LIMIT_BYTES = 2 << 30


def _limited() -> None:  # in the child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, LIMIT_BYTES))


def run(project: Project, *args: str, timeout: float = 20) -> tuple[subprocess.CompletedProcess[str], float]:
    """`run ARGS` in the project, killed after ``timeout`` seconds (a failure, not a hang)."""
    start = time.monotonic()
    try:
        res = subprocess.run(
            run_argv(*args),
            cwd=project.path,
            env=project.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_limited,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`run {' '.join(args)}` still ran after {timeout} s")
    return res, time.monotonic() - start


def assert_params_error(res: subprocess.CompletedProcess[str], *words: str) -> None:
    assert res.returncode == 2, f"exit {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    assert res.stderr.startswith("error: params.yaml:"), res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    for w in words:
        assert w in res.stderr, res.stderr


TEN = "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"


# --------------------------------------------------------------------------- item 7: huge grids
@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "run"])
def test_a_ten_million_task_grid_fails_at_once_naming_its_size(project: Project, dry: bool) -> None:
    project.write("template:\n  a: echo {p0}\n---\n" + "".join(f"p{i}: {TEN}\n" for i in range(7)))
    res, _ = run(project, *(["--dry-run"] if dry else []))
    assert_params_error(res, "10,000,000 tasks", "limit of 1,000,000", "grid 1 (line 4)", "--max-tasks")
    assert not (project.path / "output").exists()


def test_a_10_to_the_12_task_grid_fails_at_once_even_among_small_grids(project: Project) -> None:
    project.write(
        "template:\n  a: echo {p0}\n---\np0: [1, 2]\n---\n" + "".join(f"p{i}: {TEN}\n" for i in range(12))
    )
    res, _ = run(project, "--dry-run")
    assert_params_error(
        res, "1,000,000,000,002 tasks", "grid 1 (line 4): 2;", "grid 2 (line 6): 1,000,000,000,000"
    )
    assert "params.yaml:6:" in res.stderr  # points at the big one


def test_a_list_longer_than_the_task_limit_fails_at_once(project: Project) -> None:
    values = ",".join(str(i) for i in range(1_000_001))
    project.write(f"template:\n  a: echo {{x}}\n---\nx: [{values}]\n")
    res, seconds = run(project, "--dry-run", timeout=60)
    assert_params_error(res, "1,000,001 tasks")
    assert seconds < 30


def test_max_tasks_raises_and_lowers_the_limit(project: Project) -> None:
    project.write("template:\n  a: echo {p0} {p1} {p2}\n---\n" + "".join(f"p{i}: {TEN}\n" for i in range(3)))
    res, _ = run(project, "--dry-run", "--max-tasks", "999")
    assert_params_error(res, "1,000 tasks, more than the limit of 999")
    res, _ = run(project, "--dry-run", "--max-tasks", "1000")
    assert res.returncode == 0 and "Dry run: 1000 tasks" in res.stdout


def test_a_yaml_merge_key_alias_bomb_fails_at_once(project: Project) -> None:
    node = "&a0 {k: 1}"
    for i in range(1, 10):  # 9 levels of 9 merges: 387 million mappings from 500 bytes
        node = f"&a{i} {{<<: [{node}, " + ", ".join([f"*a{i - 1}"] * 8) + "]}"
    project.write("template:\n  a: echo {k}\n---\n<<: " + node + "\nx: 1\n")
    res, _ = run(project, "--dry-run")
    assert_params_error(res, "aliases (*name) of this document repeat", "more than 100,000")


def test_a_huge_gpus_value_is_a_params_yaml_error_not_an_out_of_memory(project: Project) -> None:
    project.write("template:\n  a: echo {x}\n---\n_gpus: 1000000000000\nx: [1]\n")
    res, _ = run(project, "--dry-run")
    assert_params_error(res, "key '_gpus'", "more than 1024")


def test_a_samples_document_never_expands_its_product(project: Project) -> None:
    project.write(
        "template:\n  a: echo {a} {b} {c}\n---\n_samples: 5\n_seed: 1\n"
        "a: {range: [0, 1000000000000]}\nb: {range: [0, 1000000000000]}\nc: {uniform: [0, 1]}\n"
    )
    res, _ = run(project, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "Dry run: 5 tasks" in res.stdout


# --------------------------------------------------------------------------- item 8: long integers
@pytest.mark.parametrize("literal", ["9" * 5000, "0x" + "f" * 5000, "-" + "1" * 4301])
def test_an_integer_literal_over_4300_digits_is_a_params_yaml_error(project: Project, literal: str) -> None:
    project.write(f"template:\n  a: echo {{x}}\n---\nx: [{literal}]\n")
    res, _ = run(project, "--dry-run")
    assert_params_error(res, "params.yaml:4:", "key 'x'", "more than 4300 digits", "quote it")


# --------------------------------------------------------------------------- item 14: mistyped keys
MISTYPED = """\
template:
  train: python train.py [learning-rate] --out {_output}
default: {learning-rate: 0.1}
---
lr: [0.01, 0.001]
"""


def test_an_orphan_resembling_a_used_param_is_a_params_yaml_error(project: Project) -> None:
    project.write(MISTYPED)
    res, _ = run(project)
    assert_params_error(
        res, "params.yaml:5:", "key 'lr'", "'lr' is used by no command; did you mean 'learning-rate'?"
    )
    assert "--allow-orphans" in res.stderr and not (project.path / "output").exists()


def test_allow_orphans_runs_the_mistyped_sweep_with_a_loud_warning(project: Project) -> None:
    project.write(MISTYPED.replace("python train.py", "echo"))
    res, _ = run(project, "--allow-orphans")
    assert res.returncode == 0, res.stderr
    assert "Orphan params: {'lr'}\n" in res.stdout  # the 0.5.9 line, byte for byte
    assert "WARNING: 1 task would run exactly the commands of an earlier task" in res.stderr
    assert "did you mean 'learning-rate'? (allowed by --allow-orphans)" in res.stderr


def test_tasks_running_identical_commands_are_warned_before_anything_runs(project: Project) -> None:
    project.write(
        "template:\n  train: echo {_name} {_output}; echo same [seed]\n---\nsteps: [1, 2, 3]\nseed: 0\n"
    )
    res, _ = run(project, "--dry-run")
    assert res.returncode == 0
    assert "WARNING: 2 tasks would run exactly the commands of an earlier task" in res.stderr
    assert "differ only in steps (used by no command)" in res.stderr
    assert "Orphan params: {'steps'}" in res.stdout
    other = "template:\n  train: echo {x} {_name}\n---\nx: [1, 2]\n"
    project.write(other)
    res, _ = run(project, "--dry-run")
    assert "WARNING" not in res.stderr  # commands differ: nothing to say


def test_a_placeholder_mistyped_against_the_grid_says_did_you_mean(project: Project) -> None:
    project.write("template:\n  train: python train.py [n-embed]\n---\nn-embd: [32, 64]\n")
    res, _ = run(project, "--dry-run")
    assert_params_error(
        res, "params.yaml:2:", "key 'template.train'", "'n-embed' has no value", "did you mean 'n-embd'"
    )
    project.write(
        "template:\n  train: python train.py [n-embed]\ndefault: {n-embed: 8}\n---\nn-embd: [32, 64]\n"
    )
    res, _ = run(project, "--dry-run")
    assert_params_error(res, "params.yaml:5:", "key 'n-embd'", "did you mean 'n-embed'?")


@pytest.mark.parametrize("slot", ["x", "gpu0", "0,x", "cpu:0", "cpu:many"])
def test_a_resource_option_that_is_no_gpu_index_is_a_usage_error(project: Project, slot: str) -> None:
    project.write("template:\n  a: echo {x}\n---\nx: [1]\n")
    res, _ = run(project, "-r", slot)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith("error: key '-r/--resource'") and "hint:" in res.stderr
    assert not (project.path / "output").exists()

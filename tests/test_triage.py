"""Failure triage (issue 14.3): the log's last lines under each FAIL line, failure signatures,
`mlrunner failures` and the command it prints, `run --only`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import Project

from mlrunner.ledger import Ledger
from mlrunner.ledger.triage import failures_doc, python_exception, signature
from mlrunner.status import AttemptStatus, TaskStatus, task_status

TRAIN = """\
import os, sys
mode = sys.argv[1]
print("epoch 1", flush=True)
if mode == "value" and not os.path.exists("fixed"):
    raise ValueError("bad lr")
if mode == "kill":
    os.kill(os.getpid(), 9)
if mode == "exit":
    sys.exit(3)
if mode == "oom":
    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
"""
HOSTILE = """'it''s $(touch pwned) "q" [b]x[/b]'"""  # YAML single-quoted
PARAMS = f"""
template:
  train: python3 train.py {{mode}} {{x}}
resource: {{cpus: 2}}
---
mode: [value]
x: [1, {HOSTILE}]
---
mode: [kill]
x: [4, 5]
---
mode: [exit]
x: [6]
---
mode: [oom]
x: [9]
---
mode: [ok]
x: [7]
"""


def failing_sweep(project: Project) -> subprocess.CompletedProcess[str]:
    (project.path / "train.py").write_text(TRAIN)
    project.write(PARAMS)
    return project.run(check=1)


def test_the_log_tail_is_printed_under_each_fail_line(project: Project) -> None:
    res = failing_sweep(project)
    lines = res.stdout.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("FAIL") and "Mode_value-X_1" in line)
    assert lines[i].endswith(")") and "(failed: exit 1; log: " in lines[i]  # the 0.5.9 line as it was
    assert lines[i + 1 : i + 6] == [
        "        epoch 1",
        "        Traceback (most recent call last):",
        f'          File "{project.path / "train.py"}", line 5, in <module>',
        '            raise ValueError("bad lr")',
        "        ValueError: bad lr",
    ]
    assert not lines[i + 6].startswith("  ")  # at most 5 lines
    exit3 = next(i for i, line in enumerate(lines) if line.startswith("FAIL") and "Mode_exit" in line)
    assert lines[exit3 + 1] == "        epoch 1" and not lines[exit3 + 2].startswith(" ")
    assert not (project.path / "pwned").exists()


def test_failures_groups_by_signature_and_its_rerun_reruns_exactly_that_group(
    project: Project, tmp_path: Path
) -> None:
    failing_sweep(project)
    res = project.mlrunner("failures", "--json", check=0)
    groups = json.loads(res.stdout)
    assert [(g["signature"], g["count"]) for g in groups] == [
        ("ValueError: bad lr", 2),
        ("signal 9 (SIGKILL)", 2),
        ("exit code 3", 1),
        ("CUDA out of memory", 1),
    ]
    value = groups[0]
    hostile_name = value["experiments"][1]
    assert value["experiments"][0] == "Mode_value-X_1" and "$(touch pwned)" in hostile_name
    assert groups[1]["experiments"] == ["Mode_kill-X_4", "Mode_kill-X_5"]
    assert value["log_tail"].rstrip().endswith("ValueError: bad lr")
    assert set(groups[0]) == {"signature", "count", "experiments", "log_tail", "rerun"}
    text = project.mlrunner("failures", "-o", "output", "1", check=0).stdout
    assert text.startswith("Run 1 under output: 6 failed commands, 4 signatures\n")
    assert "ValueError: bad lr  (2 commands)" in text and "        ValueError: bad lr" in text
    assert value["rerun"] in text
    # the printed command, run by a shell as a user pastes it, reruns that group and nothing else
    (project.path / "fixed").touch()
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "run").write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -c "from mlrunner.cli import run_main; run_main()" "$@"\n'
    )
    (shim / "run").chmod(0o755)
    env = dict(project.env, PATH=f"{shim}{os.pathsep}{project.env['PATH']}")
    rerun = subprocess.run(
        ["bash", "-c", value["rerun"]], cwd=project.path, env=env, capture_output=True, text=True, timeout=60
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    started = re.findall(r"^START .*?, (output/.*)$", rerun.stdout, re.M)
    assert sorted(started) == sorted(f"output/{n}" for n in value["experiments"])
    assert not (project.path / "pwned").exists()
    after = json.loads(project.mlrunner("failures", "--json", check=0).stdout)
    assert [g["signature"] for g in after] == [g["signature"] for g in groups[1:]]
    doc = json.loads(project.mlrunner("ledger", "show", "1", "--json", check=0).stdout)
    attempts = {t["name"]: t["commands"][0]["attempts"] for t in doc["tasks"]}
    assert attempts == {
        name: 2 if name in value["experiments"] else 1 for name in attempts
    }  # nothing else ran again
    # the run is still failed: --only left the other groups alone
    assert json.loads(project.mlrunner("ledger", "ls", "--json", check=0).stdout)[0]["status"] == "failed"


def test_only_refuses_an_unknown_name_with_a_did_you_mean(project: Project) -> None:
    failing_sweep(project)
    res = project.run("--resume", "--only", "Mode_kill-X_44", check=2)
    assert (
        "no experiment named 'Mode_kill-X_44'" in res.stderr and "did you mean 'Mode_kill-X_4'" in res.stderr
    )
    assert "Traceback" not in res.stderr
    dry = project.run("--dry-run", "--only", "Mode_exit-X_6", "--only", "Mode_ok-X_7", check=0)
    assert dry.stdout.count("DRY ") == 2 and "Dry run: 2 tasks" in dry.stdout


def test_failures_command_errors_and_an_empty_run(project: Project) -> None:
    res = project.mlrunner("failures", "-o", "nowhere", check=2)
    assert "no ledger" in res.stderr and "Traceback" not in res.stderr
    project.write("template: {a: 'true {x}'}\n---\nx: [1]\n")
    project.run(check=0)
    assert project.mlrunner("failures", check=0).stdout == "No failed command in run 1 under output.\n"
    assert json.loads(project.mlrunner("failures", "--json", check=0).stdout) == []
    res = project.mlrunner("failures", "7", check=2)
    assert "no run 7 under 'output'" in res.stderr and "Traceback" not in res.stderr


def test_timeout_and_stalled_are_signatures_of_their_own(tmp_path: Path) -> None:
    """The statuses of the local loop's --timeout and --stall (the stalled status is new)."""
    assert AttemptStatus("stalled").failed and task_status(["finished", "stalled"]) is TaskStatus.FAILED
    with Ledger(tmp_path / "out") as ledger:
        run = ledger.create_run(
            argv=[], cwd=".", params_path=None, params_text=None, options={}, snapshot=None
        )
        names = ["T_1", "T_2", "S_1", "E_1"]
        ledger.register_tasks(
            run,
            [
                {"key": n, "name": n, "output_dir": str(tmp_path / n), "params": {}, "commands": ["a"]}
                for n in names
            ],
        )
        tail = "Traceback (most recent call last):\n  x\nKeyboardInterrupt\n"  # the SIGTERM's trace
        ends = [
            ("timeout", {"signal": 15, "log_tail": tail}),
            ("timeout", {"exit_code": 1}),
            ("stalled", {"signal": 9}),
            ("failed", {"exit_code": 2}),
        ]
        for name, (status, kw) in zip(names, ends, strict=True):
            attempt = ledger.start_attempt(
                run_id=run, task_key=name, command="a", resource="0", gpus=None, log_path="log"
            )
            ledger.end_attempt(attempt, status=status, **kw)  # type: ignore[arg-type]
        groups = failures_doc(ledger, run, "out dir")
    assert [(g["signature"], g["experiments"]) for g in groups] == [
        ("timeout", ["T_1", "T_2"]),
        ("stalled", ["S_1"]),
        ("exit code 2", ["E_1"]),
    ]
    assert groups[0]["rerun"] == "run --resume 1 -o 'out dir' --only T_1 --only T_2"


TRACE = 'Traceback (most recent call last):\n  File "t.py", line 1, in <module>\n    f()\n'


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (TRACE + "ValueError: bad lr\nsaving state...\n", "ValueError: bad lr"),
        (
            TRACE
            + "KeyError: 'lr'\n\nDuring handling of the above exception, another exception occurred:\n\n"
            + TRACE
            + "RuntimeError: wrapped\n",
            "RuntimeError: wrapped",
        ),  # fmt: skip
        (
            "[rank0]: " + TRACE.replace("\n  ", "\n[rank0]:   ") + "[rank0]: torch.OutOfMemoryError: big\n",
            "torch.OutOfMemoryError: big",
        ),  # fmt: skip
        (
            'ost line 7, in f\n  File "t.py", line 9, in g\n    g()\nmod.MyError: cut head\n',
            "mod.MyError: cut head",
        ),
        (
            "  File \"<string>\", line 1\n    x = (\n        ^\nSyntaxError: '(' was never closed\n",
            "SyntaxError: '(' was never closed",
        ),  # fmt: skip
        (TRACE + "KeyboardInterrupt\n", "KeyboardInterrupt"),
        (TRACE, None),  # cut before the exception line
        ("epoch 1\nloss: 0.5\nError: not a traceback\n", None),
        (TRACE + "\x1b[31mValueError: colour\x1b[0m\n", "ValueError: colour"),
        (TRACE + "ValueError: " + "x" * 1000 + "\n", "ValueError: " + "x" * 287 + "…"),
    ],
)
def test_python_exception_lines(tail: str, expected: str | None) -> None:
    assert python_exception(tail) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("timeout", None, 15, None, TRACE + "KeyboardInterrupt\n"), "timeout"),
        (("stalled", None, 9, None, None), "stalled"),
        (("failed", 1, None, "gpu_oom", TRACE + "RuntimeError: CUDA out of memory.\n"), "CUDA out of memory"),
        (("oom", None, None, "host_oom", None), "host out of memory"),
        (("failed", 1, None, None, TRACE + "ValueError: x\n"), "ValueError: x"),
        (("failed", 137, None, None, "Killed\n"), "signal 9 (SIGKILL)"),
        (("failed", None, 15, None, ""), "signal 15 (SIGTERM)"),
        (("failed", 3, None, None, None), "exit code 3"),
        (("failed", 300, None, None, None), "exit code 300"),
        (("node_fail", None, None, None, None), "node failure"),
    ],
)
def test_signatures(args: tuple[str, int | None, int | None, str | None, str | None], expected: str) -> None:
    assert signature(*args) == expected

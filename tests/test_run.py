"""`run` end to end: real subprocess runs of small sweeps (issue 2)."""

from __future__ import annotations

import os
import re
import shutil

import pytest
import yaml
from helpers import ROOT, Project

README_DIR = ROOT / "examples" / "readme"


def test_readme_example_end_to_end(project: Project) -> None:
    for f in README_DIR.iterdir():
        if f.is_file():
            shutil.copy(f, project.path / f.name)
    res = project.run("-r", "0 1", check=0)
    out = res.stdout
    assert "Orphan params: set()" in out
    assert "Tasks: 5, Commands: 15" in out
    starts = [line for line in out.splitlines() if line.startswith("START")]
    assert len(starts) == 15
    assert re.search(r"^START   gpu: [01], train   : 1/ 5, output/Norm_new-Moment_0\.1$", out, re.M)
    names = sorted(
        p.name for p in (project.path / "output").iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    assert names == sorted(
        [
            "Norm_new-Moment_0.1",
            "Norm_new-Moment_0.05",
            "Norm_batch-Moment_0.1",
            "Norm_batch-Moment_0.05",
            "Norm_batch-EaStop_T",
        ]
    )
    exp = project.path / "output" / "Norm_batch-Moment_0.1"
    stat = yaml.safe_load((exp / "stat").read_text())
    assert stat == {"train": "finished", "avg": "finished", "test": "finished"}
    param = yaml.safe_load((exp / "param").read_text())
    assert param["norm"] == "batch" and param["moment"] == 0.1 and param["early-stop"] is False
    assert param["_name"] == "Norm_batch-Moment_0.1"
    assert set(param["_scripts"]) == {"train", "avg", "test"}
    assert param["_scripts"]["train"].startswith("CUDA_VISIBLE_DEVICES=")
    logs = sorted(p.name for p in exp.glob("log.*"))
    assert [re.sub(r"\d{8}\.\d{6}", "T", n) for n in logs] == ["log.avg.T", "log.test.T", "log.train.T"]
    train_log = next(exp.glob("log.train.*")).read_text()
    # the GPU variable is in the environment of the command, and the log holds only its output
    assert re.search(r"gpu [01]\n", train_log)
    assert "BLEU4 = " in next(exp.glob("log.test.*")).read_text()
    # the params.yaml used is copied into the output root
    assert (project.path / "output" / "params.yaml").read_text() == (project.path / "params.yaml").read_text()
    # a second run skips everything and exits 0
    again = project.run("-r", "0 1", check=0)
    assert again.stdout.count("SKIP") == 15
    assert "START" not in again.stdout


def test_failing_command_stops_its_task_only(project: Project) -> None:
    project.write(
        """
        template:
          first: "echo first {x}; test {x} != 2"
          second: echo second {x}
        resource: [0]
        ---
        x: [1, 2, 3]
        """
    )
    res = project.run(check=1)
    assert re.search(r"^FAIL +first +: 2/ 3, output/X_2", res.stdout, re.M)
    assert "Failed tasks: 1/3" in res.stdout
    out = project.path / "output"
    assert yaml.safe_load((out / "X_2" / "stat").read_text()) == {"first": "failed"}
    assert not list((out / "X_2").glob("log.second.*"))
    for ok in ("X_1", "X_3"):
        assert yaml.safe_load((out / ok / "stat").read_text()) == {"first": "finished", "second": "finished"}


def test_compound_command_output_all_in_log(project: Project) -> None:
    project.write(
        """
        template:
          both: "echo part-one; echo part-two 1>&2; cd .. && echo gpu=$CUDA_VISIBLE_DEVICES"
        resource: ["3"]
        ---
        k: [v]
        """
    )
    res = project.run(check=0)
    assert "part-one" not in res.stdout + res.stderr
    log = next((project.path / "output" / "K_v").glob("log.both.*")).read_text()
    assert log == "part-one\npart-two\ngpu=3\n"


def test_dry_run_writes_nothing_then_real_run_runs_everything(project: Project) -> None:
    project.write(
        """
        template:
          a: echo {x} > done.{x}
        ---
        x: [1, 2]
        """
    )
    dry = project.run("--dry-run", check=0)
    assert "echo 1 > done.1" in dry.stdout and "echo 2 > done.2" in dry.stdout
    assert not (project.path / "output").exists()
    assert not list(project.path.glob("done.*"))
    real = project.run(check=0)
    assert real.stdout.count("START") == 2
    assert sorted(p.name for p in project.path.glob("done.*")) == ["done.1", "done.2"]


HOSTILE = [
    "$(touch pwned)",
    "`touch pwned2`",
    "a; touch pwned3",
    'it\'s "quoted"',
    "../../escape",
    "/etc/passwd",
    "line\nbreak",
]


def test_hostile_values_are_literal_and_stay_inside_output(project: Project) -> None:
    grid = yaml.safe_dump({"v": HOSTILE}, default_style='"')
    project.write(
        "template:\n  show: printf '%s\\n' {v}\n  flag: printf '%s\\n' [v]\nresource: [0]\n---\n" + grid
    )
    res = project.run("-o", "out put", check=0)
    assert res.stdout.count("START") == 2 * len(HOSTILE)
    assert not list(project.path.rglob("pwned*"))
    root = (project.path / "out put").resolve()
    dirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(dirs) == len(HOSTILE)
    seen = set()
    for d in dirs:
        assert d.resolve().parent == root
        value = next(d.glob("log.show.*")).read_text()[:-1]
        assert next(d.glob("log.flag.*")).read_text() == f"--v\n{value}\n"
        seen.add(value)
    assert seen == set(HOSTILE)
    assert not (project.path / "escape").exists() and not (project.path.parent / "escape").exists()


def test_output_dir_with_spaces_and_no_subdir(project: Project) -> None:
    project.write(
        """
        template:
          a: echo hi {x}
        ---
        x: [1, 2]
        """
    )
    project.run("-o", "my results", "--no-subdir", check=0)
    logs = sorted(p.name for p in (project.path / "my results").glob("log.*"))
    assert len(logs) == 2 and all(re.fullmatch(r"log\.a\.\d{8}\.\d{6}\.X_[12]", n) for n in logs)


def test_title_command_and_debug_options(project: Project) -> None:
    project.write(
        """
        template:
          a: echo a {x}
          b: echo b {x}
        ---
        _title: one
        x: [1, 2]
        ---
        _title: two
        _cmd: b
        x: [3]
        """
    )
    res = project.run("-t", "two", check=0)
    assert res.stdout.count("START") == 1 and "b       : 1/ 1, output/X_3" in res.stdout
    res = project.run("-t", "one", "-c", "b", check=0)
    assert res.stdout.count("START") == 2 and " a " not in res.stdout
    dbg = project.run("-t", "one", "-d", check=0)
    assert "a 1" in dbg.stdout  # debug: output also on the terminal
    assert dbg.stdout.count("START") == 1  # first task only; its finished `b` is skipped...
    assert dbg.stdout.count("SKIP") == 1
    forced = project.run("-t", "one", "-d", "-f", check=0)
    assert forced.stdout.count("START") == 2  # ...unless -f


@pytest.mark.parametrize(
    ("text", "args", "expect"),
    [
        ("template: [oops\n", (), r"params\.yaml:\d+"),
        ("", (), r"empty"),
        ("defaults: {a: 1}\ntemplate: {a: echo}\n---\nx: [1]\n", (), r"did you mean 'default'"),
        ("template:\n  a: echo {x}\ntemplate:\n  b: echo\n---\nx: [1]\n", (), r"duplicate"),
        ("template:\n  a: echo {y}\n---\nx: [1]\n", (), r"params\.yaml.*'y'"),
        ("template:\n  a: echo {x}\n---\nx: [1]\n", ("-t", "nope"), r"nope"),
        ("template:\n  a: echo {x}\n---\nx: [1]\n", ("-c", "nope"), r"nope.*\ba\b"),
        ("template:\n  a: echo {x}\nresource: 3\n---\nx: [1]\n", (), r"params\.yaml:3.*resource"),
        ("template:\n  a: echo {x}\n---\nx: [{a: 1}]\n", (), r"params\.yaml:\d+.*x"),
        ("template:\n  a: echo {x}\n---\nx: [true]\n", (), r"\[x\]"),
    ],
)
def test_bad_input_exit_2_no_traceback_nothing_written(
    project: Project, text: str, args: tuple[str, ...], expect: str
) -> None:
    project.write(text)
    res = project.run(*args, check=2)
    assert "Traceback" not in res.stderr + res.stdout
    assert re.search(expect, res.stderr, re.I | re.S), res.stderr
    assert not (project.path / "output").exists()


def test_missing_params_file_suggests_init(project: Project) -> None:
    res = project.run(check=2)
    assert "mlrunner init" in res.stderr and "Traceback" not in res.stderr
    init = project.mlrunner("init", check=0)
    assert "params.yaml" in init.stdout
    assert (project.path / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()
    again = project.mlrunner("init", check=2)
    assert "exists" in again.stderr


def test_reference_params_yaml_is_valid_and_dry_runs(project: Project) -> None:
    shutil.copy(ROOT / "params.yaml", project.path / "params.yaml")
    res = project.run("--dry-run", check=0)
    assert "Tasks" not in res.stderr
    assert res.stdout.count("DRY") == 5 * 3
    assert "Orphan params: set()" in res.stdout


def test_help_does_not_import_heavy_modules(project: Project) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.argv = ['run', '--help']\n"
        "from mlrunner.cli.app import run_main\n"
        "try:\n    run_main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('pandas', 'git', 'submitit', 'rich', 'tensorboard', 'numpy', 'apprise')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "print('HEAVY', bad)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=project.env, check=True
    )
    assert "HEAVY []" in res.stdout, res.stdout
    assert "--resume" in res.stdout and "--dry-run" in res.stdout


def test_python_dash_m_mlrunner(project: Project) -> None:
    res = project.mlrunner("--help", check=0)
    for sub in ("run", "ledger", "status", "restore", "table", "init"):
        assert sub in res.stdout


def test_log_holds_only_command_output(project: Project) -> None:
    project.write(
        """
        template:
          a: python -c "print('x' * 3)"
        ---
        k: [1]
        """
    )
    project.run(check=0)
    log = next((project.path / "output" / "K_1").glob("log.a.*"))
    assert log.read_text() == "xxx\n"
    assert os.path.getsize(log) == 4


def test_live_display_on_a_terminal(project: Project) -> None:
    import pty
    import subprocess

    from helpers import run_argv

    project.write(
        """
        template:
          a: "sleep 0.3; exit {x}"
        resource: [0, 1]
        ---
        x: [0, 0, 3]
        """.replace("[0, 0, 3]", "[0, 3]")
    )
    leader, follower = pty.openpty()
    env = dict(project.env, COLUMNS="120")
    proc = subprocess.Popen(
        run_argv(), cwd=project.path, env=env, stdin=follower, stdout=follower, stderr=follower
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=30)
    os.close(leader)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 1
    assert "1 failed" in screen and "done" in screen and "ETA" in screen  # the overall bar
    assert "FAIL" in screen and "X_3" in screen
    assert "Failed tasks: 1/2" in screen

"""GPU-aware slots through the real `run` command, with a fake nvidia-smi on PATH (issue 6)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from fake_gpus import FOUR_GPUS, write_table
from helpers import FAKE_BIN, Project

# every command records when it ran and on which GPUs
RECORD = (
    'echo "$CUDA_VISIBLE_DEVICES $(date +%s.%N) start" >> spans; sleep 0.4; '
    'echo "$CUDA_VISIBLE_DEVICES $(date +%s.%N) end" >> spans'
)


def fake_gpus(project: Project, tmp_path: Path, gpus: list[dict] = FOUR_GPUS) -> None:
    table = tmp_path / "gpus.json"
    write_table(table, gpus)
    project.env["PATH"] = os.pathsep.join(
        [str(FAKE_BIN), str(Path(sys.executable).parent), project.env["PATH"]]
    )
    project.env["FAKE_NVIDIA_SMI_GPUS"] = str(table)


def max_concurrency_per_gpu(spans: str) -> dict[int, int]:
    events = []
    for line in spans.splitlines():
        visible, t, kind = line.split()
        for g in visible.split(","):
            events.append((float(t), 0 if kind == "end" else 1, int(g)))
    load: dict[int, int] = {}
    peak: dict[int, int] = {}
    for _, start, g in sorted(events):
        load[g] = load.get(g, 0) + (1 if start else -1)
        peak[g] = max(peak.get(g, 0), load[g])
    return peak


def test_auto_per_gpu_min_free_memory(project: Project, tmp_path: Path) -> None:
    fake_gpus(project, tmp_path)
    project.write(
        f"""
        template:
          a: {RECORD}
        resource:
          gpus: auto
          per_gpu: 2
          min_free_memory: 10GiB
        ---
        x: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        """
    )
    res = project.run(check=0)
    assert res.stdout.count("START") == 10
    gpus_in_lines = {int(g) for g in re.findall(r"START   gpu: (\d+),", res.stdout)}
    assert gpus_in_lines <= {0, 1, 2} and 3 not in gpus_in_lines
    peak = max_concurrency_per_gpu((project.path / "spans").read_text())
    assert 3 not in peak and max(peak.values()) <= 2
    doc = json.loads(project.mlrunner("ledger", "show", "1", "--json", check=0).stdout)
    resources = {c["resource"] for t in doc["tasks"] for c in t["commands"]}
    assert resources <= {"0", "1", "2"}


def test_two_gpu_tasks_get_distinct_gpus_and_no_oversubscription(project: Project, tmp_path: Path) -> None:
    fake_gpus(project, tmp_path)
    project.write(
        f"""
        template:
          a: {RECORD}
        resource:
          gpus: [0, 1, 2]
        ---
        _gpus: 2
        x: [1, 2, 3]
        ---
        x: [4, 5, 6, 7]
        """
    )
    res = project.run(check=0)
    assert res.stdout.count("START") == 7
    lines = (project.path / "spans").read_text().splitlines()
    pairs = [ln.split()[0] for ln in lines if ln.endswith("start") and "," in ln.split()[0]]
    assert len(pairs) == 3 and all(len(set(p.split(","))) == 2 for p in pairs)
    assert max(max_concurrency_per_gpu("\n".join(lines)).values()) == 1


def test_two_runners_in_different_dirs_never_share_a_gpu(project: Project, tmp_path: Path) -> None:
    fake_gpus(project, tmp_path)
    text = f"""
        template:
          a: {RECORD.replace(">> spans", ">> ../spans")}
        resource:
          gpus: [0, 1]
          per_gpu: 1
        ---
        x: [1, 2, 3, 4]
        """
    project.write(text, "one/params.yaml")
    project.write(text, "two/params.yaml")
    import subprocess

    from helpers import run_argv

    procs = [
        subprocess.Popen(run_argv(), cwd=project.path / d, env=project.env, stdout=subprocess.PIPE, text=True)
        for d in ("one", "two")
    ]
    for p in procs:
        p.communicate(timeout=60)
        assert p.returncode == 0
    spans = (project.path / "spans").read_text()
    assert spans.count("start") == 8
    assert max(max_concurrency_per_gpu(spans).values()) == 1


def test_auto_without_nvidia_smi_is_a_clear_error(project: Project) -> None:
    project.env["PATH"] = os.pathsep.join(
        d for d in project.env["PATH"].split(os.pathsep) if d and not Path(d, "nvidia-smi").exists()
    )
    project.write(
        """
        template:
          a: echo hi
        ---
        x: [1]
        """
    )
    res = project.run("-r", "auto", check=2)
    assert "nvidia-smi" in res.stderr and "Traceback" not in res.stderr
    assert "resource" in res.stderr  # says how to list slots by hand
    assert not (project.path / "output").exists()


def test_oom_is_classified_in_the_ledger_and_table(project: Project, tmp_path: Path) -> None:
    project.write(
        """
        template:
          a: "echo 'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB' >&2; exit 1"
        ---
        x: [1]
        """
    )
    res = project.run(check=1)
    assert "gpu_oom" in res.stdout
    doc = json.loads(project.mlrunner("ledger", "show", "1", "--json", check=0).stdout)
    cmd = doc["tasks"][0]["commands"][0]
    assert cmd["failure_class"] == "gpu_oom" and "CUDA out of memory" in cmd["log_tail"]
    shown = project.mlrunner("ledger", "show", "1", check=0).stdout
    assert "gpu_oom" in shown and "CUDA out of memory" in shown

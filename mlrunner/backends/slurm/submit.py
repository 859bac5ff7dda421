"""Submission: work items grouped by the GPUs they need, each group one job array.

For each task the registry entry is written first (its token also names the result
files), then all of a group go to ``sbatch`` at once through submitit's batch context;
each element of the array runs :func:`mlrunner.backends.slurm.job.run_task` for one
task. The batch token goes into the jobs' ``--comment`` so that a runner that died before
it learnt the job ids can find them (:mod:`mlrunner.backends.slurm.reattach`).
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlrunner.backends.base import Recorder, RunOptions, WorkItem, task_env
from mlrunner.backends.slurm.job import results_dir, run_task
from mlrunner.backends.slurm.registry import Registry
from mlrunner.backends.slurm.track import Track, Work
from mlrunner.errors import BackendError

if TYPE_CHECKING:
    from mlrunner.plan import Command


class Submitter:
    """Submits work as job arrays; ``submitted`` collects the job ids (the backend's list)."""

    def __init__(
        self,
        submitit: Any,
        recorder: Recorder,
        options: RunOptions,
        params: dict[str, Any],
        gpus: int | None,
        registry: Registry,
        folder: Path,
        submitted: list[str],
        failures: Mapping[tuple[str, str], int] | None = None,  # (task, command) -> failed tries
    ) -> None:
        self.submitit = submitit
        self.recorder = recorder
        self.options = options
        self.params = params  # submitit parameters from the slurm: section
        self.gpus = gpus  # slurm.gpus_per_task, replacing each task's own count when set
        self.registry = registry
        self.folder = folder  # submitit's files
        self.cwd = os.path.abspath(options.isolate_dir or options.cwd)  # where the commands run
        self.submitted = submitted
        self.failures: Mapping[tuple[str, str], int] = failures if failures is not None else {}

    def groups(self, work: list[Work]) -> list[tuple[int, list[Work]]]:
        """The work by GPU count, fewest first."""
        groups: dict[int, list[Work]] = {}
        for item, commands in work:
            groups.setdefault(self._gpus(item), []).append((item, commands))
        return sorted(groups.items())

    def _gpus(self, item: WorkItem) -> int:
        return self.gpus if self.gpus is not None else item.task.gpus

    def submit_group(self, gpus: int, group: list[Work]) -> list[Track]:
        """Register and submit one job array; the tracks of its jobs."""
        batch = uuid.uuid4().hex[:12]
        entries: list[dict[str, Any]] = []
        payloads: list[dict[str, Any]] = []
        for n, (item, commands) in enumerate(group):
            entry, payload = self._entry(batch, n, len(group) > 1, item, commands)
            self.registry.write(entry)
            entries.append(entry)
            payloads.append(payload)
        jobs = self._sbatch(self._parameters(gpus, batch), payloads, entries)
        tracks: list[Track] = []
        for (item, given), entry, job in zip(group, entries, jobs, strict=True):
            entry["job_id"] = str(job.job_id)
            entry["slurm_log"] = str(job.paths.stderr)
            self.registry.write(entry)
            self.submitted.append(str(job.job_id))
            by_name = {c.name: c for c in given}
            tracks.append(Track(item, entry, [by_name[c["name"]] for c in entry["commands"]]))
        return tracks

    def _entry(
        self, batch: str, n: int, array: bool, item: WorkItem, commands: tuple[Command, ...]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The registry entry of the ``n``-th task of a batch and the payload its job runs."""
        token = f"{batch}-{n}"
        exp = os.path.abspath(os.path.join(self.options.cwd, item.task.output_dir))
        results = str(results_dir(exp))
        given = [self.recorder.log_path(item, c) for c in commands]
        logs = [os.path.abspath(os.path.join(self.options.cwd, g)) for g in given]
        entry: dict[str, Any] = {
            "version": 1,
            "token": token,
            "batch": batch,
            "array_index": n if array else None,
            "task_key": item.task.key,
            "task_name": item.task.name,
            "output_dir": exp,
            "results_dir": results,
            "run_id": self.options.extra.get("run_id"),
            "submitted_at": time.time(),
            "submitter": {"host": os.uname().nodename, "pid": os.getpid()},
            "job_id": None,
            "slurm_log": None,
            "commands": [
                {"name": c.name, "log_path": log, "log": str(g)}
                for c, log, g in zip(commands, logs, given, strict=True)
            ],
        }
        payload = {
            "token": token,
            "cwd": self.cwd,
            "env": task_env(item.task, self.options),  # + MLRUNNER_ATTEMPT, set by the job
            "attempt": self.failures.get((item.task.key, commands[0].name), 0) + 1,
            "results_dir": results,
            "grace": float(self.options.grace),
            "commands": [
                {"name": c.name, "text": c.text, "log_path": log}
                for c, log in zip(commands, logs, strict=True)
            ],
        }
        return entry, payload

    def _parameters(self, gpus: int, batch: str) -> dict[str, Any]:
        """submitit's parameters for one array: the slurm: section, the GPUs, mlrunner's own."""
        params = dict(self.params)
        extra = params.pop("additional_parameters", None)
        if gpus > 0:
            params["gres"] = f"gpu:{gpus}"
        params.update(job_name="mlrunner", comment=f"mlrunner:{batch}", use_srun=False)
        if extra:
            params["additional_parameters"] = extra
        return params

    def _sbatch(
        self, params: dict[str, Any], payloads: list[dict[str, Any]], entries: list[dict[str, Any]]
    ) -> list[Any]:
        """Submit the payloads as one array (submitit jobs); a refusal settles the entries."""
        try:
            executor = self.submitit.SlurmExecutor(folder=self.folder, max_num_timeout=0)
            executor.update_parameters(**params)
            quiet = io.StringIO()  # submitit prints sbatch's stderr; it goes into the error instead
            with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet), executor.batch():
                jobs = [executor.submit(run_task, p) for p in payloads]
        except Exception as exc:  # sbatch refused (bad partition, account ...) or submitit rejected a value
            for entry in entries:
                self.registry.settle(entry["token"])
            message = str(exc).strip() or type(exc).__name__
            raise BackendError(
                f"Slurm did not accept the jobs: {message}",
                key="slurm",
                hint="check the slurm: section of params.yaml (partition, account, qos, time ...) "
                "against `sinfo` and `sacctmgr show assoc user=$USER`",
            ) from exc
        return jobs  # submitit filled in their ids when the batch closed

"""The Slurm backend: one task = one Slurm job (an element of a job array), via submitit.

This module holds the backend itself; the parts are ``submit`` (job arrays),
``track`` (reading a job's results and state into the recorder), ``registry`` (the
submissions on disk), ``reattach`` (earlier submissions) and ``session`` (one
``execute``: the watch loop, retries, stopping).

Submission: the items are grouped by the number of GPUs they need; each group becomes
one job array (``--gres=gpu:N``, ``--array=0-K%array_parallelism``) whose element runs
:func:`mlrunner.backends.slurm.job.run_task` for one task. submitit writes its files
under ``<output>/.mlrunner/slurm/<run_id>/``.

Recording: compute nodes never write the ledger. A job writes one result file per
command attempt into ``<exp>/.mlrunner-results/``; this process polls those files (cheap,
every ``poll`` seconds) and Slurm's view of the jobs (``squeue``, then ``sacct`` for jobs
``squeue`` has forgotten; adaptive, from 0.5 s up to ``state_poll_max``), and reports to
the :class:`~mlrunner.backends.base.Recorder`. A job that ended without writing a final
result is recorded from its Slurm state (CANCELLED -> cancelled, TIMEOUT -> timeout,
NODE_FAIL -> node_fail, PREEMPTED -> preempted, OUT_OF_MEMORY -> oom with the failure
class ``host_oom``, else lost), after ``result_settle`` seconds (result files on a shared
filesystem may show up late; a job that COMPLETED did write them, so for it
``completed_settle`` seconds). A job that neither ``squeue`` nor ``sacct`` knows for
``unknown_grace`` seconds is dead.

Reattaching: every submission is registered in ``<output>/.mlrunner/slurm/jobs/<token>.json``
*before* ``sbatch`` runs (the batch token also goes into the job's ``--comment``), and moves
to ``jobs/done/`` once all its outcomes are recorded. A later ``execute`` (``run --resume``,
or another ``run`` on the same output) claims a task, then looks there first: a job still
queued or running is waited for (never submitted twice); results of a job that ended
while nobody watched are recorded (deduplicated against the ledger through
``Recorder.previous_jobs``) and count as history, so what did not finish is resubmitted;
a job that died without a result is recorded ``lost`` and resubmitted.

Stopping: when ``recorder.stop`` is set the jobs are cancelled (``scancel``) and recorded
``interrupted``, unless ``options.extra["detach"]`` is true (or a callable that returns
true when asked at that moment, e.g. an interactive prompt): then they keep running and
``execute`` returns at once. ``recorder.kill_now`` sends SIGKILL through ``scancel``.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlrunner.backends.base import Backend, Recorder, RunOptions, WorkItem
from mlrunner.backends.slurm.cluster import (
    gpus_override,
    import_submitit,
    require_slurm_client,
    submitit_parameters,
)
from mlrunner.backends.slurm.session import Session
from mlrunner.backends.slurm.track import Timing


class SlurmBackend(Backend):
    """Runs each work item as one Slurm job; see the module docstring."""

    name = "slurm"

    def __init__(
        self,
        *,
        poll: float = 0.25,
        state_poll_max: float = 15.0,
        unknown_grace: float = 120.0,
        result_settle: float = 1.0,
        completed_settle: float = 60.0,
    ) -> None:
        self.poll = poll
        self.state_poll_max = state_poll_max
        self.unknown_grace = unknown_grace
        self.result_settle = result_settle
        self.completed_settle = completed_settle
        self.submitted: list[str] = []  # job ids this backend submitted (all execute calls)

    def timing(self) -> Timing:
        return Timing(
            poll=self.poll,
            state_poll_max=self.state_poll_max,
            unknown_grace=self.unknown_grace,
            result_settle=self.result_settle,
            completed_settle=self.completed_settle,
        )

    def execute(self, items: Sequence[WorkItem], recorder: Recorder, options: RunOptions) -> None:
        slurm = dict(options.extra.get("slurm") or {})
        params = submitit_parameters(slurm)
        override = gpus_override(slurm)
        submitit = import_submitit()  # only now: importing this module never imports submitit
        require_slurm_client()
        Session(submitit, recorder, options, params, override, self.timing(), self.submitted).run(items)

"""The Slurm backend, one module per concern:

- ``backend``: :class:`SlurmBackend`, what the scheduler calls;
- ``session``: one ``execute`` call (claim, reattach, submit, the watch loop, retries, stop);
- ``submit``: work grouped by GPUs into job arrays, through submitit;
- ``track``: one submission of one task, and its results and Slurm state to the recorder;
- ``reattach``: earlier submissions of the claimed tasks adopted (``run --resume``);
- ``registry``: the submissions on disk, ``<output>/.mlrunner/slurm/jobs/``;
- ``cluster``: Slurm itself (options, squeue/sacct states, scancel, state -> status);
- ``job``: what runs inside a job on the compute node, and its result files.

submitit is imported only when jobs are submitted.
"""

from mlrunner.backends.slurm.backend import SlurmBackend
from mlrunner.backends.slurm.cluster import (
    INSTALL_HINT,
    STATE_STATUS,
    TERMINAL_STATES,
    JobState,
    cancel_jobs,
    command_status,
    expand_job_ids,
    failure_class,
    gpus_override,
    query_states,
    submitit_parameters,
    validate_slurm_options,
)
from mlrunner.backends.slurm.registry import Registry
from mlrunner.backends.slurm.track import Reporter, Timing, Track

__all__ = [
    "INSTALL_HINT",
    "STATE_STATUS",
    "TERMINAL_STATES",
    "JobState",
    "Registry",
    "Reporter",
    "SlurmBackend",
    "Timing",
    "Track",
    "cancel_jobs",
    "command_status",
    "expand_job_ids",
    "failure_class",
    "gpus_override",
    "query_states",
    "submitit_parameters",
    "validate_slurm_options",
]

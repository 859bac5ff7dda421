"""The Slurm backend: ``backend`` (submitit jobs, one per task, the registry of jobs),
``cluster`` (Slurm accounting, options, scancel), ``job`` (what runs inside a job).
submitit is imported only when jobs are submitted."""

from mlrunner.backends.slurm.backend import SlurmBackend, validate_slurm_options

__all__ = ["SlurmBackend", "validate_slurm_options"]

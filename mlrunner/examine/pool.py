"""Examining dirs in forked worker processes, with exactly the serial result.

Workers are forked, so they inherit the parsers (closures and lambdas from a notebook
included: nothing is pickled on the way in) and a copy of the global ``caches``. Only
chunk bounds go in; each dir's :class:`Outcome` comes back pickled, and the parent merges
the outcomes in dir order, as the serial loop does. An outcome that cannot be pickled is
recomputed in the parent.
"""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from mlrunner.errors import ExamineError
from mlrunner.examine.pipeline import Outcome, Pipeline

MIN_PARALLEL = 32  # fewer dirs to parse than this: forking costs more than it saves


@dataclass(frozen=True)
class Job:
    name: str
    path: str
    names: tuple[str, ...]
    cached: dict[str, bytes]


# Set in the parent just before the workers fork; read by them.
_JOBS: tuple[Pipeline, list[Job], dict] | None = None


def _run_chunk(bounds: tuple[int, int]) -> list[bytes | None]:
    assert _JOBS is not None, "examine worker started without jobs (not forked?)"
    pipeline, jobs, caches = _JOBS
    results: list[bytes | None] = []
    for job in jobs[bounds[0] : bounds[1]]:
        outcome = pipeline.run_one(job.name, job.path, job.names, job.cached, caches)
        try:
            results.append(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception:
            results.append(None)
    return results


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def run_parallel(pipeline: Pipeline, jobs: list[Job], caches: dict, workers: int) -> list[Outcome]:
    """Outcomes of ``jobs`` in order; ``caches`` is not touched (workers get a copy)."""
    global _JOBS
    workers = max(1, min(workers, len(jobs)))
    size = max(1, -(-len(jobs) // (workers * 4)))
    chunks = [(i, min(i + size, len(jobs))) for i in range(0, len(jobs), size)]
    _JOBS = (pipeline, jobs, caches)
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as executor:
            blobs = [blob for chunk in executor.map(_run_chunk, chunks) for blob in chunk]
    except BrokenProcessPool:
        raise ExamineError(
            "a parser killed its worker process (it exited or crashed the interpreter)",
            hint="run exam(..., workers=-1) to see which experiment and parser do it",
        ) from None
    finally:
        _JOBS = None
    outcomes: list[Outcome] = []
    scratch = dict(caches)
    for job, blob in zip(jobs, blobs, strict=True):
        if blob is None:
            outcomes.append(pipeline.run_one(job.name, job.path, job.names, job.cached, scratch))
        else:
            outcomes.append(pickle.loads(blob))
    return outcomes

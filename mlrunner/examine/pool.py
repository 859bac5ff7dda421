"""Examining the dirs of one ``exam()``, serially or in forked worker processes.

Both paths yield, in dir order, what each dir gave: its listing (the cache fingerprint)
and its :class:`Outcome`. With workers, everything per dir (listing, cache lookup, parsers)
runs in forked processes, which inherit the parsers (closures and lambdas from a notebook
included: nothing is pickled on the way in), the cache entries and a copy of the global
``caches``. Only chunk bounds go in; a cache hit comes back as its cached payload, a parsed
dir as its new cache payload (or its pickled outcome when it has none), and the parent
merges them in dir order, as the serial loop does. An outcome that cannot be pickled is
recomputed in the parent.
"""

from __future__ import annotations

import gc
import multiprocessing
import pickle
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from mlrunner.errors import ExamineError
from mlrunner.examine.cache import CacheStore, DirScan, scan_dir
from mlrunner.examine.dirs import Caches
from mlrunner.examine.pipeline import Outcome, Pipeline

MIN_PARALLEL = 32  # fewer dirs than this: forking costs more than it saves

Item = tuple[str, str]  # dir name, dir path
Found = tuple[str, str, DirScan, Outcome]

# Set in the parent just before the workers fork; read by them.
_JOBS: tuple[Pipeline, CacheStore, list[Item], int, Caches] | None = None


def _lookup(
    pipeline: Pipeline, store: CacheStore, item: Item, now: int
) -> tuple[DirScan, dict[str, bytes], bool] | None:
    scan = scan_dir(item[1], now, events=pipeline.metrics_files)
    if scan is None:
        return None  # removed meanwhile
    cached = store.get(item[0], scan)
    return scan, cached, pipeline.fully_cached and pipeline.prefix_token in cached


def examine_serial(
    pipeline: Pipeline, store: CacheStore, items: list[Item], now: int, caches: Caches
) -> Iterator[Found]:
    """Each dir in order; a miss runs the parsers on the live ``caches``."""
    for name, path in items:
        found = _lookup(pipeline, store, (name, path), now)
        if found is not None:
            scan, cached, hit = found
            previous = None if hit else store.previous(name)
            yield (
                name,
                path,
                scan,
                pipeline.run_one(name, path, scan, cached, {} if hit else caches, previous),
            )


def _run_chunk(bounds: tuple[int, int]) -> list[tuple[DirScan, bytes | None, bytes | None] | None]:
    assert _JOBS is not None, "examine worker started without jobs (not forked?)"
    pipeline, store, items, now, caches = _JOBS
    results: list[tuple[DirScan, bytes | None, bytes | None] | None] = []
    for name, path in items[bounds[0] : bounds[1]]:
        found = _lookup(pipeline, store, (name, path), now)
        if found is None:
            results.append(None)
            continue
        scan, cached, hit = found
        if hit:
            results.append((scan, cached[pipeline.prefix_token], None))
            continue
        outcome = pipeline.run_one(name, path, scan, cached, caches, store.previous(name))
        blob = outcome.payloads.get(pipeline.prefix_token)
        if pipeline.fully_cached and blob is not None:  # the payload holds the whole outcome
            results.append((scan, blob, None))
            continue
        try:
            results.append((scan, None, pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)))
        except Exception:
            results.append((scan, None, None))
    return results


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def examine_parallel(
    pipeline: Pipeline, store: CacheStore, items: list[Item], now: int, caches: Caches, workers: int
) -> Iterator[Found]:
    """Each dir in order, parsed in ``workers`` forked processes; ``caches`` is not touched."""
    global _JOBS
    workers = max(1, min(workers, len(items)))
    size = max(1, -(-len(items) // (workers * 4)))
    chunks = [(i, min(i + size, len(items))) for i in range(0, len(items), size)]
    _JOBS = (pipeline, store, items, now, caches)
    scratch = dict(caches)
    gc.freeze()  # the workers' garbage collector then leaves the inherited heap (and its pages) alone
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as executor:
            # merge each chunk while the workers parse the next ones
            for (start, end), chunk in zip(chunks, executor.map(_run_chunk, chunks), strict=True):
                for (name, path), result in zip(items[start:end], chunk, strict=True):
                    if result is not None:
                        yield name, path, result[0], _decode(pipeline, store, name, path, result, scratch)
    except BrokenProcessPool:
        raise ExamineError(
            "a parser killed its worker process (it exited or crashed the interpreter)",
            hint="run exam(..., workers=-1) to see which experiment and parser do it",
        ) from None
    finally:
        _JOBS = None
        gc.unfreeze()


def _decode(
    pipeline: Pipeline,
    store: CacheStore,
    name: str,
    path: str,
    result: tuple[DirScan, bytes | None, bytes | None],
    scratch: Caches,
) -> Outcome:
    scan, hit_blob, outcome_blob = result
    if hit_blob is not None:  # decoding a cache payload runs no parser
        return pipeline.run_one(name, path, scan, {pipeline.prefix_token: hit_blob}, {})
    if outcome_blob is not None:
        outcome: Outcome = pickle.loads(outcome_blob)
        return outcome
    # the outcome could not be pickled: parse it here, on a copy of the caches
    return pipeline.run_one(name, path, scan, store.get(name, scan), scratch, store.previous(name))

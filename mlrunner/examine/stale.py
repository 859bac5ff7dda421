"""Staleness: does an experiment's recorded code (``git.json``) differ from the code as it
is now, and its environment (``env.json``) from the environment now?

The code now is captured once per repository, the way the run took its snapshot (same
caps, the output dir left out), and recorded nowhere (:func:`mlrunner.snapshot.current_snapshot`).
The environment now is probed once (:mod:`mlrunner.envinfo`: a child ``python``). Files
hard-linked across a run's experiment dirs are read once (by inode). Unknown (no
``git.json``, no git, no ``env.json``) is None.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from mlrunner import envinfo
from mlrunner import snapshot as gitsnap
from mlrunner.errors import MlrunnerError

T = TypeVar("T")


def _by_inode(exp_dirs: Sequence[str], name: str, read: Callable[[str], T]) -> list[T | None]:
    """``read(exp_dir)`` for each dir holding ``name``, once per distinct file."""
    seen: dict[tuple[int, int], T | None] = {}
    out: list[T | None] = []
    for d in exp_dirs:
        try:
            st = os.stat(os.path.join(d, name))
        except OSError:
            out.append(None)
            continue
        key = (st.st_dev, st.st_ino)
        if key not in seen:
            try:
                seen[key] = read(d)
            except MlrunnerError:
                seen[key] = None
        out.append(seen[key])
    return out


def code_stale(exp_dirs: Sequence[str], outputs: Sequence[str]) -> tuple[list[bool | None], list[str]]:
    """Per dir: True when its code snapshot differs from the working state now, False when
    the same, None when unknown; and notes on what could not be checked."""
    snaps = _by_inode(exp_dirs, gitsnap.JSON_NAME, gitsnap.read_snapshot)
    current: dict[tuple[str, str], gitsnap.Snapshot | None] = {}
    notes: list[str] = []
    out: list[bool | None] = []
    for snap, output in zip(snaps, outputs, strict=True):
        if snap is None or snap.vcs is None or not snap.repo_root:
            out.append(None)
            continue
        key = (snap.repo_root, os.path.realpath(output))
        if key not in current:
            now, why = gitsnap.current_snapshot(snap.repo_root, exclude=[output])
            current[key] = now
            if why:
                notes.append(f"code staleness unknown for {snap.repo_root}: {why}")
        now = current[key]
        out.append(None if now is None else not gitsnap.same_code(snap, now))
    return out, notes


def env_changed(exp_dirs: Sequence[str], now: dict[str, Any] | None = None) -> list[bool | None]:
    """Per dir: True when its env.json differs from the environment now (``now``: probed
    here when not given), None when it has no env.json."""
    hashes = _by_inode(exp_dirs, envinfo.ENV_NAME, lambda d: _hash(envinfo.read_env(d)))
    if all(h is None for h in hashes):
        return [None] * len(hashes)
    current = envinfo.env_hash(now if now is not None else envinfo.fingerprint(os.getcwd()))
    return [None if h is None else h != current for h in hashes]


def _hash(env: dict[str, Any] | None) -> str | None:
    return None if env is None else envinfo.env_hash(env)

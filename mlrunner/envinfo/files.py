"""``env.json``: written once per run, hard-linked into each experiment dir, read back,
hashed and compared."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from typing import Any

from mlrunner.errors import ExamineError

ENV_NAME = "env.json"
KEYS = ("python", "executable", "platform", "packages", "gpus", "driver", "cpu", "host")


def env_text(env: Mapping[str, Any]) -> str:
    return json.dumps(dict(env), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def env_hash(env: Mapping[str, Any]) -> str:
    """sha256 (hex) of the fingerprint's canonical JSON: equal environments, equal hashes."""
    canonical = json.dumps(dict(env), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _tmp(dest: str) -> str:
    head, name = os.path.split(dest)
    return os.path.join(head, f".{name}.{os.getpid()}.tmp")


def write_env(env: Mapping[str, Any], directory: str | os.PathLike[str]) -> str:
    """Write ``<directory>/env.json`` atomically (the run's copy); returns its path."""
    os.makedirs(directory, exist_ok=True)
    dest = os.path.join(os.fspath(directory), ENV_NAME)
    tmp = _tmp(dest)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(env_text(env))
    os.replace(tmp, dest)
    return dest


def link_env(src: str, exp_dir: str | os.PathLike[str]) -> None:
    """``exp_dir/env.json`` as a hard link of the run's ``src`` (a copy where links fail),
    replacing whatever was there atomically. Cheap per task: one link() when the dir is new."""
    dest = os.path.join(os.fspath(exp_dir), ENV_NAME)
    try:
        os.link(src, dest)
        return
    except FileExistsError:
        try:
            if os.path.samefile(src, dest):
                return
        except OSError:
            pass
    except OSError:  # EXDEV across filesystems, EMLINK past the link limit, EPERM...
        pass
    tmp = _tmp(dest)
    try:
        os.link(src, tmp)
    except FileExistsError:
        os.unlink(tmp)
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def read_env(exp_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``env.json`` of an experiment dir (or the file itself), None when there is none.
    Raises ExamineError when it is not a JSON object."""
    path = os.fspath(exp_dir)
    if os.path.isdir(path):
        path = os.path.join(path, ENV_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ExamineError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ExamineError(
            f"{path} is not valid JSON ({exc})", hint="the file is damaged; the environment is unknown"
        ) from None
    if not isinstance(data, dict):
        raise ExamineError(f"{path}: expected a JSON object, got a {type(data).__name__}")
    return data


def diff_env(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> dict[str, Any]:
    """What differs between two fingerprints: ``{"packages": {name: [a, b]}, key: [a, b]}``,
    a package missing on one side as None; {} when they are the same."""
    a, b = a or {}, b or {}
    out: dict[str, Any] = {}
    pa, pb = a.get("packages") or {}, b.get("packages") or {}
    packages = {n: [pa.get(n), pb.get(n)] for n in sorted(set(pa) | set(pb)) if pa.get(n) != pb.get(n)}
    if packages:
        out["packages"] = packages
    for key in sorted((set(a) | set(b)) - {"packages"}):
        if a.get(key) != b.get(key):
            out[key] = [a.get(key), b.get(key)]
    return out

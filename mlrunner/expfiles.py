"""The files of one experiment dir that users and 0.5.9 tools read: ``param`` and ``stat``.

``param`` is YAML: the resolved params plus ``_name``, ``_output``, ``_time`` and
``_scripts`` (a copy-pasteable shell line per command). ``stat`` is YAML: command ->
``finished`` / ``failed`` / ``running`` / ``interrupted``. Both are written atomically
(temp file + rename) so a crash never leaves a half-written file. The ledger is the
source of truth; these files are its compatible view.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

try:  # the C dumper/loader are ~10x faster than the pure-Python ones
    from yaml import CSafeDumper as _Dumper
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeDumper as _Dumper  # type: ignore[assignment]
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

PARAM_FILE = "param"
STAT_FILE = "stat"
# Statuses the stat file shows (0.5.9's words); ledger-only classes map onto them.
STAT_WORDS = {
    "finished": "finished",
    "failed": "failed",
    "oom": "failed",
    "timeout": "failed",
    "node_fail": "failed",
    "preempted": "interrupted",
    "cancelled": "interrupted",
    "interrupted": "interrupted",
    "lost": "interrupted",
    "running": "running",
}


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same dir and a rename.

    Plain ``os`` calls (no buffered file object): this runs a few times per command.
    """
    path = os.fspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    view = memoryview(data.encode("utf-8") if isinstance(data, str) else data)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        try:
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, width=1_000_000, allow_unicode=True, sort_keys=False)


def load_yaml(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_Loader)


def write_param(exp_dir: str | os.PathLike[str], params: Mapping[str, Any]) -> None:
    atomic_write(os.path.join(exp_dir, PARAM_FILE), dump_yaml(dict(params)))


def read_param(exp_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The experiment's ``param`` mapping, None when the file is missing or unreadable."""
    try:
        data = load_yaml(Path(exp_dir, PARAM_FILE))
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def read_stat(exp_dir: str | os.PathLike[str]) -> dict[str, str]:
    """command -> status from ``stat``; {} when missing or unreadable (0.5.9 files included)."""
    try:
        data = load_yaml(Path(exp_dir, STAT_FILE))
    except (OSError, yaml.YAMLError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}


def write_stat(exp_dir: str | os.PathLike[str], stat: Mapping[str, str]) -> None:
    # Command names match [\w-]+ and statuses are plain words: this is valid YAML, and
    # an order of magnitude cheaper than a YAML dumper on the per-command hot path.
    text = "".join(f"{name}: {STAT_WORDS.get(status, status)}\n" for name, status in stat.items())
    atomic_write(os.path.join(exp_dir, STAT_FILE), text)

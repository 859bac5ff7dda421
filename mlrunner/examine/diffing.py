"""``mlrunner diff``: what differs between two experiments, as plain data.

``{"experiments": [a, b], "params": {name: [a, b]}, "commands": {name: [a, b]},
"code": {"files": [{"path", "status"}], "patch": str | None}, "env": {"packages": {name:
[a, b]}, key: [a, b]}, "metrics": {name: [a, b]}}``; a section is there only when
something in it differs (``experiments`` always). A value missing on one side is None.
A command is compared as rendered for the experiment, without its GPUs and its log file.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from mlrunner import envinfo, expdir
from mlrunner import snapshot as gitsnap
from mlrunner.errors import MlrunnerError, UsageError, did_you_mean
from mlrunner.examine.dirs import list_dirs

SCRIPTS = "_scripts"
_QUOTED = r"""(?:'[^']*'(?:"'"'[^']*')*|[^\s']+)"""  # one word as shlex.quote() writes it
_LINE = re.compile(rf"^CUDA_VISIBLE_DEVICES={_QUOTED} (?P<command>.*) > {_QUOTED} 2>&1$", re.DOTALL)


def command_of(line: Any) -> Any:
    """The command a ``_scripts`` line runs, without the GPUs and the log it went to (which
    differ between any two experiments); the line itself when it has another shape."""
    if not isinstance(line, str):
        return line
    m = _LINE.match(line)
    if m is None:
        return line
    command = m.group("command")
    if command.startswith("bash -c "):
        try:
            words = shlex.split(command)
        except ValueError:
            return command
        if len(words) == 3:
            return words[2]
    return command


def commands_of(param: Mapping[Any, Any]) -> dict[Any, Any]:
    scripts = param.get(SCRIPTS)
    return {k: command_of(v) for k, v in scripts.items()} if isinstance(scripts, dict) else {}


def resolve(output: str | os.PathLike[str], name: str) -> tuple[str, str]:
    """(output dir, dir name) of experiment ``name``: a dir name under ``output`` or a path
    to an experiment dir. UsageError (exit 2) with a did-you-mean when there is none."""
    base = os.fspath(output)
    candidates = [os.path.join(base, name)] if not os.path.isabs(name) else []
    candidates.append(name)
    for path in candidates:
        if os.path.isfile(os.path.join(path, expdir.PARAM_FILE)):
            real = os.path.normpath(os.path.abspath(path))
            return os.path.dirname(real), os.path.basename(real)
    try:
        names = list_dirs(base)
    except MlrunnerError:
        names = []
    raise UsageError(
        f"no experiment '{name}' under '{base}' (an experiment dir holds a 'param' file)",
        hint=did_you_mean(name, names)
        or "name an experiment by its dir name (`mlrunner table --name`) or path",
    )


def read_experiment(path: str) -> dict[str, Any]:
    """What an experiment dir holds, as plain data: ``param`` (the whole param file),
    ``params`` (without the reserved ``_`` keys), ``commands`` (the lines as run, GPUs and log
    included), ``env`` (env.json) and ``git`` (git.json); an unreadable env or git file is
    ``{"error": ...}``, a missing one None."""
    param = expdir.read_param(path) or {}
    scripts = param.get(SCRIPTS)
    try:
        env = envinfo.read_env(path)
    except MlrunnerError as exc:
        env = {"error": str(exc)}
    try:
        snap = gitsnap.read_snapshot(path)
        git = snap.to_dict() if snap is not None else None
    except MlrunnerError as exc:
        git = {"error": str(exc)}
    return {
        "param": param,
        "params": {str(k): v for k, v in param.items() if not str(k).startswith("_")},
        "commands": dict(scripts) if isinstance(scripts, dict) else {},
        "env": env,
        "git": git,
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return False


def _differ(a: Mapping[Any, Any], b: Mapping[Any, Any], keys: Sequence[Any]) -> dict[str, list[Any]]:
    return {str(k): [a.get(k), b.get(k)] for k in keys if not _same(a.get(k), b.get(k))}


def _keys(a: Mapping[Any, Any], b: Mapping[Any, Any], reserved: bool = False) -> list[Any]:
    keys = list(dict.fromkeys([*a, *b]))
    if not reserved:
        keys = [k for k in keys if not (isinstance(k, str) and k.startswith("_"))]
    return sorted(keys, key=lambda k: (not isinstance(k, str), str(k)))


def code_diff(a_dir: str, b_dir: str, patch: bool) -> dict[str, Any] | None:
    """The ``code`` section: None when both ran the same code (or neither recorded any)."""
    try:
        sa, sb = gitsnap.read_snapshot(a_dir), gitsnap.read_snapshot(b_dir)
    except MlrunnerError as exc:
        return {"files": None, "patch": None, "error": str(exc)}
    if sa is None and sb is None:
        return None
    if sa is None or sb is None or sa.vcs is None or sb.vcs is None:
        missing = a_dir if sa is None or sa.vcs is None else b_dir
        return {"files": None, "patch": None, "error": f"no git snapshot recorded in {missing}"}
    if gitsnap.same_code(sa, sb):
        return None
    a_tree, b_tree = sa.tree or sa.commit, sb.tree or sb.commit
    root = sa.repo_root if sa.repo_root and os.path.isdir(sa.repo_root) else sb.repo_root
    if not (a_tree and b_tree and root and os.path.isdir(root)):
        return {"files": None, "patch": None, "error": "the repository the experiments ran from is not here"}
    try:
        got = gitsnap.tree_diff(root, a_tree, b_tree, patch=patch)
    except (MlrunnerError, OSError) as exc:
        return {"files": None, "patch": None, "error": str(exc)}
    return {"files": got.files, "patch": got.patch}


def env_diff(a_dir: str, b_dir: str) -> dict[str, Any] | None:
    try:
        ea, eb = envinfo.read_env(a_dir), envinfo.read_env(b_dir)
    except MlrunnerError as exc:
        return {"error": str(exc)}
    if ea is None and eb is None:
        return None
    return envinfo.diff_env(ea, eb) or None


def diff_dirs(
    a_dir: str,
    b_dir: str,
    metrics: tuple[Mapping[Any, Any], Mapping[Any, Any]] = ({}, {}),
    *,
    code: bool = False,
) -> dict[str, Any]:
    """The difference of two experiment dirs; ``metrics``: each one's metric summaries."""
    pa = expdir.read_param(a_dir) or {}
    pb = expdir.read_param(b_dir) or {}
    out: dict[str, Any] = {"experiments": [os.path.basename(a_dir), os.path.basename(b_dir)]}
    params = _differ(pa, pb, _keys(pa, pb))
    if params:
        out["params"] = params
    sa, sb = commands_of(pa), commands_of(pb)
    commands = _differ(sa, sb, _keys(sa, sb, reserved=True))
    if commands:
        out["commands"] = commands
    code_section = code_diff(a_dir, b_dir, code)
    if code_section is not None:
        out["code"] = code_section
    env = env_diff(a_dir, b_dir)
    if env:
        out["env"] = env
    ma, mb = metrics
    differing = _differ(ma, mb, _keys(ma, mb, reserved=True))
    if differing:
        out["metrics"] = differing
    return out

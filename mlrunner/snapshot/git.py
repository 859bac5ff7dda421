"""Running git: the environment (the user's repo variables dropped, an identity for
commits), errors as :class:`GitFailed`, commits of a tree, the binary patch of a tree
against a commit, credentials stripped from remote URLs. Stdlib only."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SNAPSHOT_REF_PREFIX = "refs/mlrunner/snapshots/"  # where snapshot commits are kept

# Variables that would point git at another repository, index or ref namespace than ours,
# or change how our pathspecs are read.
_REPO_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_PREFIX",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_QUARANTINE_PATH",
    "GIT_LITERAL_PATHSPECS",  # would turn our ':(exclude)' pathspecs into plain paths
    "GIT_GLOB_PATHSPECS",
    "GIT_NOGLOB_PATHSPECS",
    "GIT_ICASE_PATHSPECS",
)


_IDENTITY = {
    "GIT_AUTHOR_NAME": "mlrunner",
    "GIT_AUTHOR_EMAIL": "mlrunner@localhost",
    "GIT_COMMITTER_NAME": "mlrunner",
    "GIT_COMMITTER_EMAIL": "mlrunner@localhost",
}


class GitFailed(Exception):
    """A git subprocess exited non-zero (internal; callers turn it into a user message)."""

    def __init__(self, args: list[str], returncode: int, stderr: bytes) -> None:
        super().__init__(args, returncode, stderr)
        self.args_ = args
        self.returncode = returncode
        self.stderr = stderr.decode(errors="replace").strip()

    def __str__(self) -> str:
        shown = " ".join(a if len(a) < 80 else a[:77] + "..." for a in self.args_[:8])
        return f"`git {shown}` failed (exit {self.returncode}): {self.stderr[-2000:]}"


def git_env(index_file: str | None = None, *, identity: bool = False) -> dict[str, str]:
    """The environment for our git calls: the user's, minus anything that redirects git."""
    env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV}
    env["GIT_OPTIONAL_LOCKS"] = "0"
    env["GIT_TERMINAL_PROMPT"] = "0"
    if index_file is not None:
        env["GIT_INDEX_FILE"] = index_file
    if identity:
        env.update(_IDENTITY)
    return env


def run_git(
    root: str | os.PathLike[str],
    *args: str,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    stdout: Any = subprocess.PIPE,
) -> bytes:
    """Run ``git --no-optional-locks ARGS`` in ``root``; stdout bytes, GitFailed on error."""
    cmd = ["git", "--no-optional-locks", *args]
    proc = subprocess.run(
        cmd,
        cwd=root,
        env=dict(env) if env is not None else git_env(),
        input=input,
        stdout=stdout,
        stderr=subprocess.PIPE,
        stdin=None if input is not None else subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        raise GitFailed(list(args), proc.returncode, proc.stderr or b"")
    return proc.stdout if proc.stdout is not None else b""


def strip_credentials(url: str) -> str:
    """Drop user:password (or token@) from http(s)-like URLs and passwords from ssh URLs.

    ``git@host:org/repo.git`` (scp form) and local paths are returned unchanged.
    """
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if parts.scheme in ("ssh", "git+ssh", "ssh+git"):
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
    else:
        netloc = hostport
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def commit_tree(root: str, tree: str, parent: str | None, message: str) -> str:
    """Commit ``tree`` (on ``parent``) as mlrunner and keep it under refs/mlrunner/snapshots/."""
    parents = ["-p", parent] if parent else []
    env = git_env(identity=True)
    sha = run_git(root, "commit-tree", "--no-gpg-sign", tree, *parents, "-m", message, env=env)
    commit = sha.decode().strip()
    run_git(root, "update-ref", SNAPSHOT_REF_PREFIX + commit, commit)
    return commit


@lru_cache(maxsize=1)
def git_version() -> str:
    out = run_git("/", "--version").decode().strip()
    return out.removeprefix("git version ").strip()


def write_patch(root: str, base: str, tree: str, dest: Path) -> None:
    """``git diff --binary BASE TREE`` into ``dest`` (atomically), appliable with ``git apply``."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        run_git(
            root,
            "diff",
            "--binary",
            "--full-index",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--no-relative",
            "--find-renames",
            "--src-prefix=a/",
            "--dst-prefix=b/",
            base,
            tree,
            stdout=f,
        )
    os.replace(tmp, dest)


def empty_tree_id(root: str) -> str:
    """The id of the empty tree in this repository's hash (SHA-1 or SHA-256)."""
    return run_git(root, "hash-object", "-t", "tree", "--stdin", input=b"").decode().strip()

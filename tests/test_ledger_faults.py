"""Ledger write failures are loud: read-only output dirs and a full disk never read as success.

Tests run as root here, and root ignores permission bits: the read-only cases run in a
child process that drops to user 'nobody' (after importing, since the Python install may
not be readable by nobody); as a normal user the directories are chmod'ed instead. The
full disk is a real write failure: the child lowers RLIMIT_FSIZE so the kernel refuses
(EFBIG) every write past the first byte of any file, as a full disk refuses them.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlrunner.ledger import Ledger
from mlrunner.ledger.views import run_doc, runs_doc

READ_ONLY_CHILD = """
import json, os, sys
import filelock  # noqa: F401  (imported before dropping privileges)
from mlrunner.errors import LedgerError
from mlrunner.ledger import Ledger
from mlrunner.ledger.views import runs_doc
if os.getuid() == 0:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
out = sys.argv[1]
result = {}
def attempt(name, fn):
    try:
        result[name] = ["ok", fn()]
    except LedgerError as e:
        result[name] = ["error", str(e)]
def new_run(ledger):
    return ledger.create_run(argv=[], cwd=".", params_path=None, params_text=None, options={}, snapshot=None)
attempt("read", lambda: [r["id"] for r in runs_doc(Ledger(out, create=False))])
attempt("write", lambda: new_run(Ledger(out, create=False)))
attempt("open_and_write", lambda: new_run(Ledger(out)))
attempt("new_output", lambda: Ledger(os.path.join(out, "sub")).path.name)
print(json.dumps(result))
"""

DISK_FULL_CHILD = """
import json, os, resource, signal, sys
from mlrunner.errors import LedgerError
from mlrunner.ledger import Ledger
ledger = Ledger(sys.argv[1])
run = ledger.get_run()["id"]
attempt = ledger.start_attempt(run_id=run, task_key="k", command="train", resource="0", gpus=[0],
                               log_path=None)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1, 1))
result = {}
def step(name, fn):
    try:
        fn()
        result[name] = "recorded"
    except LedgerError as e:
        result[name] = str(e)
step("end_attempt", lambda: ledger.end_attempt(attempt, status="finished", exit_code=0))
tasks = [{"key": f"t{i}", "name": f"t{i}", "output_dir": f"t{i}", "params": {"i": i}, "commands": ["a"]}
         for i in range(3000)]
step("register_tasks", lambda: ledger.register_tasks(run, tasks))
step("create_run", lambda: ledger.create_run(argv=[], cwd=".", params_path=None, params_text=None,
                                             options={}, snapshot=None))
step("update_run", lambda: ledger.update_run(run, status="finished"))
print(json.dumps(result), flush=True)
"""


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory user 'nobody' can reach (pytest's tmp_path is mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="mlrunner-ledger-ro-"))
    path.chmod(0o755)
    yield path
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    shutil.rmtree(path)


def seed_ledger(out: Path) -> None:
    with Ledger(out) as ledger:
        run = ledger.create_run(
            argv=["run"], cwd=".", params_path=None, params_text=None, options={}, snapshot=None
        )
        ledger.register_tasks(run, [{"key": "k", "name": "k", "output_dir": str(out / "k"), "params": {},
                                     "commands": ["train"]}])  # fmt: skip


def make_read_only(out: Path) -> None:
    if os.getuid() == 0:
        return  # the child drops to 'nobody', who does not own these files
    for root, dirs, files in os.walk(out):
        for f in files:
            os.chmod(os.path.join(root, f), stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o555)
    out.chmod(0o555)


def run_child(code: str, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("live", [False, True], ids=["closed-ledger", "ledger-in-use"])
def test_read_only_output_dir(world_dir: Path, live: bool) -> None:
    out = world_dir / "sweep out"
    seed_ledger(out)
    keeper = Ledger(out) if live else None  # an open writer keeps ledger.db-wal/-shm around
    try:
        assert keeper is None or Path(f"{keeper.path}-wal").exists()
        make_read_only(out)
        result = run_child(READ_ONLY_CHILD, out)
    finally:
        if keeper is not None:
            keeper.close()
    assert result["read"] == ["ok", [1]]  # `mlrunner ledger ls` still works
    for name in ("write", "open_and_write"):
        kind, message = result[name]
        assert kind == "error" and "read-only" in message and "MLRUNNER_LEDGER_DIR" in message, message
        assert str(out) in message
    kind, message = result["new_output"]
    assert (
        kind == "error" and "cannot create the ledger directory" in message and "Permission denied" in message
    )
    with Ledger(out, create=False) as ledger:  # nothing was written behind our back
        assert [r["id"] for r in runs_doc(ledger)] == [1]
        assert ledger.integrity_check() == "ok"


def test_disk_full_is_an_error_and_never_a_false_finished(tmp_path: Path) -> None:
    out = tmp_path / "out"
    seed_ledger(out)
    result = run_child(DISK_FULL_CHILD, out)
    assert set(result) == {"end_attempt", "register_tasks", "create_run", "update_run"}
    for name, message in result.items():
        assert message != "recorded", name
        assert "NOT recorded" in message and "free space" in message and "--resume" in message, message
    with Ledger(out) as ledger:
        assert ledger.command_states() == {("k", "train"): "lost"}  # not 'finished': the runner died
        assert [t["status"] for t in run_doc(ledger, 1)["tasks"]] == ["lost"]
        # the run (created by this test process, still alive) is unchanged: no finished mark
        assert [(r["id"], r["n_tasks"], r["status"]) for r in runs_doc(ledger)] == [(1, 1, "running")]
        assert ledger.integrity_check() == "ok"
        (orphan,) = ledger.orphaned_attempts()
        ledger.end_attempt(orphan["id"], status="lost")  # with space again, writes work
        assert ledger.attempts_for("k")[0]["status"] == "lost"

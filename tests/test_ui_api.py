"""`mlrunner ui`'s JSON API against a real sweep (a failure, then a resume), served by the
real CLI in a subprocess: the documents equal the CLI's `--json`, logs in pieces, 404s for
what does not exist or would leave the output root, nothing writes, Ctrl-C stops it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers import Project, mlrunner_argv, run_argv, wait_for
from ui_support import HOSTILE, Server, live_project, start_server

from mlrunner.ui import NotFound, UiData
from mlrunner.ui.files import CHUNK, log_piece

NAMES = [f"Cfg_{c}-Seed_{s}" for c in "ab" for s in range(3)]


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (the ledger's WAL aside): size and mtime."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if "ledger.db" not in f and not f.endswith(".lock"):
                st = os.stat(p)
                out[p] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def server(ui_sweep: Project) -> Iterator[Server]:
    srv = start_server(ui_sweep, "output")
    yield srv
    code, out, err = srv.stop()
    assert code == 0 and "stopped" in out and "Traceback" not in err, (code, out, err)


def hostile_name(output: Path) -> str:
    return next(p.name for p in output.iterdir() if p.name.startswith("Cfg_c-"))


def test_runs_and_run_equal_the_cli_json(server: Server, ui_sweep: Project) -> None:
    runs = server.json("/api/runs")
    assert runs == json.loads(ui_sweep.mlrunner("ledger", "ls", "--json", check=0).stdout)
    assert len(runs) == 1 and runs[0]["n_finished"] == 7 and runs[0]["status"] == "finished"
    doc = server.json("/api/runs/1")
    assert doc == json.loads(ui_sweep.mlrunner("ledger", "show", "1", "--json", check=0).stdout)
    failed_once = next(t for t in doc["tasks"] if t["name"] == "Cfg_b-Seed_2")
    assert failed_once["commands"][0]["attempts"] == 2 and failed_once["status"] == "finished"
    attempts = server.json("/api/runs/1/attempts")["attempts"]
    assert len(attempts) == 8  # 7 tasks, one resumed
    mine = [a for a in attempts if a["name"] == "Cfg_b-Seed_2"]
    assert [a["status"] for a in mine] == ["failed", "finished"] and mine[0]["exit_code"] == 1
    assert {a["resource"] for a in attempts} == {"0", "1"}
    assert server.json("/api/live") == {"live": [], "orphaned": [], "stopped": [], "runs": []}


@pytest.mark.parametrize(
    "path", ["/api/runs/2", "/api/runs/0", "/api/runs/abc", "/api/runs/2/attempts", "/api/nope"]
)
def test_unknown_runs_are_json_404(server: Server, path: str) -> None:
    status, headers, body = server.get(path)
    assert status == 404 and headers["content-type"] == "application/json"
    assert "error" in json.loads(body)


def test_experiments_rows(server: Server, ui_sweep: Project) -> None:
    output = ui_sweep.path / "output"
    rows = server.json("/api/experiments")
    names = [r["_name"] for r in rows]
    assert sorted(names) == sorted([*NAMES, hostile_name(output)])
    row = next(r for r in rows if r["_name"] == "Cfg_a-Seed_1")
    assert row["cfg"] == "a" and row["seed"] == 1 and row["_status"] == "finished"
    assert row["val_loss"] == pytest.approx((11 / 3 - 2.1) ** 2)  # the last value by default
    assert row["_git_commit"] and row["_git_dirty"] is True and row["_duration_s"] >= 0
    hostile = next(r for r in rows if r["_name"].startswith("Cfg_c-"))
    assert hostile["note"] == HOSTILE
    mins = server.json("/api/experiments?summary=val_loss%3Dmin")
    assert next(r for r in mins if r["_name"] == "Cfg_a-Seed_1")["val_loss"] == pytest.approx(0.01)
    meta = server.json("/api/columns?summary=val_loss%3Dmin")
    assert meta["params"] == ["cfg", "note", "seed"] and "val_loss" in meta["metrics"]
    assert meta["history_metrics"] == ["acc", "val_loss"] and meta["summary"] == {"val_loss": "min"}
    status, _, body = server.get("/api/experiments?summary=val_loss%3Dmedian")
    assert status == 400 and "median" in json.loads(body)["error"]
    # gzip and ETag: the same rows, a 304 when unchanged
    status, headers, gz = server.get("/api/experiments", {"Accept-Encoding": "gzip"})
    import gzip

    assert headers.get("content-encoding") == "gzip" and json.loads(gzip.decompress(gz)) == rows
    status, _, _ = server.get("/api/experiments", {"If-None-Match": headers["etag"]})
    assert status == 304


def test_curves_detail_compare(server: Server, ui_sweep: Project) -> None:
    curves = server.json("/api/curves?metric=val_loss")
    assert curves["params"] == ["cfg", "note", "seed"] and len(curves["series"]) == 7
    one = next(s for s in curves["series"] if s["name"] == "Cfg_a-Seed_0")
    assert one["step"] == list(range(12))
    assert server.get("/api/curves?metric=nope")[0] == 404
    assert server.get("/api/curves?metric=val_loss&agg=nope")[0] == 400
    detail = server.json("/api/experiments/Cfg_b-Seed_2")
    assert detail["params"] == {"cfg": "b", "seed": 2, "note": "plain"}
    assert [a["status"] for a in detail["attempts"]["train"]] == ["failed", "finished"]
    assert "+# an uncommitted edit" in detail["patch"] and "notes.txt" in detail["patch"]
    assert detail["git"]["dirty"] is True and detail["env"]["python"]
    assert any(n.startswith("log.train.") for n in detail["logs"])
    hostile = hostile_name(ui_sweep.path / "output")
    assert server.json("/api/experiments/" + quote(hostile, safe=""))["params"]["note"] == HOSTILE
    doc = server.json("/api/compare?a=Cfg_a-Seed_0&b=" + quote(hostile, safe=""))
    assert doc["params"]["note"] == ["plain", HOSTILE] and doc["params"]["cfg"] == ["a", "c"]
    assert server.get("/api/compare?a=Cfg_a-Seed_0&b=nope")[0] == 404
    assert server.get("/api/compare?a=Cfg_a-Seed_0")[0] == 400


def test_logs_whole_in_pieces_and_tailed(server: Server, ui_sweep: Project) -> None:
    exp = ui_sweep.path / "output" / "Cfg_b-Seed_2"
    latest = sorted(p for p in exp.iterdir() if p.name.startswith("log.train."))[-1]
    text = latest.read_bytes()
    status, headers, body = server.get("/api/experiments/Cfg_b-Seed_2/log/train")
    assert status == 200 and body == text and headers["x-log-size"] == str(len(text))
    assert headers["content-type"].startswith("text/plain") and headers["x-log-name"] == latest.name
    _, headers, rest = server.get("/api/experiments/Cfg_b-Seed_2/log/train?offset=10")
    assert rest == text[10:] and headers["x-log-start"] == "10"
    _, headers, tail = server.get("/api/experiments/Cfg_b-Seed_2/log/train?tail=20")
    assert tail == text[-20:] and int(headers["x-log-end"]) == len(text)
    _, _, piece = server.get("/api/experiments/Cfg_b-Seed_2/log/train?offset=5&limit=7")
    assert piece == text[5:12]
    _, _, past = server.get(f"/api/experiments/Cfg_b-Seed_2/log/train?offset={len(text) + 100}")
    assert past == b""
    assert server.get("/api/experiments/Cfg_b-Seed_2/log/train?offset=x")[0] == 400
    assert server.get("/api/experiments/Cfg_b-Seed_2/log/test")[0] == 404
    first = sorted(p for p in exp.iterdir() if p.name.startswith("log.train."))[0]
    assert b"diverged" in first.read_bytes() and b"diverged" not in text  # the latest attempt's


@pytest.mark.parametrize(
    "path",
    [
        "/api/experiments/..",
        "/api/experiments/%2e%2e",
        "/api/experiments/..%2F..%2Fetc",
        "/api/experiments/%2Fetc",
        "/api/experiments/%2Fetc%2Fpasswd/log/train",
        "/api/experiments/.mlrunner",
        "/api/experiments/.mlrunner/log/ledger",
        "/api/experiments/..%2Foutput%2FCfg_a-Seed_0/log/train",
        "/api/experiments/Cfg_a-Seed_0/log/..",
        "/api/experiments/Cfg_a-Seed_0/log/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/experiments/Cfg_a-Seed_0/log/%2Fetc%2Fpasswd",
        "/api/experiments/Cfg_a-Seed_0%2F..%2FCfg_a-Seed_1/log/train",
        "/api/experiments/nope",
        "/api/experiments/%24%28touch%20x%29",
        "/api/experiments/" + "x" * 5000,
    ],
)
def test_names_never_leave_the_output_root(server: Server, path: str) -> None:
    status, headers, body = server.get(path)
    assert status == 404, (path, status, body[:200])
    assert headers["content-type"] == "application/json" and "error" in json.loads(body)


def test_read_only_security_headers_and_hosts(server: Server, ui_sweep: Project) -> None:
    before = tree_state(ui_sweep.path)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/api/runs", "/api/experiments/Cfg_a-Seed_0/log/train", "/"):
            status, headers, body = server.get(path, method=method)
            assert status == 405 and json.loads(body)["error"].startswith("read-only"), (method, path)
    status, headers, body = server.get("/", {"Host": "evil.example:8765"})  # DNS rebinding
    assert status == 403
    status, headers, page = server.get("/experiments")
    csp = headers["content-security-policy"]
    assert status == 200 and "script-src 'self'" in csp and "unsafe-eval" not in csp
    assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert headers["x-content-type-options"] == "nosniff" and b'<script src="/static/core.js' in page
    assert server.get("/experiments/nope")[0] == 404 and server.get("/runs/7")[0] == 404
    assert server.get("/runs/1")[0] == 200 and server.get("/compare?a=x&b=y")[0] == 200
    status, headers, js = server.get("/static/plotly.min.js")
    assert status == 200 and js.startswith(b"/**\n* plotly.js v") and "javascript" in headers["content-type"]
    assert server.get("/static/..%2F__init__.py")[0] == 404 and server.get("/static/nope.js")[0] == 404
    server.get("/api/experiments")  # reads only
    assert tree_state(ui_sweep.path) == before


def test_a_100_mb_log_is_served_in_pieces(tmp_path: Path, ui_sweep: Project) -> None:
    output = tmp_path / "out"
    exp = output / "Big"
    exp.mkdir(parents=True)
    (exp / "param").write_text("x: 1\n")
    log = exp / "log.train.20260101.000000"
    with open(log, "wb") as f:
        f.truncate(100 * 1024 * 1024)  # sparse: 100 MB
        f.seek(100 * 1024 * 1024 - 4)
        f.write(b"end\n")
    data = UiData(output)
    piece = data.log("Big", "train")
    sizes = [len(c) for c in piece.chunks()]
    assert sum(sizes) == 100 * 1024 * 1024 and max(sizes) == CHUNK  # never read whole
    assert data.log("Big", "train", tail=4).read() == b"end\n"
    assert log_piece(str(log), offset=10, limit=3).end == 13
    srv = start_server(ui_sweep, str(output))
    try:
        status, headers, body = srv.get("/api/experiments/Big/log/train?offset=104857000")
        assert status == 200 and body.endswith(b"end\n") and len(body) == 100 * 1024 * 1024 - 104857000
    finally:
        code, _, err = srv.stop()
    assert code == 0 and "note: no ledger under" in err and "run -o" in err


def test_names_checked_against_escapes(tmp_path: Path) -> None:
    output = tmp_path / "out"
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "param").write_text("x: 1\n")
    (outside / "log.train.1").write_text("secret\n")
    output.mkdir()
    (output / "Link").symlink_to(outside)  # a symlinked experiment dir leading out
    (output / "Real").mkdir()
    (output / "Real" / "param").write_text("x: 2\n")
    (output / "Real" / "log.train.1").symlink_to(outside / "log.train.1")  # a log leading out
    data = UiData(output)
    for name, command in (("Link", "train"), ("Real", "train"), ("..", "train"), ("Real", "../train")):
        with pytest.raises(NotFound):
            data.log(name, command)
    assert not data.has_experiment("Link") and data.has_experiment("Real")


def test_cli_errors_are_clear(ui_sweep: Project, tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        res = ui_sweep.mlrunner("ui", "--port", str(port))
    finally:
        taken.close()
    assert res.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in res.stderr
    assert "--port 0" in res.stderr and "Traceback" not in res.stderr
    res = ui_sweep.mlrunner("ui", "-o", "no such dir $(x)")
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr
    res = ui_sweep.mlrunner("ui", "--host", "no.such.host.invalid")
    assert res.returncode == 2 and "--host" in res.stderr and "Traceback" not in res.stderr
    res = ui_sweep.mlrunner("ui", "--port", "70000")
    assert res.returncode == 2 and "not a port" in res.stderr
    res = ui_sweep.mlrunner("report", "-o", "nope")
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr
    res = ui_sweep.mlrunner("report", "--out", str(tmp_path / "no dir" / "r.html"))
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_missing_extra_says_how_to_install(ui_sweep: Project) -> None:
    for blocked, command in (("uvicorn", "ui"), ("plotly", "report")):
        code = (
            f"import sys; sys.modules[{blocked!r}] = None\n"
            f"sys.argv = ['mlrunner', {command!r}, '--port' if {command!r} == 'ui' else '--out', "
            f"'0' if {command!r} == 'ui' else 'r.html']\n"
            "from mlrunner.cli import main\nmain()\n"
        )
        res = subprocess.run(
            [sys.executable, "-c", code], cwd=ui_sweep.path, env=ui_sweep.env, capture_output=True, text=True
        )
        assert res.returncode == 1, res.stderr
        assert (
            f"needs the optional package {blocked}" in res.stderr
            and "pip install 'mlrunner[ui]'" in res.stderr
        )
        assert "Traceback" not in res.stderr


def test_exposed_host_warns(ui_sweep: Project) -> None:
    proc = subprocess.Popen(
        mlrunner_argv("ui", "--host", "0.0.0.0", "--port", "0"), cwd=ui_sweep.path, env=ui_sweep.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    srv = Server(proc, "", ui_sweep.path / "output")
    assert proc.stdout is not None and proc.stdout.readline().startswith("mlrunner ui: output at http://")
    code, out, err = srv.stop()
    assert "WARNING: serving on 0.0.0.0" in err and "anyone who can reach it" in err and code == 0


def test_startup_imports_nothing_of_the_ui(ui_sweep: Project) -> None:
    code = (
        "import sys\nsys.argv = ['run', '--help']\nfrom mlrunner.cli.app import run_main, main\n"
        "try:\n    run_main()\nexcept SystemExit:\n    pass\n"
        "sys.argv = ['mlrunner', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('starlette', 'uvicorn', 'plotly', 'playwright', 'anyio', 'mlrunner.ui')\n"
        "print('LOADED', [m for m in heavy if m in sys.modules])\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ui_sweep.env, check=True
    )
    assert "LOADED []" in res.stdout, res.stdout


def test_a_live_run_in_progress(tmp_path: Path) -> None:
    project = live_project(tmp_path / "live proj")
    runner = subprocess.Popen(run_argv(), cwd=project.path, env=project.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    srv = None
    try:
        wait_for(lambda: (project.path / "output" / ".mlrunner" / "ledger.db").exists(), what="the ledger")
        srv = start_server(project, "output")
        live = wait_for(
            lambda: len(srv.json("/api/live")["live"]) == 2 and srv.json("/api/live"), what="2 live"
        )
        assert {a["name"] for a in live["live"]} == {"Job_one", "Job_two"} and live["runs"][0]["id"] == 1
        doc = srv.json("/api/runs/1")
        assert doc["run"]["status"] == "running"
        assert sorted(c["status"] for t in doc["tasks"] for c in t["commands"]) == [
            "pending",
            "running",
            "running",
        ]
        attempts = srv.json("/api/runs/1/attempts")
        assert [a["ended_at"] for a in attempts["attempts"]] == [None, None] and attempts["now"] > 0
        log = "/api/experiments/Job_one/log/wait"
        first = wait_for(lambda: (got := srv.get(log))[0] == 200 and got[2], what="the first line")
        assert first == b"waiting for one\n"
        (project.path / "release" / "one").write_text("")
        more = wait_for(lambda: srv.get(f"{log}?offset={len(first)}")[2] or None, what="more log")
        assert more == b"released one\n"
        wait_for(lambda: next(t for t in srv.json("/api/runs/1")["tasks"] if t["name"] == "Job_one")["status"]
                 == "finished", what="Job_one finished")  # fmt: skip
        for name in ("two", "three"):
            (project.path / "release" / name).write_text("")
        assert runner.wait(timeout=60) == 1
        wait_for(lambda: srv.json("/api/runs/1")["run"]["status"] == "failed", what="the run's end")
        three = next(t for t in srv.json("/api/runs/1")["tasks"] if t["name"] == "Job_three")
        assert three["commands"][0]["exit_code"] == 3 and "three gives up" in three["commands"][0]["log_tail"]
        assert srv.json("/api/live")["live"] == []
    finally:
        for name in ("one", "two", "three"):
            (project.path / "release" / name).write_text("")
        if runner.poll() is None:
            runner.kill()
        runner.communicate(timeout=30)
        if srv is not None:
            srv.stop()


def test_the_table_is_served_at_once_and_made_again_behind(tmp_path: Path) -> None:
    output = tmp_path / "out"
    for i in range(3):
        (output / f"E{i}").mkdir(parents=True)
        (output / f"E{i}" / "param").write_text(f"x: {i}\n")
        (output / f"E{i}" / "metrics.json").write_text(json.dumps({"acc": i / 10}))
    data = UiData(output, fresh_s=0.3, stale_s=30, workers=1)
    first = data.table()
    assert [r["_name"] for r in json.loads(first.body)] == ["E0", "E1", "E2"] and data.is_fresh(first)
    (output / "E3").mkdir()
    (output / "E3" / "param").write_text("x: 3\n")
    assert data.table() is first  # fresh: the same table
    time.sleep(0.4)
    assert data.table() is first and not data.is_fresh(first)  # stale: served, made again behind
    newer = wait_for(lambda: (t := data.table()) is not first and t, what="the table made again")
    assert [r["_name"] for r in json.loads(newer.body)][-1] == "E3" and newer.meta["count"] == 4
    assert data.table(max_age=0) is not newer  # the report's: always made now

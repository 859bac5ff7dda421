"""Notifications (issue 14.4): real apprise, real HTTP, against a JSON webhook served here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from helpers import ROOT, Project

from mlrunner.events import RunSummary
from mlrunner.notify import end_message
from mlrunner.spec import parse_spec
from mlrunner.status import RunStatus


class Hook:
    """A local HTTP server that records every JSON body POSTed to it (``delay``: it answers
    that many seconds late, a slow target)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.posts: list[dict[str, Any]] = []
        self.paths: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(delay)
                hook.posts.append(json.loads(body))
                hook.paths.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


SWEEP = """
template:
  train: python3 train.py {{code}} {{name}}
resource: {{cpus: 4}}
notify:
  targets: [{targets}]
  events: [{events}]
  timeout: {timeout}
---
code: [0]
name: [{names}]
---
code: [{fail}]
name: ["it's $(touch pwned) [b]x[/b]"]
"""
TRAIN = """\
import sys
print("epoch 1", flush=True)
if sys.argv[1] != "0":
    raise ValueError("bad lr for " + sys.argv[2])
"""


def sweep(project: Project, targets: list[str], events: str, *, fail: str = "1", n_ok: int = 9) -> None:
    (project.path / "train.py").write_text(TRAIN)
    project.write(
        SWEEP.format(
            targets=", ".join(f"'{t}'" for t in targets),
            events=events,
            timeout=3,
            names=", ".join(str(i) for i in range(n_ok)),
            fail=fail,
        )
    )


def test_end_and_failure_messages_reach_a_json_webhook(project: Project, hook: Hook) -> None:
    sweep(project, [hook.url], "end, failure")
    res = project.run(check=1)
    assert "WARNING: notify" not in res.stderr, res.stderr
    assert [p["title"].split(":")[1].strip() for p in hook.posts] == [
        "failure",
        "run 1 failed (9 finished, 1 failed)",
    ]
    failure, end = hook.posts
    assert hook.paths == ["/hook", "/hook"]
    assert "train failed (exit 1)" in failure["message"]
    assert "ValueError: bad lr for it's $(touch pwned) [b]x[/b]" in failure["message"]  # the log's tail
    assert end["message"].startswith("9 finished, 1 failed in ")
    assert f"output: {project.path / 'output'}" in end["message"]
    assert not (project.path / "pwned").exists()


def test_first_failure_is_sent_once(project: Project, hook: Hook) -> None:
    sweep(project, [hook.url], "first_failure", fail="1, 2, 3", n_ok=1)
    project.run(check=1)
    assert len(hook.posts) == 1 and hook.posts[0]["title"].startswith("mlrunner: first failure: train in ")


def test_unreachable_and_slow_targets_are_warnings_and_never_hold_the_run(
    project: Project, hook: Hook
) -> None:
    slow = Hook(delay=30)
    try:
        dead = f"json://127.0.0.1:{closed_port()}/gone"
        sweep(project, [dead, slow.url, hook.url], "failure, end", fail="1, 2, 3, 4", n_ok=1)
        t0 = time.monotonic()
        res = project.run(check=1, timeout=60)
        took = time.monotonic() - t0
    finally:
        slow.close()
    # 5 messages to a target that answers after 30 s: the commands ran at their own pace and
    # the end waited the 3 s of `timeout:` only
    assert took < 15, took
    assert "Traceback" not in res.stderr
    assert re.search(r"WARNING: notify: not sent to json://127\.0\.0\.1:\d+/gone: .*Connection", res.stderr)
    assert "WARNING: notify: 5 notifications in all not sent to json://127.0.0.1" in res.stderr
    assert re.search(
        r"notify: [45] notification\(s\) not sent to json://127.0.0.1:\d+/hook within 3 s", res.stderr
    )
    assert len(hook.posts) == 5  # the good target got everything meanwhile
    assert "Commands: 1 finished, 4 failed" in res.stdout


@pytest.mark.parametrize(
    ("notify", "where", "message"),
    [
        (
            "notify: {targets: 'ntfy://t', events: [end, falure]}",
            "params.yaml:6: key 'notify.events[1]'",
            "unknown notify event 'falure'\n  hint: did you mean 'failure'?",
        ),  # fmt: skip
        (
            "notify:\n  targets:\n    - ntfy://t\n    - 'jsn://127.0.0.1/x'",
            "params.yaml:9: key 'notify.targets[1]'",
            "jsn:// is not a notification service apprise knows\n  hint: did you mean 'json://'?",
        ),  # fmt: skip
        (
            "notify: [hello world]",
            "params.yaml:6: key 'notify[0]'",
            "'hello world' is not a notification URL",
        ),
        ("notify: {target: ntfy://t}", "params.yaml:6: key 'notify.target'", "did you mean 'targets'?"),
        ("notify: {events: [end]}", "params.yaml:6: key 'notify.targets'", "nowhere to send"),
        (
            "notify: 'tgram://$(touch_pwned)'",
            "params.yaml:6: key 'notify.targets[0]'",
            "not a valid Telegram",
        ),
        ("notify: 'tgram://$(touch pwned)'", "params.yaml:6: key 'notify'", "is not a notification URL"),
        (
            "notify: 'json://${MLRUNNER_TEST_UNSET}@h/x'",
            "params.yaml:6: key 'notify.targets[0]'",
            "environment variable MLRUNNER_TEST_UNSET is not set",
        ),  # fmt: skip
        (
            "notify: {targets: ntfy://t, timeout: -1}",
            "params.yaml:6: key 'notify.timeout'",
            "'timeout' must be",
        ),
    ],
)
def test_notify_mistakes_are_params_yaml_errors(
    project: Project, notify: str, where: str, message: str
) -> None:
    project.write("\n\n\n\ntemplate: {a: 'echo {x}'}\n" + notify + "\n---\nx: [1]\n")
    res = project.run("--dry-run", check=2)
    assert res.stderr.startswith(f"error: {project.path / 'params.yaml'}"[:7]) and where in res.stderr, (
        res.stderr
    )
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not (project.path / "pwned").exists() and not (project.path / "output").exists()


def test_without_apprise_the_message_says_what_to_install(project: Project) -> None:
    project.write("template: {a: 'echo {x}'}\nnotify: ntfy://t\n---\nx: [1]\n")
    code = "import sys; sys.modules['apprise'] = None; from mlrunner.cli import run_main; run_main()"
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=project.path, env=project.env, capture_output=True, text=True
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "params.yaml:2: key 'notify': notifications need the apprise library" in res.stderr
    assert "pip install 'mlrunner[notify]'" in res.stderr


@pytest.mark.parametrize("with_notify", [False, True])
def test_apprise_is_imported_only_for_a_notify_section(
    project: Project, hook: Hook, with_notify: bool
) -> None:
    notify = f"notify: '{hook.url}'\n" if with_notify else ""
    project.write(f"template: {{a: 'echo {{x}}'}}\n{notify}---\nx: [1]\n")
    code = (
        "import sys\nfrom mlrunner.cli import run_main\ntry:\n    run_main()\nexcept SystemExit:\n    pass\n"
        "print('APPRISE', 'apprise' in sys.modules)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=project.path, env=project.env, capture_output=True, text=True
    )
    assert f"APPRISE {with_notify}" in res.stdout, res.stdout + res.stderr
    assert len(hook.posts) == int(with_notify)


def test_end_message_counts() -> None:
    s = RunSummary(
        run_id=3, n_tasks=12, n_commands=12, finished=9, failed=1, skipped=2, status=RunStatus.FAILED
    )
    m = end_message(s, "/o", 75)
    assert m.title == "mlrunner: run 3 failed (9 finished, 1 failed)"
    assert m.body.startswith("9 finished, 1 failed, 2 skipped in 1m15s.\noutput: /o\n")


def test_the_reference_params_yaml_notify_example_parses() -> None:
    text = (ROOT / "params.yaml").read_text()
    assert text == (ROOT / "mlrunner" / "data" / "params.yaml").read_text()
    block = text[text.index("# notify:\n") :].split("\n\n")[0]
    example = "\n".join(line[2:] for line in block.splitlines() if line.startswith("# "))
    spec = parse_spec("template: {a: 'echo {x}'}\n" + example + "\n---\nx: [1]\n")
    assert spec.notify is not None and spec.notify.events == ("end", "failure")
    assert len(spec.notify.targets) >= 3


def test_a_resumed_run_notifies_from_the_params_it_stored(project: Project, hook: Hook) -> None:
    sweep(project, [hook.url], "end", fail="1", n_ok=1)
    project.run(check=1)
    (project.path / "params.yaml").write_text("template: {a: 'echo changed {x}'}\n---\nx: [1]\n")
    (project.path / "train.py").write_text("print('fixed')\n")
    project.run("--resume", check=0)
    assert [p["title"] for p in hook.posts] == [
        "mlrunner: run 1 failed (1 finished, 1 failed)",
        "mlrunner: run 1 finished (1 finished, 0 failed)",
    ]


def test_the_readme_notify_example_parses() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("### Notifications", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = parse_spec("template: {a: 'echo {x}'}\n" + block + "---\nx: [1]\n")
    assert spec.notify is not None and spec.notify.timeout == 10 and spec.notify.events == ("end", "failure")
    assert spec.notify.targets[1] == "tgram://${TELEGRAM_TOKEN}/${TELEGRAM_CHAT}"

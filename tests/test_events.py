"""One frozen dataclass per event kind, and the plain renderer's 0.5.9 lines for each."""

from __future__ import annotations

import dataclasses
import io
import json
import typing

import pytest

from mlrunner import events as ev
from mlrunner.cli.render import JsonRenderer, PlainRenderer
from mlrunner.status import AttemptStatus, FailureClass, RunStatus

AT = dict(position=2, total=15, output_dir="out dir/X_1", command="train")


def summary(**kw: typing.Any) -> ev.RunSummary:
    return dataclasses.replace(ev.RunSummary(run_id=4, n_tasks=5, n_commands=10), **kw)


def ended(status: AttemptStatus, **kw: typing.Any) -> ev.Ended:
    fields: dict[str, typing.Any] = dict(exit_code=None, signal=None, failure_class=None, log="L")
    fields.update(kw)
    return ev.Ended(**AT, status=status, **fields)


FAILED = ["o/a", "o/b"]
CASES: list[tuple[ev.Event, str, str]] = [
    (ev.Orphans(()), "Orphan params: set()\n", ""),
    (ev.Orphans(("a", "b c")), "Orphan params: {'a', 'b c'}\n", ""),
    (ev.PlanReady(tasks=3, commands=6, run_id=1, resumed=False), "Tasks: 3, Commands: 6\n", ""),
    (ev.Started(**AT, resource="0,1"), "START   gpu: 0,1, train   : 2/15, out dir/X_1\n", ""),
    (
        ev.Started(**AT, resource="-", job_id="123", node="n1"),
        "START   job: 123, node: n1, gpu: -, train   : 2/15, out dir/X_1\n",
        "",
    ),
    (ev.Started(**AT, resource="cpu:3"), "START   slot: 3, train   : 2/15, out dir/X_1\n", ""),
    (ev.Skipped(**AT), "SKIP    train   : 2/15, out dir/X_1\n", ""),
    (
        ended(AttemptStatus.FAILED, exit_code=3, log="L 1"),
        "FAIL    train   : 2/15, out dir/X_1 (failed: exit 3; log: L 1)\n",
        "",
    ),
    (
        ended(AttemptStatus.FAILED, signal=9, failure_class=FailureClass.GPU_OOM),
        "FAIL    train   : 2/15, out dir/X_1 (failed: signal 9, gpu_oom; log: L)\n",
        "",
    ),
    (
        ended(AttemptStatus.INTERRUPTED, signal=15),
        "STOP    train   : 2/15, out dir/X_1 (interrupted: signal 15; log: L)\n",
        "",
    ),
    (ended(AttemptStatus.FINISHED, exit_code=0), "", ""),
    (  # issue 14.3: the last lines of the log (up to 5, indented) under the FAIL line
        ended(
            AttemptStatus.FAILED,
            exit_code=1,
            log_tail="partial li\nepoch 1\n\nTraceback (most recent call last):\n"
            '  File "train.py", line 3, in <module>\n    main()\n'
            "\x1b[31mValueError: bad lr $(rm -rf ~)\x1b[0m\n",
        ),
        "FAIL    train   : 2/15, out dir/X_1 (failed: exit 1; log: L)\n"
        "        epoch 1\n        Traceback (most recent call last):\n"
        '          File "train.py", line 3, in <module>\n            main()\n'
        "        ValueError: bad lr $(rm -rf ~)\n",
        "",
    ),
    (  # a progress bar's last state, markup and control characters as text, a huge line cut
        ended(AttemptStatus.TIMEOUT, signal=15, log_tail="10%\r50%\r\n[b]x[/b]\ta\x07\n" + "y" * 5000),
        "FAIL    train   : 2/15, out dir/X_1 (timeout: signal 15; log: L)\n"
        f"        50%\n        [b]x[/b] a\n        {'y' * 299}…\n",
        "",
    ),
    (  # a stopped command gets no tail: it did not fail
        ended(AttemptStatus.INTERRUPTED, signal=15, log_tail="epoch 3\n"),
        "STOP    train   : 2/15, out dir/X_1 (interrupted: signal 15; log: L)\n",
        "",
    ),
    (
        ev.DryLine(**AT, line="CUDA_VISIBLE_DEVICES=0 echo hi > log 2>&1"),
        "DRY     train   : 2/15, out dir/X_1\n        CUDA_VISIBLE_DEVICES=0 echo hi > log 2>&1\n",
        "",
    ),
    (ev.DryTask(1, 2, "X_1", "o/X_1", {"x": 1}, {"a": "echo 1"}, "pending"), "", ""),  # --json only
    (ev.WarningMessage("careful"), "", "WARNING: careful\n"),
    (ev.InfoMessage("Resuming run 1"), "Resuming run 1\n", ""),
    (
        ev.Stopping(2),
        "",
        "Stopping: no new commands; running ones get SIGTERM (Ctrl-C again to kill at once)\n",
    ),
    (
        ev.Summary(summary(finished=10)),
        "No task failed.\nCommands: 10 finished, 0 failed, 0 skipped, 0 interrupted, 0 not started (run 4)\n",
        "",
    ),
    (
        ev.Summary(summary(status=RunStatus.DRY_RUN, run_id=None)),
        "Dry run: 5 tasks, 10 commands; nothing was run or written.\n",
        "",
    ),
    (
        ev.Summary(
            summary(
                status=RunStatus.FAILED,
                failed=2,
                finished=3,
                skipped=1,
                not_started=4,
                failed_dirs=["o/a", "o/b"],
            )
        ),
        "Skipped commands: 1/10 (already finished; -f/--force reruns them)\n"
        "Failed tasks: 2/5\n    o/a\n    o/b\n"
        "Commands: 3 finished, 2 failed, 1 skipped, 0 interrupted, 4 not started (run 4)\n"
        "Finish what is unfinished with: run --resume -o 'out dir'\n",
        "",
    ),
    (
        ev.Summary(summary(status=RunStatus.INTERRUPTED, interrupted=2, finished=3, signal=2)),
        "Commands: 3 finished, 0 failed, 0 skipped, 2 interrupted, 0 not started (run 4)\n"
        "Finish what is unfinished with: run --resume -o 'out dir'\n",
        "",
    ),
]


@pytest.mark.parametrize(("event", "out", "err"), CASES)
def test_plain_renderer_lines(event: ev.Event, out: str, err: str) -> None:
    o, e = io.StringIO(), io.StringIO()
    PlainRenderer("out dir", o, e)(event)
    assert (o.getvalue(), e.getvalue()) == (out, err)


def test_every_event_kind_is_a_frozen_dataclass_of_the_union() -> None:
    kinds = set(typing.get_args(ev.Event))
    assert kinds == {type(c[0]) for c in CASES}
    for kind in kinds:
        assert dataclasses.is_dataclass(kind) and kind.__dataclass_params__.frozen  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.Skipped(**AT).command = "x"  # type: ignore[misc]


def test_json_renderer_prints_one_array_and_sends_every_line_to_stderr() -> None:
    o, e = io.StringIO(), io.StringIO()
    r = JsonRenderer(o, e)
    r(ev.Orphans(("q",)))
    r(ev.DryLine(**AT, line="x"))
    r(ev.DryTask(1, 1, "X_inf", "o/X_inf", {"x": float("inf"), "s": "$(a)"}, {"a": "echo inf"}, "finished"))
    assert o.getvalue() == ""
    r(ev.Summary(summary(status=RunStatus.DRY_RUN)))
    assert json.loads(o.getvalue()) == [
        {
            "name": "X_inf",
            "output_dir": "o/X_inf",
            "params": {"x": "inf", "s": "$(a)"},  # strict JSON: no Infinity
            "commands": {"a": "echo inf"},
            "status": "finished",
        }
    ]
    assert e.getvalue().startswith("Orphan params: {'q'}\nDry run: 5 tasks")


def test_summary_status_is_a_run_status_and_exit_codes() -> None:
    assert summary().status is RunStatus.FINISHED and summary().exit_code == 0
    assert summary(failed=1).exit_code == 1
    assert summary(signal=15).exit_code == 143

"""RunRequest: frozen plain data; a resume merges the stored options with the given ones."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest

from mlrunner.backends.base import Recorder
from mlrunner.run import RunRecorder, RunRequest
from mlrunner.run.request import RESUME_MAY_CHANGE, STORED

STORED_OPTIONS = {
    "params_path": "/p/params.yaml",
    "output": "out",
    "title": "t",
    "commands": ["train"],
    "resources": ["0,1"],
    "force": False,
    "debug": False,
    "sample": 2,
    "seed": 7,
    "no_subdir": False,
    "isolate": True,
    "backend": "local",
    "time": "20260101.120000",
    "slurm": {"partition": "gpu"},
    "retries": 2,
    "grace": 3.0,
    "detach": True,
}


def test_request_is_frozen_plain_data() -> None:
    req = RunRequest()
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.retries = 3  # type: ignore[misc]
    for f in dataclasses.fields(RunRequest):
        assert not callable(getattr(req, f.name)), f.name


def test_resume_takes_the_stored_options_when_none_is_given() -> None:
    req = RunRequest(output="out", resume=True).resumed(STORED_OPTIONS)
    assert (req.retries, req.grace, req.detach) == (2, 3.0, True)
    assert req.commands == ("train",) and req.resources == ("0,1",)
    assert (req.time, req.isolate, req.sample, req.seed) == ("20260101.120000", True, 2, 7)
    assert dict(req.slurm) == {"partition": "gpu"}
    assert req.resume and req.output == "out"


def test_resume_options_given_explicitly_win_even_at_their_default() -> None:
    given = RunRequest(resume=True, retries=0, grace=10.0, detach=False, given=frozenset(RESUME_MAY_CHANGE))
    req = given.resumed(STORED_OPTIONS)
    assert (req.retries, req.grace, req.detach) == (0, 10.0, False)
    # the rest is the stored run's, given or not
    assert RunRequest.explicit(title="other", resume=True).resumed(STORED_OPTIONS).title == "t"


def test_resume_of_a_run_that_stored_fewer_options() -> None:
    req = RunRequest(retries=1, resume=True).resumed({"output": "o"})
    assert (req.output, req.retries, req.commands) == ("o", 1, None)


def test_options_round_trip_through_json() -> None:
    req = RunRequest.explicit(commands=("a", "b"), retries=4, slurm={"mem": "4G"}, time="20260101.000000")
    assert req.given == {"commands", "retries", "slurm", "time"}
    stored = json.loads(json.dumps(req.options()))
    assert set(stored) == set(STORED) | set(RESUME_MAY_CHANGE)
    assert stored["commands"] == ["a", "b"]
    back = RunRequest(resume=True).resumed(stored)
    assert back.options() == req.options()


def test_run_recorder_implements_the_recorder_protocol() -> None:
    names = [
        "batch",
        "claim",
        "warn",
        "release",
        "adopt",
        "log_path",
        "command_started",
        "process_started",
        "command_ended",
        "previous_jobs",
    ]
    for name in names:
        want = inspect.signature(getattr(Recorder, name))
        got = inspect.signature(getattr(RunRecorder, name))
        assert list(got.parameters.values()) == list(want.parameters.values()), name
        assert got.return_annotation == want.return_annotation, name

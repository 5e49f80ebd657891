"""Evaluation metrics logged after evaluate exits, collected by the report step (real MLflow,
SQLite store, real child processes)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cxml.core.config import load_params
from cxml.core.errors import TrackingError
from cxml.tracking import background, runs
from cxml.tracking.background import (
    FAILED,
    LOGGED,
    PENDING,
    Handoff,
    collect_eval_metrics,
    read_handoff,
    wait_for_outcome,
    write_handoff,
)
from cxml.tracking.rest import TrainingRunNotFound

EVAL = {"accuracy": 0.93, "f1_macro": 0.925}


@pytest.fixture()
def finished_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A real MLflow SQLite store with one finished run (as `cxml train` leaves it); the test
    runs in tmp_path, where the hand-off file goes."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("cxml"))
    client.set_terminated(run.info.run_id)
    return uri, run.info.run_id


def eval_metrics_of(uri: str, run_id: str) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    metrics = MlflowClient(tracking_uri=uri).get_run(run_id).data.metrics
    return {key: value for key, value in metrics.items() if key.startswith("eval.")}


def write_project(root: Path, run_id: str, *, required: bool) -> None:
    (root / "params.yaml").write_text(f"tracking:\n  required: {str(required).lower()}\n")
    (root / "run.json").write_text(json.dumps({"run_id": run_id}))


def test_the_metrics_arrive_after_the_step_returns_and_are_collected(
    finished_run: tuple[str, str],
) -> None:
    uri, run_id = finished_run
    logger = runs.start_eval_metrics(uri, run_id, in_background=True)
    assert logger.in_background
    logger.send(EVAL)
    started = time.monotonic()
    assert logger.wait(timeout=120) is None
    assert time.monotonic() - started < 1.0  # evaluate does not wait for the store
    assert read_handoff() is not None  # pending, or already the child's outcome
    assert wait_for_outcome(run_id, 120) is None
    assert eval_metrics_of(uri, run_id) == {"eval.accuracy": 0.93, "eval.f1_macro": 0.925}
    assert not background.HANDOFF.exists()  # collected once


def test_a_missing_run_comes_back_as_not_found(finished_run: tuple[str, str]) -> None:
    uri, _ = finished_run
    logger = runs.start_eval_metrics(uri, "0" * 32, in_background=True)
    logger.send(EVAL)
    assert logger.wait(timeout=120) is None
    error = wait_for_outcome("0" * 32, 120)
    assert isinstance(error, TrainingRunNotFound)
    assert "\n" not in str(error)


def test_without_background_the_step_waits_and_leaves_no_handoff(
    finished_run: tuple[str, str],
) -> None:
    uri, run_id = finished_run
    logger = runs.start_eval_metrics(uri, run_id)
    assert not logger.in_background
    logger.send(EVAL)
    assert logger.wait(timeout=120) is None
    assert eval_metrics_of(uri, run_id)["eval.accuracy"] == 0.93
    assert not background.HANDOFF.exists()


def test_a_stale_handoff_of_another_run_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_handoff(Handoff("a" * 32, 1, FAILED, "from an old evaluation"))
    assert wait_for_outcome("b" * 32, 5) is None
    assert not background.HANDOFF.exists()


def test_a_child_gone_without_an_answer_is_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    write_handoff(Handoff("a" * 32, int(gone.stdout), PENDING))
    error = wait_for_outcome("a" * 32, 5)
    assert isinstance(error, RuntimeError)
    assert "stopped without an answer" in str(error)


def test_a_child_that_never_answers_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_handoff(Handoff("a" * 32, sleeper.pid, PENDING))
        started = time.monotonic()
        error = wait_for_outcome("a" * 32, 0.5)
        assert isinstance(error, TimeoutError)
        assert time.monotonic() - started < 5
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)


@pytest.mark.parametrize("required", [True, False])
def test_the_collecting_step_judges_a_failure_by_tracking_required(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    required: bool,
) -> None:
    monkeypatch.chdir(tmp_path)
    write_project(tmp_path, "a" * 32, required=required)
    write_handoff(Handoff("a" * 32, 1, FAILED, "database is locked"))
    params = load_params("params.yaml")
    if required:
        with pytest.raises(TrackingError, match=r"database is locked.*tracking\.required: false"):
            collect_eval_metrics(params, timeout_s=5)
    else:
        collect_eval_metrics(params, timeout_s=5)
        assert "database is locked" in capsys.readouterr().err
    assert not background.HANDOFF.exists()


def test_collected_success_and_a_corrupt_handoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_project(tmp_path, "a" * 32, required=True)
    params = load_params("params.yaml")
    write_handoff(Handoff("a" * 32, 1, LOGGED))
    collect_eval_metrics(params, timeout_s=5)
    assert "logged in the background are in the store" in capsys.readouterr().out
    background.HANDOFF.write_text("{not json")
    collect_eval_metrics(params, timeout_s=5)  # nothing to judge, and no traceback
    assert not background.HANDOFF.exists()


def test_a_logging_child_takes_one_of_the_steps_torch_threads(
    finished_run: tuple[str, str],
) -> None:
    """evaluate gives up a torch thread while the child opens the store beside the model; a
    tracking server (one REST call) takes nothing."""
    import torch

    from cxml.evaluate import leave_a_core_to_tracking

    uri, run_id = finished_run
    child = runs.start_eval_metrics(uri, run_id)
    assert child.runs_beside
    child.wait(timeout=120)
    assert not runs.start_eval_metrics("http://127.0.0.1:9", run_id).runs_beside
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        leave_a_core_to_tracking(torch)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        leave_a_core_to_tracking(torch)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)

"""Evaluation metrics reach the training run in one `log_batch`, read back by real MLflow (SQLite)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from cxml.core.processes import process_exists
from cxml.tracking import runs


@pytest.fixture()
def finished_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A real MLflow SQLite store with one finished run (as `cxml train` leaves it)."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("cxml"))
    client.log_metric(run.info.run_id, "val_accuracy", 0.5, step=1)
    client.set_terminated(run.info.run_id)
    return uri, run.info.run_id


EVAL = {"accuracy": 0.93, "f1_macro": 0.925, "latency_p95_ms": 1.5, "per_class_accuracy.3": 1.0}


def read_back(uri: str, run_id: str) -> tuple[dict[str, float], dict[str, list[float]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    latest = client.get_run(run_id).data.metrics
    history = {k: [m.value for m in client.get_metric_history(run_id, k)] for k in latest}
    return latest, history


def count_log_batch_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Metrics per `MlflowClient.log_batch` call, the real call still made."""
    from mlflow.tracking import MlflowClient

    calls: list[int] = []
    original = MlflowClient.log_batch

    def counting_log_batch(self: MlflowClient, *args: object, **kwargs: object) -> None:
        calls.append(len(kwargs.get("metrics") or []))  # type: ignore[arg-type]
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(MlflowClient, "log_batch", counting_log_batch)
    return calls


def test_eval_metrics_go_through_mlflow_in_one_batch_and_read_back(
    finished_run: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, run_id = finished_run
    calls = count_log_batch_calls(monkeypatch)
    runs.log_eval_metrics(uri, run_id, EVAL)
    runs.log_eval_metrics(uri, run_id, {**EVAL, "accuracy": 0.95})  # a rerun: the later value
    assert calls == [len(EVAL), len(EVAL)]
    latest, history = read_back(uri, run_id)
    assert latest["eval.accuracy"] == 0.95
    assert history["eval.accuracy"] == [0.93, 0.95]
    assert latest["eval.f1_macro"] == 0.925
    assert latest["eval.per_class_accuracy.3"] == 1.0
    assert latest["val_accuracy"] == 0.5  # the training run's own metrics are untouched


def test_nan_and_infinity_are_stored_as_mlflow_stores_them(finished_run: tuple[str, str]) -> None:
    uri, run_id = finished_run
    runs.log_eval_metrics(uri, run_id, {"loss": math.nan, "ratio": math.inf})
    latest, _ = read_back(uri, run_id)
    assert math.isnan(latest["eval.loss"])
    assert latest["eval.ratio"] == pytest.approx(1.7976931348623157e308)


def test_a_missing_run_is_left_to_mlflow_to_name(finished_run: tuple[str, str]) -> None:
    from mlflow.exceptions import MlflowException

    uri, _ = finished_run
    with pytest.raises(MlflowException):
        runs.log_eval_metrics(uri, "0" * 32, EVAL)


def test_early_eval_metrics_log_in_one_batch_once_sent(finished_run: tuple[str, str]) -> None:
    uri, run_id = finished_run
    early = runs.EarlyEvalMetrics(uri, run_id)
    time.sleep(0.5)  # the child is importing mlflow: the metrics come later
    early.send({**EVAL, "loss": math.nan})
    assert early.wait(timeout=120) is None
    latest, history = read_back(uri, run_id)
    assert latest["eval.accuracy"] == 0.93
    assert math.isnan(latest["eval.loss"])
    assert [len(history[f"eval.{name}"]) for name in EVAL] == [1] * len(EVAL)


def test_early_eval_metrics_name_a_missing_run_in_one_line(finished_run: tuple[str, str]) -> None:
    uri, _ = finished_run
    early = runs.EarlyEvalMetrics(uri, "0" * 32)
    early.send(EVAL)
    error = early.wait(timeout=120)
    from cxml.tracking.rest import TrainingRunNotFound

    assert isinstance(error, TrainingRunNotFound)  # evaluate warns on it, not exit 3
    assert "not found" in str(error) and "\n" not in str(error)


def test_early_eval_metrics_not_sent_log_nothing(finished_run: tuple[str, str]) -> None:
    """A step that stops before its metrics (bad model file, ...): the child opens the store,
    finds no metrics and exits; the run is as training left it."""
    uri, run_id = finished_run
    early = runs.EarlyEvalMetrics(uri, run_id)
    assert early.wait(timeout=120) is None
    latest, _ = read_back(uri, run_id)
    assert not [key for key in latest if key.startswith("eval.")]


def test_a_step_that_exits_before_send_leaves_the_child_to_finish_alone(
    finished_run: tuple[str, str],
) -> None:
    """The step's process ends (its error printed); the child sees the end of its input and
    exits by itself without logging: no store is left to a thread killed at exit."""
    import subprocess
    import sys

    uri, run_id = finished_run
    script = (
        "import sys\n"
        "from cxml.tracking.runs import EarlyEvalMetrics\n"
        f"early = EarlyEvalMetrics({uri!r}, {run_id!r})\n"
        "print(early._child.pid, flush=True)\n"
        "sys.exit(2)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    child = int(result.stdout)
    deadline = time.monotonic() + 120
    while process_exists(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not process_exists(child)
    latest, _ = read_back(uri, run_id)
    assert not [key for key in latest if key.startswith("eval.")]


def test_a_child_that_cannot_start_is_reported_by_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    def no_processes(*args: object, **kwargs: object) -> None:
        raise OSError("Resource temporarily unavailable")

    monkeypatch.setattr(subprocess, "Popen", no_processes)
    early = runs.EarlyEvalMetrics("sqlite:///unused.db", "0" * 32)
    early.send(EVAL)
    assert str(early.wait(timeout=5)) == "Resource temporarily unavailable"

"""MLflow for real: the SQLite default and a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import run_cxml, write_params
from tests.support.mlflow_server import free_port, mlflow_server  # noqa: F401


def check_tracked_run(tracking_uri: str, directory: Path, epochs: int) -> None:
    """The run, its params and per-epoch metrics, the model version and `candidate` alias exist,
    and the registered model predicts what the saved model file predicts."""
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.tracking import MlflowClient

    run_info = json.loads((directory / "run.json").read_text())
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_info["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == str(epochs)
    assert run.data.params["model.architecture"] == "small_cnn"
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == list(range(1, epochs + 1))
    assert "eval.accuracy" in run.data.metrics  # evaluate adds its metrics to the same run

    version = client.get_model_version_by_alias("cxml-model", "candidate")
    assert str(version.version) == run_info["model_version"]
    assert version.run_id == run.info.run_id
    import mlflow.pyfunc  # the served model installs the versions that trained it

    mlflow.set_tracking_uri(tracking_uri)
    requirements = Path(mlflow.pyfunc.get_model_dependencies("models:/cxml-model@candidate"))
    assert f"torch=={torch.__version__.split('+')[0]}" in requirements.read_text().splitlines()

    mlflow.set_tracking_uri(tracking_uri)
    registered = mlflow.pytorch.load_model("models:/cxml-model@candidate")
    from cxml.core.config import DataConfig
    from cxml.ml.data import load_dataset
    from cxml.ml.models import load_model_file, preprocess

    model, metadata = load_model_file(directory / "model/model.pt")
    images = load_dataset(DataConfig()).test.images[:32]
    with torch.inference_mode():
        expected = model(preprocess(images, metadata))
        got = registered(
            images.float()
        )  # the registered model takes raw 0..255 pixels, any batch size
    assert torch.allclose(expected, got, atol=1e-5)


def test_sqlite_tracking_by_default(workdir: Path) -> None:
    write_params(workdir, "train:\n  epochs: 2\n  batch_size: 128\n")
    result = run_cxml("run", "--no-fail", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert (workdir / "mlflow.db").exists()
    check_tracked_run(f"sqlite:///{workdir / 'mlflow.db'}", workdir, epochs=2)


def test_tracking_server_down_fails_fast_with_one_line(workdir: Path) -> None:
    """A configured server is a promise: unreachable, training stops in seconds (exit 3), before
    any work, instead of stalling on MLflow's retries and finishing untracked."""
    write_params(workdir, "train:\n  epochs: 1\n")
    port = free_port()  # nothing listens there
    started = time.monotonic()
    result = run_cxml(
        "train",
        cwd=workdir,
        env={"MLFLOW_TRACKING_URI": f"http://user:s3cret@127.0.0.1:{port}"},
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 3, result.stderr
    assert elapsed < 10, f"took {elapsed:.1f} s"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: MLflow tracking server http://127.0.0.1:{port}")
    assert "connection refused" in lines[0] and "tracking.required: false" in lines[0]
    assert "s3cret" not in result.stdout + result.stderr
    assert not (workdir / "model/model.pt").exists() and not (workdir / "run.json").exists()


def test_optional_tracking_server_down_warns_and_training_goes_on(workdir: Path) -> None:
    write_params(workdir, "train:\n  epochs: 1\ntracking:\n  required: false\n")
    port = free_port()
    result = run_cxml(
        "train",
        cwd=workdir,
        env={"MLFLOW_TRACKING_URI": f"http://user:s3cret@127.0.0.1:{port}"},
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "is not reachable (connection refused)" in warnings[0]
    assert "tracking.required is false" in warnings[0]
    assert "s3cret" not in result.stdout + result.stderr
    assert json.loads((workdir / "run.json").read_text())["run_id"] is None
    assert (workdir / "model/model.pt").exists()


def test_the_probe_says_why_a_server_is_unreachable() -> None:
    from cxml.tracking.client import unreachable_reason

    port = free_port()
    assert unreachable_reason(f"http://127.0.0.1:{port}") == "connection refused"
    assert unreachable_reason(f"http://127.0.0.1:{port}/prefix/") == "connection refused"
    assert unreachable_reason("http://127.0.0.1:notaport") == "its port is not a number"
    assert unreachable_reason("sqlite:///tmp/mlflow.db") is None  # not a server: nothing to probe
    with socket.socket() as listener:  # a port that accepts but never answers: a bounded wait
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        started = time.monotonic()
        reason = unreachable_reason(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=1.0)
        assert reason is not None and "no answer" in reason
        assert time.monotonic() - started < 8


def test_the_probe_finds_a_real_server(mlflow_server: str) -> None:  # noqa: F811
    from cxml.tracking.client import unreachable_reason

    assert unreachable_reason(mlflow_server) is None
    assert unreachable_reason(mlflow_server.replace("http://", "http://user:pw@")) is None


@pytest.mark.slow
def test_real_mlflow_server(workdir: Path, mlflow_server: str) -> None:  # noqa: F811
    write_params(workdir, "train:\n  epochs: 2\n  batch_size: 128\n")
    result = run_cxml("run", "--no-fail", cwd=workdir, env={"MLFLOW_TRACKING_URI": mlflow_server})
    assert result.returncode == 0, result.stderr
    assert not (workdir / "mlflow.db").exists()
    assert json.loads((workdir / "run.json").read_text())["tracking_uri"] == mlflow_server
    check_tracked_run(mlflow_server, workdir, epochs=2)


def test_champion_is_the_baseline(workdir: Path) -> None:
    """With no git baseline, `auto` falls back to the registry's champion."""
    write_params(workdir, "train:\n  epochs: 2\n  batch_size: 128\n")
    assert run_cxml("run", "--no-fail", cwd=workdir).returncode == 0
    from cxml.tracking.registry import set_model_alias

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    set_model_alias(uri, "cxml-model", "1", "champion")
    result = run_cxml(
        "evaluate",
        "--no-fail",
        "--gate",
        "accuracy >= baseline",
        cwd=workdir,
        env={"MLFLOW_TRACKING_URI": uri},
    )
    assert result.returncode == 0, result.stderr
    gate = json.loads((workdir / "gate.json").read_text())
    assert gate["baseline"]["source"] == "champion"
    eval_metrics = json.loads((workdir / "metrics/eval.json").read_text())
    assert gate["baseline"]["metrics"]["accuracy"] == pytest.approx(eval_metrics["accuracy"])
    assert gate["rules"][0]["result"] == "pass"

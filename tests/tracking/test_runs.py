"""MLflow for real: the SQLite default and a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import run_cxml, write_params


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def test_tracking_server_down_warns_and_training_goes_on(workdir: Path) -> None:
    write_params(workdir, "train:\n  epochs: 1\n")
    port = free_port()  # nothing listens there
    result = run_cxml(
        "train",
        cwd=workdir,
        env={
            "MLFLOW_TRACKING_URI": f"http://user:s3cret@127.0.0.1:{port}",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
        },
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "warning: MLflow: starting the run failed" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    assert json.loads((workdir / "run.json").read_text())["run_id"] is None
    assert (workdir / "model/model.pt").exists()


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
            "--artifacts-destination",
            str(store / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None, "mlflow server exited"
            assert time.monotonic() < deadline, "mlflow server did not answer /health"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.mark.slow
def test_real_mlflow_server(workdir: Path, mlflow_server: str) -> None:
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

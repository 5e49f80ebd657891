"""Evaluation metrics over MLflow's REST API: a real `mlflow server` reads them back, and a small
real HTTP server checks auth, retries and the one-line errors."""

from __future__ import annotations

import base64
import json
import math
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cxml.core.errors import ConfigError, TrackingError
from cxml.tracking import rest, runs
from tests.support.mlflow_server import running_mlflow_server

EVAL = {"accuracy": 0.93, "f1_macro": 0.925, "latency_p95_ms": 1.5, "per_class_accuracy.3": 1.0}
TOKEN = "s3cr3t-token-value"
AUTH_VARIABLES = (
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_TRACKING_AWS_SIGV4",
)


@pytest.fixture(autouse=True)
def no_mlflow_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in AUTH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.mlflow/credentials
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


# --- a real mlflow server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow") / "server") as url:
        yield url


def finished_run(url: str) -> str:
    """A run on the server as `cxml train` leaves it: a training metric, terminated."""
    import uuid

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    run = client.create_run(client.create_experiment(f"cxml-{uuid.uuid4().hex[:8]}"))
    client.log_metric(run.info.run_id, "val_accuracy", 0.5, step=1)
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def read_back(url: str, run_id: str) -> tuple[dict[str, float], dict[str, list[float]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    latest = client.get_run(run_id).data.metrics
    history = {k: [m.value for m in client.get_metric_history(run_id, k)] for k in latest}
    return latest, history


@pytest.mark.slow
def test_metrics_reach_a_real_server_in_one_call_and_read_back(server_url: str) -> None:
    run_id = finished_run(server_url)
    logger = runs.start_eval_metrics(server_url, run_id)
    assert isinstance(logger, rest.RestEvalMetrics)  # no child process, no mlflow import
    logger.send(EVAL)
    assert logger.wait(timeout=60) is None
    rest.log_metrics(rest.tracking_server(server_url), run_id, {"eval.accuracy": 0.95})
    latest, history = read_back(server_url, run_id)
    assert latest["eval.accuracy"] == 0.95
    assert history["eval.accuracy"] == [0.93, 0.95]
    assert latest["eval.f1_macro"] == 0.925
    assert latest["eval.per_class_accuracy.3"] == 1.0
    assert latest["val_accuracy"] == 0.5


@pytest.mark.slow
def test_nan_and_infinity_are_stored_as_mlflow_stores_them(server_url: str) -> None:
    run_id = finished_run(server_url)
    logger = rest.RestEvalMetrics(server_url + "/", run_id)
    logger.send({"loss": math.nan, "ratio": math.inf, "drop": -math.inf})
    assert logger.wait(timeout=60) is None
    latest, _ = read_back(server_url, run_id)
    assert math.isnan(latest["eval.loss"])
    assert latest["eval.ratio"] == pytest.approx(1.7976931348623157e308)
    assert latest["eval.drop"] == pytest.approx(-1.7976931348623157e308)


@pytest.mark.slow
def test_a_wrong_run_id_is_one_line_naming_status_and_error_code(server_url: str) -> None:
    logger = rest.RestEvalMetrics(server_url, "0" * 32)
    logger.send(EVAL)
    error = logger.wait(timeout=60)
    assert isinstance(error, rest.TrainingRunNotFound)  # evaluate warns on it, not exit 3
    message = str(error)
    assert "HTTP 404 RESOURCE_DOES_NOT_EXIST" in message and "not found" in message
    assert "\n" not in message and "run.json" in message


@pytest.mark.slow
def test_many_metrics_past_mlflows_limit_all_arrive(server_url: str) -> None:
    run_id = finished_run(server_url)
    metrics = {f"per_class_accuracy.{i}": i / 1010 for i in range(1010)}
    rest.log_metrics(rest.tracking_server(server_url), run_id, metrics)
    latest, _ = read_back(server_url, run_id)
    assert sum(key.startswith("per_class_accuracy.") for key in latest) == 1010


# --- a small real HTTP server that checks auth and fails on purpose ------------------------------


class Recorder:
    """What the fake tracking server received, and what it answers next."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.answers: list[tuple[int, dict[str, Any], dict[str, str]]] = []
        self.required_auth: str | None = None


@pytest.fixture
def fake_server() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            recorder.requests.append((self.path, dict(self.headers.items()), body))
            headers: dict[str, str] = {}
            if recorder.required_auth and self.headers.get("Authorization") != (
                recorder.required_auth
            ):
                status, answer = 401, {"error_code": "UNAUTHENTICATED"}
            elif recorder.answers:
                status, answer, headers = recorder.answers.pop(0)
            else:
                status, answer = 200, {}
            data = json.dumps(answer).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def no_sleep(delays: list[float]) -> Callable[[float], None]:
    return delays.append


def test_one_post_to_log_batch_with_mlflows_json(fake_server: tuple[str, Recorder]) -> None:
    url, recorder = fake_server
    rest.log_metrics(
        rest.tracking_server(url + "/prefix/"), "abc", {"eval.a": 1.0, "eval.n": math.nan}
    )
    [(path, headers, body)] = recorder.requests
    assert path == "/prefix/api/2.0/mlflow/runs/log-batch"
    assert "Authorization" not in headers
    assert body["run_id"] == "abc"
    assert [(m["key"], m["value"], m["step"]) for m in body["metrics"]] == [
        ("eval.a", 1.0, 0),
        ("eval.n", "NaN", 0),
    ]
    assert isinstance(body["metrics"][0]["timestamp"], int)


def test_a_token_is_sent_as_bearer_and_never_printed(
    fake_server: tuple[str, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, recorder = fake_server
    recorder.required_auth = f"Bearer {TOKEN}"
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    logger = rest.RestEvalMetrics(url, "abc")
    logger.send(EVAL)
    assert logger.wait(timeout=5) is None
    assert recorder.requests[0][1]["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in repr(rest.tracking_server(url))


def test_a_refused_token_is_one_line_without_the_token(
    fake_server: tuple[str, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, recorder = fake_server
    recorder.required_auth = "Bearer the-right-one"
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    logger = rest.RestEvalMetrics(url, "abc")
    logger.send(EVAL)
    message = str(logger.wait(timeout=5))
    assert "HTTP 401 UNAUTHENTICATED" in message and "MLFLOW_TRACKING_TOKEN" in message
    assert TOKEN not in message and "\n" not in message
    assert len(recorder.requests) == 1  # a 401 is an answer, not tried again


def test_basic_auth_from_the_environment_wins_over_a_token(
    fake_server: tuple[str, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, recorder = fake_server
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ci")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pa:ss")
    recorder.required_auth = "Basic " + base64.b64encode(b"ci:pa:ss").decode()
    rest.log_metrics(rest.tracking_server(url), "abc", EVAL)
    assert len(recorder.requests) == 1


def test_basic_auth_from_mlflows_credentials_file(
    fake_server: tuple[str, Recorder], tmp_path: Path
) -> None:
    url, recorder = fake_server
    credentials = tmp_path / "home" / ".mlflow" / "credentials"
    credentials.parent.mkdir(parents=True)
    credentials.write_text(
        "[mlflow]\nmlflow_tracking_username = ci\nmlflow_tracking_password = from-file\n"
    )
    recorder.required_auth = "Basic " + base64.b64encode(b"ci:from-file").decode()
    rest.log_metrics(rest.tracking_server(url), "abc", EVAL)
    assert len(recorder.requests) == 1


def test_an_auth_plugin_keeps_the_mlflow_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "my_plugin")
    logger = runs.start_eval_metrics("https://mlflow.example", "0" * 32)
    assert isinstance(logger, runs.EarlyEvalMetrics)
    logger.wait(timeout=1)  # nothing sent; the child (importing mlflow) is stopped


def test_uri_credentials_travel_as_basic_auth_and_never_in_messages(
    fake_server: tuple[str, Recorder],
) -> None:
    url, recorder = fake_server
    recorder.required_auth = "Basic " + base64.b64encode(b"user:p@ss").decode()
    with_credentials = url.replace("http://", "http://user:p%40ss@")
    rest.log_metrics(rest.tracking_server(with_credentials), "abc", EVAL)
    recorder.answers.append((404, {"error_code": "RESOURCE_DOES_NOT_EXIST"}, {}))
    with pytest.raises(TrackingError) as raised:
        rest.log_metrics(rest.tracking_server(with_credentials), "abc", EVAL)
    assert "p%40ss" not in str(raised.value) and "p@ss" not in str(raised.value)


def test_5xx_and_429_are_tried_again_like_mlflows_client(
    fake_server: tuple[str, Recorder],
) -> None:
    url, recorder = fake_server
    recorder.answers += [(503, {}, {}), (429, {}, {"Retry-After": "2"}), (200, {}, {})]
    delays: list[float] = []
    rest.log_metrics(rest.tracking_server(url), "abc", EVAL, sleep=no_sleep(delays))
    assert len(recorder.requests) == 3
    assert delays == [0.5, 2.0]


def test_a_server_that_keeps_failing_is_one_line_after_bounded_tries(
    fake_server: tuple[str, Recorder],
) -> None:
    url, recorder = fake_server
    recorder.answers += [(500, {"error_code": "INTERNAL_ERROR", "message": "db\nlocked"}, {})] * 9
    delays: list[float] = []
    with pytest.raises(TrackingError) as raised:
        rest.log_metrics(rest.tracking_server(url), "abc", EVAL, sleep=no_sleep(delays))
    assert len(recorder.requests) == rest.ATTEMPTS
    assert delays == [0.5, 1.0, 2.0]
    assert "HTTP 500 INTERNAL_ERROR: db locked" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_no_server_is_one_line_naming_the_redacted_url() -> None:
    from tests.support.mlflow_server import free_port

    delays: list[float] = []
    server = rest.tracking_server(f"http://u:{TOKEN}@127.0.0.1:{free_port()}")
    with pytest.raises(TrackingError) as raised:
        rest.log_metrics(server, "abc", EVAL, sleep=no_sleep(delays))
    assert "connection refused" in str(raised.value)
    assert TOKEN not in str(raised.value) and "127.0.0.1" in str(raised.value)


def test_insecure_tls_and_a_ca_bundle_together_are_refused_as_mlflow_does(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(tmp_path / "ca.pem"))
    with pytest.raises(ConfigError, match="unset one of them"):
        rest.tracking_server("https://mlflow.example")
    logger = rest.RestEvalMetrics("https://mlflow.example", "abc")
    logger.send(EVAL)  # nothing sent; the setting is what `wait` reports
    assert isinstance(logger.wait(timeout=5), ConfigError)


def test_a_missing_ca_bundle_is_a_clear_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_SERVER_CERT_PATH"):
        rest.log_metrics(rest.tracking_server("https://127.0.0.1:1"), "abc", EVAL)


def test_sqlite_and_file_stores_keep_the_child_process(tmp_path: Path) -> None:
    logger = runs.start_eval_metrics(f"sqlite:///{tmp_path / 'mlflow.db'}", "0" * 32)
    assert isinstance(logger, runs.EarlyEvalMetrics)
    logger.wait(timeout=120)  # collected, not judged: that path has its own tests


def test_server_uris_are_told_apart() -> None:
    assert rest.is_server_uri("https://mlflow.example") and rest.is_server_uri("HTTP://x")
    assert not rest.is_server_uri("sqlite:///mlflow.db")
    assert not rest.is_server_uri("databricks")
    assert not rest.is_server_uri("file:///tmp/mlruns")


def test_metric_values_follow_proto3_json() -> None:
    assert [rest.metric_value(v) for v in (1.5, math.nan, math.inf, -math.inf)] == [
        1.5,
        "NaN",
        "Infinity",
        "-Infinity",
    ]

"""A real `cxml serve` under load and abuse: health answers while workers are busy, overload is a 503
with Retry-After, a client that hangs up mid-body is a counted 499 and not a traceback."""

from __future__ import annotations

import io
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.support.deploy import make_model_file, png_bytes
from tests.support.serving import ServeProcess, running_serve

pytestmark = pytest.mark.slow

MAX_ACTIVE = 1
MAX_QUEUE = 2
BATCH = 32


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One serving process (one worker, so one event loop) with a small work queue."""
    workdir = tmp_path_factory.mktemp("serve")
    model = make_model_file(workdir / "model.pt", seed=5)
    argv = [
        "--model", str(model), "--device", "cpu", "--workers", "1", "--threads", "1",
        "--max-active", str(MAX_ACTIVE), "--max-queue", str(MAX_QUEUE),
        "--max-batch", str(BATCH), "--max-request-bytes", str(16 * 1024 * 1024),
    ]  # fmt: skip
    with running_serve(argv, workdir / "serve.log", timeout_s=90) as server:
        yield server


def predict_counts(server: ServeProcess) -> dict[str, int]:
    """/predict answers so far by status code, as /metrics reports them."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    pattern = r'cxml_requests_total\{endpoint="/predict",code="([^"]+)"\} (\d+)'
    return {code: int(count) for code, count in re.findall(pattern, text)}


def large_png() -> bytes:
    """A 2048x2048 RGB PNG of 18 KB that takes tens of milliseconds to decode and shrink."""
    from PIL import Image

    gradient = Image.linear_gradient("L").resize((2048, 2048))
    image = Image.merge("RGB", [gradient, gradient.transpose(Image.Transpose.ROTATE_90), gradient])
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def multipart(*images: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]


@dataclass
class Hammer:
    """A client that POSTs a large batch to /predict again and again until told to stop."""

    url: str
    files: list[tuple[str, tuple[str, bytes, str]]]
    statuses: list[int] = field(default_factory=list)
    retry_after: list[str | None] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                try:
                    response = client.post(f"{self.url}/predict", files=self.files)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                self.statuses.append(response.status_code)
                if response.status_code == 503:
                    self.retry_after.append(response.headers.get("retry-after"))
                    time.sleep(0.1)  # a polite client waits a little before it tries again


@pytest.mark.parametrize("content_type", ["image/png", "multipart/form-data; boundary=b"])
def test_a_client_that_hangs_up_mid_body_is_a_499_not_a_traceback(
    server: ServeProcess, content_type: str
) -> None:
    before = predict_counts(server)
    log_before = server.log_text()
    head = (
        "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: 100000\r\n\r\n"
    )
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(head.encode() + b"x" * 1000)
        time.sleep(0.3)  # the server has started reading the body
    deadline = time.monotonic() + 10
    while predict_counts(server).get("499", 0) == before.get("499", 0):
        assert time.monotonic() < deadline, f"no 499 counted: {predict_counts(server)}"
        time.sleep(0.1)
    after = predict_counts(server)
    assert after.get("500", 0) == before.get("500", 0)
    new_log = server.log_text()[len(log_before) :]
    assert "Traceback" not in new_log and len(new_log.splitlines()) <= 1, new_log
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


def test_a_client_that_gives_up_while_queued_costs_no_work(server: ServeProcess) -> None:
    before = predict_counts(server)
    files = multipart(*[large_png()] * BATCH)
    busy = threading.Thread(
        target=lambda: httpx.post(f"{server.url}/predict", files=files, timeout=60)
    )
    busy.start()  # holds the only work slot for a second or more
    time.sleep(0.5)
    image = png_bytes()
    head = (
        "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(image)}\r\n\r\n"
    )
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(head.encode() + image)  # the whole request, then hang up unanswered
    busy.join(timeout=60)
    deadline = time.monotonic() + 10
    while predict_counts(server).get("499", 0) == before.get("499", 0):
        assert time.monotonic() < deadline, f"no 499 counted: {predict_counts(server)}"
        time.sleep(0.1)
    after = predict_counts(server)
    assert after.get("200", 0) - before.get("200", 0) == 1  # only the busy request was worked on


def test_health_answers_under_load_and_overload_is_a_503_with_retry_after(
    server: ServeProcess,
) -> None:
    before = predict_counts(server)
    files = multipart(*[large_png()] * BATCH)
    hammers = [Hammer(server.url, files) for _ in range(6)]
    threads = [threading.Thread(target=hammer.run, daemon=True) for hammer in hammers]
    for thread in threads:
        thread.start()
    health_seconds = []
    try:
        load_until = time.monotonic() + 8
        while time.monotonic() < load_until:
            started = time.monotonic()
            health = httpx.get(f"{server.url}/healthz", timeout=10)
            health_seconds.append(time.monotonic() - started)
            assert health.status_code == 200, health.text
            time.sleep(0.2)
    finally:
        for hammer in hammers:
            hammer.stop.set()
        for thread in threads:
            thread.join(timeout=120)
    statuses = [status for hammer in hammers for status in hammer.statuses]
    retry_after = [value for hammer in hammers for value in hammer.retry_after]
    assert not [failure for hammer in hammers for failure in hammer.failures]
    assert max(health_seconds) < 1.0, health_seconds
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 1 and statuses.count(503) >= 1, statuses
    assert all(value is not None and value.isdigit() and int(value) >= 1 for value in retry_after)

    # after the load every request is answered again
    with httpx.Client(timeout=60) as client:
        for _ in range(3):
            response = client.post(f"{server.url}/predict", files=multipart(png_bytes()))
            assert response.status_code == 200, response.text
    after = predict_counts(server)
    assert after.get("503", 0) - before.get("503", 0) == statuses.count(503)
    assert after.get("200", 0) - before.get("200", 0) == statuses.count(200) + 3
    assert "Traceback" not in server.log_text()

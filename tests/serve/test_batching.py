"""Dynamic batching and the worker split, on real `cxml serve` processes: concurrent requests share a
forward pass yet each gets its own answer (the unbatched one), a bad image or a slow client spoils
nobody else's request, light load waits at most the delay, and two workers share the load."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.deploy import PYTHON, free_port, make_model_file, png_bytes_of

MAX_DELAY_MS = 100
CONCURRENT = 8


@dataclass
class Server:
    url: str
    log: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(workdir: Path, model: Path, *extra: str) -> Server:
    port = free_port()
    log_path = workdir / f"serve-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                PYTHON, "-m", "cxml.serve", "--model", str(model), "--device", "cpu",
                "--port", str(port), "--threads", "1", *extra,
            ],
            stdout=log,
            stderr=log,
        )  # fmt: skip
    server = Server(f"http://127.0.0.1:{port}", log_path, process)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(server.log_text())
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop_server(server)
    raise AssertionError(f"no healthy answer after 90 s:\n{server.log_text()}")


def stop_server(server: Server) -> None:
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_file(tmp_path_factory.mktemp("model") / "model.pt", seed=11)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model: Path) -> Iterator[Server]:
    """One worker that holds a request up to 100 ms for company, with room for every client."""
    server = start_server(
        tmp_path_factory.mktemp("serve"), model,
        "--workers", "1", "--max-delay-ms", str(MAX_DELAY_MS), "--max-active", "4",
        "--max-queue", "32",
    )  # fmt: skip
    try:
        yield server
    finally:
        stop_server(server)


def distinct_images(count: int) -> list[bytes]:
    import numpy as np

    rng = np.random.default_rng(3)
    return [png_bytes_of(rng.integers(0, 256, size=(8, 8))) for _ in range(count)]


def unbatched_probabilities(model: Path, images: list[bytes]) -> list[list[float]]:
    """Each image alone through the model, in this process: what batching must not change."""
    from cxml.serve.service import PredictionService
    from cxml.serve.step import parse_args, settings_from_args

    settings = settings_from_args(parse_args(["--model", str(model), "--device", "cpu"]))
    service = PredictionService(settings)
    return [service.classify(service.decode([image]))[0] for image in images]


def post_together(url: str, bodies: list[bytes]) -> list[httpx.Response]:
    """POST every body to /predict at the same moment, each from its own thread and connection."""
    barrier = threading.Barrier(len(bodies))
    responses: list[httpx.Response | None] = [None] * len(bodies)

    def send(index: int) -> None:
        with httpx.Client(timeout=30) as client:
            barrier.wait(timeout=30)
            responses[index] = client.post(
                f"{url}/predict", content=bodies[index], headers={"content-type": "image/png"}
            )

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(response is not None for response in responses)
    return [response for response in responses if response is not None]


def batch_histogram(url: str) -> dict[str, int]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    assert "# TYPE cxml_batch_images histogram" in text
    return {
        bound: int(count)
        for bound, count in re.findall(r'cxml_batch_images_bucket\{le="([^"]+)"\} (\d+)', text)
    }


@pytest.mark.slow
def test_concurrent_requests_share_a_batch_and_each_gets_its_unbatched_answer(
    server: Server, model: Path
) -> None:
    images = distinct_images(CONCURRENT)
    expected = unbatched_probabilities(model, images)
    before = batch_histogram(server.url)
    responses = post_together(server.url, images)
    for response, probabilities in zip(responses, expected, strict=True):
        assert response.status_code == 200, response.text
        (prediction,) = response.json()["predictions"]
        assert prediction["probabilities"] == pytest.approx(probabilities, abs=1e-5)
    after = batch_histogram(server.url)
    forward_passes = after["+Inf"] - before["+Inf"]
    single_passes = after["1"] - before["1"]
    assert forward_passes < CONCURRENT, "no two requests shared a forward pass"
    assert forward_passes - single_passes >= 1


@pytest.mark.slow
def test_a_bad_image_fails_only_its_own_request(server: Server, model: Path) -> None:
    images = distinct_images(CONCURRENT)
    expected = unbatched_probabilities(model, images)
    bad = 3
    bodies = [b"\x89PNG\r\n\x1a\n but not really" if i == bad else image for i, image in
              enumerate(images)]  # fmt: skip
    responses = post_together(server.url, bodies)
    assert 400 <= responses[bad].status_code < 500 and "error" in responses[bad].json()
    for index, response in enumerate(responses):
        if index != bad:
            assert response.status_code == 200, response.text
            probabilities = response.json()["predictions"][0]["probabilities"]
            assert probabilities == pytest.approx(expected[index], abs=1e-5)


@pytest.mark.slow
def test_a_slow_client_does_not_hold_a_batch(server: Server) -> None:
    (slow_image, quick_image) = distinct_images(2)
    head = (
        "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(slow_image)}\r\nConnection: close\r\n\r\n"
    )
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as slow:
        slow.sendall(head.encode() + slow_image[:10])  # and then nothing for a while
        time.sleep(0.3)
        started = time.monotonic()
        quick = httpx.post(
            f"{server.url}/predict", content=quick_image, headers={"content-type": "image/png"},
            timeout=30,
        )  # fmt: skip
        assert quick.status_code == 200 and time.monotonic() - started < 2.0
        for offset in range(10, len(slow_image), 16):  # the rest, trickled
            slow.sendall(slow_image[offset : offset + 16])
            time.sleep(0.01)
        answer = b""
        while chunk := slow.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


@pytest.mark.slow
def test_a_single_request_under_light_load_waits_at_most_the_delay(server: Server) -> None:
    time.sleep(0.5)  # nothing else in flight
    (image,) = distinct_images(1)
    with httpx.Client(timeout=30) as client:
        client.get(f"{server.url}/healthz")  # the connection is open before the clock starts
        started = time.monotonic()
        response = client.post(
            f"{server.url}/predict", content=image, headers={"content-type": "image/png"}
        )
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed < 2.0, f"{elapsed:.3f} s for one request with max delay {MAX_DELAY_MS} ms"


@pytest.mark.slow
def test_two_workers_share_single_image_load(tmp_path: Path, model: Path) -> None:
    server = start_server(tmp_path, model, "--workers", "2", "--max-delay-ms", "0")
    try:
        time.sleep(1)  # both workers listening
        counts: Counter[str] = Counter()
        lock = threading.Lock()
        (image,) = distinct_images(1)

        def client(requests: int) -> None:
            for _ in range(requests):  # a new connection each time, as the kernel spreads those
                response = httpx.post(
                    f"{server.url}/predict", content=image,
                    headers={"content-type": "image/png"}, timeout=30,
                )  # fmt: skip
                assert response.status_code == 200
                with lock:
                    counts[response.headers["x-cxml-worker"]] += 1

        threads = [threading.Thread(target=client, args=(40,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        stop_server(server)
    total = sum(counts.values())
    assert total == 160 and set(counts) == {"0", "1"}, counts
    assert max(counts.values()) <= 0.75 * total, counts


def test_the_batcher_runs_whole_requests_up_to_the_limit_and_answers_each() -> None:
    import torch

    from cxml.serve.batching import Batcher

    sizes: list[int] = []

    def classify(batch: torch.Tensor) -> list[list[float]]:
        return [[float(value)] for value in batch.flatten().tolist()]

    async def infer(work: object) -> list[list[float]]:
        await asyncio.sleep(0.01)
        assert callable(work)
        rows: list[list[float]] = work()
        return rows

    batcher = Batcher(classify, infer, max_images=4, max_delay_s=0.05, on_batch=sizes.append)

    async def main() -> list[list[list[float]]]:
        requests = [torch.tensor([i * 10 + j for j in range(n)]) for i, n in enumerate([1, 2, 3])]
        return await asyncio.gather(*(batcher.classify_batched(r) for r in requests))

    answers = asyncio.run(main())
    assert answers == [[[0.0]], [[10.0], [11.0]], [[20.0], [21.0], [22.0]]]
    assert sizes == [3, 3]  # 1 + 2 fit in 4; the 3-image request does not, so it runs next


def test_a_lone_request_does_not_wait_for_company_that_is_not_coming() -> None:
    import torch

    from cxml.serve.batching import Batcher

    async def infer(work: object) -> list[list[float]]:
        assert callable(work)
        rows: list[list[float]] = work()
        return rows

    batcher = Batcher(
        lambda batch: [[1.0]] * int(batch.shape[0]), infer, max_images=8, max_delay_s=5.0,
        company_coming=lambda: False,
    )  # fmt: skip
    started = time.monotonic()
    assert asyncio.run(batcher.classify_batched(torch.zeros(1))) == [[1.0]]
    assert time.monotonic() - started < 1.0


def test_requests_that_waited_through_a_batch_still_wait_the_delay_for_company() -> None:
    """The delay counts from when the model is free: a request that arrived during a forward pass
    is held up to max_delay after it for the client that was just answered (closed-loop clients)."""
    import torch

    from cxml.serve.batching import Batcher

    sizes: list[int] = []

    async def infer(work: object) -> list[list[float]]:
        await asyncio.sleep(0.2)
        assert callable(work)
        rows: list[list[float]] = work()
        return rows

    batcher = Batcher(
        lambda batch: [[1.0]] * int(batch.shape[0]), infer, max_images=2, max_delay_s=0.1,
        on_batch=sizes.append,
    )  # fmt: skip

    async def later(delay: float) -> list[list[float]]:
        await asyncio.sleep(delay)
        return await batcher.classify_batched(torch.zeros(1))

    async def main() -> None:
        # two fill the first batch (0-0.2 s); one arrives while it runs (its own delay is over by
        # the time the model is free), one 30 ms after it is answered: those two share a pass
        await asyncio.gather(later(0), later(0), later(0.01), later(0.23))

    asyncio.run(main())
    assert sizes == [2, 2]


def test_recent_peak_remembers_clients_just_answered_and_forgets_old_bursts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cxml.serve import admission as admission_module
    from cxml.serve.admission import Admission

    monkeypatch.setattr(admission_module, "PEAK_WINDOW_S", 0.05)
    admission = Admission(max_active=2, max_queue=8)
    with admission.admit(), admission.admit(), admission.admit():
        pass
    assert admission.held == 0 and admission.recent_peak() == 3  # their next requests are due
    time.sleep(0.12)  # two windows without a request: nobody is about
    assert admission.recent_peak() == 0
    with admission.admit():
        assert admission.recent_peak() == 1

"""Keep-alive connections spread evenly over the workers: the shares, the middleware, and a real
two-worker `cxml serve` with long-lived clients."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from cxml.serve import balance
from cxml.serve.balance import BalanceConnections, ConnectionShares
from tests.support.deploy import make_model_file, png_bytes_of
from tests.support.serving import running_serve


def test_a_worker_over_its_share_closes_one_connection_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(balance.time, "monotonic", lambda: clock[0])
    shares = ConnectionShares(2)
    assert not shares.should_close(1, 1)  # alone: 1 of 1 is its share
    assert shares.should_close(0, 3)  # 3 + 1 connections: the share is 2
    assert not shares.should_close(0, 3)  # not again before the others' counts catch up
    clock[0] += 2 * balance.CLOSE_INTERVAL_S
    assert shares.should_close(0, 3)
    assert not shares.should_close(1, 1)  # under its share
    assert not shares.should_close(0, 2)  # 2 + 1: the share is 2
    assert shares.fair_share() == 2


def test_shares_round_up_so_an_odd_total_settles() -> None:
    shares = ConnectionShares(2)
    shares.should_close(1, 2)
    assert not shares.should_close(0, 3)  # 3 + 2 = 5: a share of 3 is allowed


def run_app(middleware: BalanceConnections) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/healthz", "headers": []}
    asyncio.run(middleware(scope, receive, send))
    return sent


async def answering_app(scope: Any, receive: Any, send: Any) -> None:
    headers = [(b"content-type", b"text/plain"), (b"connection", b"keep-alive")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


def test_the_middleware_asks_the_client_to_reconnect_only_when_over_share() -> None:
    shares = ConnectionShares(2)
    shares.should_close(1, 0)
    closes: list[int] = []
    over = BalanceConnections(answering_app, shares, 0, lambda: 2, lambda: closes.append(1))
    start, body = run_app(over)
    assert (b"connection", b"close") in start["headers"]
    assert (b"connection", b"keep-alive") not in start["headers"]  # one Connection header
    assert body == {"type": "http.response.body", "body": b"ok"}
    assert closes == [1]
    even = BalanceConnections(answering_app, ConnectionShares(2), 0, lambda: 1)
    start, _ = run_app(even)
    assert (b"connection", b"close") not in start["headers"]


@pytest.mark.slow
def test_long_lived_clients_end_up_evenly_spread_over_two_workers(tmp_path: Path) -> None:
    """8 keep-alive clients: the kernel's hash alone puts 4 on each worker in 27 % of runs;
    with the balancing every run ends 4/4, and no request fails on the way."""
    model = make_model_file(tmp_path / "model.pt", seed=5)
    with running_serve(
        ["--model", str(model), "--workers", "2", "--max-delay-ms", "0"], tmp_path / "serve.log"
    ) as served:
        time.sleep(1)  # both workers listening
        last_worker: dict[int, str] = {}
        failures: list[str] = []
        closes = Counter[int]()
        lock = threading.Lock()
        deadline = time.monotonic() + 6
        image, png = png_bytes_of([[0] * 8] * 8), {"content-type": "image/png"}

        def client(index: int) -> None:
            with httpx.Client(base_url=served.url, timeout=30) as http:  # one connection
                while time.monotonic() < deadline:
                    answer = http.post("/predict", content=image, headers=png)
                    with lock:
                        if answer.status_code != 200:
                            failures.append(f"{answer.status_code} {answer.text}")
                        last_worker[index] = answer.headers["x-cxml-worker"]
                        if answer.headers.get("connection") == "close":
                            closes[index] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        metrics = httpx.get(f"{served.url}/metrics", timeout=30).text
    assert not failures, failures
    assert sorted(Counter(last_worker.values()).values()) == [4, 4], (last_worker, closes)
    counted = re.search(r"^cxml_connections_rebalanced_total (\d+)$", metrics, re.MULTILINE)
    assert counted is not None, metrics
    assert int(counted.group(1)) >= sum(closes.values())  # every close the clients saw

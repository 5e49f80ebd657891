"""The HTTP app: /predict, /healthz, /version and /metrics over one PredictionService."""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cxml import __version__
from cxml.core.console import info
from cxml.serve.admission import RETRY_AFTER_S, Admission, Overloaded
from cxml.serve.batching import Batcher
from cxml.serve.metrics import ReleaseLabels, ServiceMetrics
from cxml.serve.requests import (
    CLIENT_CLOSED,
    PredictRequest,
    RequestError,
    images_of,
    read_predict_request,
)
from cxml.serve.service import PredictionService
from cxml.serve.settings import ServeSettings
from cxml.serve.ui import add_demo_page

if TYPE_CHECKING:
    import torch
    from fastapi import FastAPI, Request, Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from cxml.serve.balance import ConnectionShares

INTERNAL_ERROR = "internal error while answering this request; the server log has the details"


WORKER_HEADER = "x-cxml-worker"
"""Which worker (0, 1, ...) answered a /predict: shows how the load spreads across workers."""


def create_app(service: PredictionService, worker: int = 0) -> FastAPI:
    """The app of one worker; its threads (decoding, inference) start here, after any fork."""
    from fastapi import FastAPI, Response

    app = FastAPI(
        title="cxml serve", version=__version__, docs_url=None, redoc_url=None, openapi_url=None
    )
    settings = service.settings
    admission = Admission(settings.max_active, settings.max_queue)
    on_their_way = [0]  # requests admitted and not yet handed to the batcher (read or decoding)

    def company_coming() -> bool:
        # Clients that send again once answered (most do) are not counted while their next
        # request is on the wire: more clients about lately than requests in hand means some are
        # (measured: without this, 2 such clients per worker never shared a forward pass).
        pending = on_their_way[0] + batcher.waiting_requests()
        return on_their_way[0] > 0 or admission.recent_peak() > pending

    batcher = Batcher(
        service.classify,
        admission.infer,
        max_images=settings.max_batch,
        max_delay_s=settings.max_delay_ms / 1000,
        on_batch=service.metrics.record_batch,
        company_coming=company_coming,
    )
    worker_header = {WORKER_HEADER: str(worker)}
    release = settings.release
    release_labels = ReleaseLabels(
        settings.release_name,
        settings.model_version,
        (release.model_name if release else None) or "",
        (release.run_id if release else None) or "",
    )

    def json_response(
        payload: object, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        return Response(
            json_text(payload),
            status_code=status,
            headers=headers,
            media_type="application/json",
        )

    def decode(sent: PredictRequest) -> torch.Tensor:
        if service.metadata.feature_names:  # a tabular model: JSON feature rows, not images
            rows = service.decode_features(sent.content_type, sent.body)
            service.metrics.record_rows(len(sent.body), service.input_summary(rows))
            return rows
        images = images_of(sent, settings)
        batch = service.decode(images)
        service.metrics.record_images(
            [len(image) for image in images], service.input_summary(batch)
        )
        return batch

    # Plain Starlette routes: no dependency injection on the hot path, and the handlers own parsing.
    # The event loop only reads and answers; parsing and decoding run in admission's threads and
    # the model in its inference thread, so /healthz answers at once however busy /predict is.
    # A work slot covers decoding only: decoded requests wait in the batcher (still counted by
    # admission), so concurrent requests can share one forward pass.
    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        try:
            with admission.admit():
                on_their_way[0] += 1
                try:
                    sent = await read_predict_request(request, settings)
                    async with admission.work_slot():
                        if await request.is_disconnected():  # gave up while waiting: spare work
                            raise RequestError(
                                CLIENT_CLOSED, "the client left while its request waited"
                            )
                        batch = await admission.decode(lambda: decode(sent))
                finally:
                    on_their_way[0] -= 1
                rows = await batcher.classify_batched(batch)
        except Overloaded:
            return json_response(
                {"error": admission.overload_message()},
                503,
                headers={"retry-after": str(RETRY_AFTER_S)},
            )
        except RequestError as exc:
            return json_response({"error": exc.message}, exc.status)
        answer = service.answer_rows(rows)
        predicted = [p["index"] for p in answer["predictions"]]
        service.metrics.record_prediction(
            time.perf_counter() - started, int(batch.shape[0]), predicted
        )
        return json_response(answer, headers=worker_header)

    async def healthz(request: Request) -> Response:
        if not service.ready:
            return json_response({"status": "starting"}, 503)
        return json_response(
            {
                "status": "ok",
                "model_version": settings.model_version,
                "release": settings.release_name,
            }
        )

    async def version(request: Request) -> Response:
        # model_sha256: `cxml check` proves the environment serves the model it evaluated
        release = settings.release
        return json_response(
            {**service.version(), "model_sha256": release.model_sha256 if release else None}
        )

    async def metrics(request: Request) -> Response:
        class_names = service.metadata.class_names
        text = service.metrics.render(
            settings.model_version,
            settings.release_name,
            class_names,
            labels=release_labels,
            tabular=bool(service.metadata.feature_names),
            reference_brightness=service.reference_brightness(),
        )
        return Response(text, media_type="text/plain; version=0.0.4")

    app.add_route("/predict", predict, methods=["POST"])
    app.add_route("/healthz", healthz, methods=["GET"])
    app.add_route("/version", version, methods=["GET"])
    app.add_route("/metrics", metrics, methods=["GET"])
    if settings.ui:
        add_demo_page(app, settings)
    app.add_middleware(CountResponses, metrics=service.metrics)
    return app


class CountResponses:
    """ASGI middleware: counts every answer in the metrics, and answers an exception that escapes
    a handler with a 500 in the service's `{"error": ...}` format (the traceback goes to the log).
    A client that hung up is counted as 499 and not logged: nobody is left to answer.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.requests import ClientDisconnect

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = False

        async def send_and_note(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = int(message["status"]), True
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except ClientDisconnect:
            status = CLIENT_CLOSED
        except Exception:
            if started:
                raise
            traceback.print_exc()
            status = 500
            await send_error(send, status, INTERNAL_ERROR)
        finally:
            self.metrics.record_response(str(scope.get("path", "")), status)


def json_text(payload: object) -> str:
    """A JSON answer's body, compact (no spaces)."""
    return json.dumps(payload, separators=(",", ":"))


async def send_error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def run_server(
    app: FastAPI,
    settings: ServeSettings,
    listener: socket.socket | None = None,
    shares: ConnectionShares | None = None,
    worker: int = 0,
    on_rebalance: Callable[[], None] | None = None,
) -> None:
    """Serve `app` with uvicorn; with `shares` (several workers), connections are evened out
    across the workers (serve/balance.py), each one closed counted by `on_rebalance`."""
    import uvicorn

    server: uvicorn.Server | None = None

    def open_connections() -> int:
        return len(server.server_state.connections) if server is not None else 0

    asgi: Any = app
    if shares is not None:
        from cxml.serve.balance import BalanceConnections

        asgi = BalanceConnections(app, shares, worker, open_connections, on_rebalance)
    config = uvicorn.Config(
        asgi,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=30,
        timeout_keep_alive=5,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[listener] if listener is not None else None)


def serve_one(
    settings: ServeSettings,
    listener: socket.socket | None = None,
    metrics: ServiceMetrics | None = None,
    service: PredictionService | None = None,
    worker: int = 0,
    shares: ConnectionShares | None = None,
) -> None:
    """Load the model (unless a supervisor loaded it before forking), warm up, answer requests."""
    if service is None:
        service = PredictionService(settings, metrics)
    service.warm_up()
    app = create_app(service, worker)
    info(
        f"serving model {settings.model_version} (release {settings.release_name}) on "
        f"http://{settings.host}:{settings.port} [{service.device}, pid {os.getpid()}, "
        f"worker {worker}, {settings.threads} thread(s)]"
    )
    run_server(
        app,
        settings,
        listener,
        shares,
        worker,
        on_rebalance=service.metrics.record_rebalanced_connection,
    )

"""`cxml serve`: HTTP inference over a release bundle (/predict, /healthz, /version, /metrics)."""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import io
import json
import os
import signal
import socket
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxml import __version__
from cxml.core.console import info, run_entry_point
from cxml.core.errors import CxmlError
from cxml.core.metrics import EVAL_METRICS
from cxml.deploy import bundle

if TYPE_CHECKING:
    import torch
    from fastapi import FastAPI, Request, Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from cxml.ml.models import ModelMetadata

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
"""Larger images are refused before they are decoded (a decompression bomb guard)."""
SUMMARY_METRICS = EVAL_METRICS


class RequestError(Exception):
    """A bad request: answered with `status` and this message, never a 500."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ServeSettings:
    model_path: Path
    release: bundle.ReleaseInfo | None
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"
    threads: int = 1
    workers: int = 1
    max_batch: int = 64
    max_request_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    resize: bool = True
    model_version: str = "local"
    release_name: str = "local"


ENDPOINTS = ("/predict", "/healthz", "/version", "/metrics")
"""Paths counted one by one; any other path (a 404, say) is counted as endpoint "other"."""
STATUS_CODES = (200, 400, 404, 405, 413, 415, 422, 500, 503)
"""Status codes counted one by one; anything else is counted as code "other"."""


class ServiceMetrics:
    """Counters and a latency histogram in shared memory, so every worker process adds to one set.

    Made before the workers fork; rendered in Prometheus' text format by whichever worker is asked.
    """

    def __init__(self) -> None:
        import multiprocessing

        self._codes = len(STATUS_CODES) + 1
        self._answers = (len(ENDPOINTS) + 1) * self._codes
        self._buckets = len(LATENCY_BUCKETS_S)
        # layout: answers per endpoint and code | histogram buckets |
        #         latency sum, latency count, images, errors
        self._values = multiprocessing.RawArray("d", self._answers + self._buckets + 4)
        self._lock = multiprocessing.Lock()

    def record_response(self, path: str, status: int) -> None:
        """Count one answer, whatever produced it (a handler, Starlette itself, an exception)."""
        endpoint = ENDPOINTS.index(path) if path in ENDPOINTS else len(ENDPOINTS)
        code = STATUS_CODES.index(status) if status in STATUS_CODES else len(STATUS_CODES)
        with self._lock:
            self._values[endpoint * self._codes + code] += 1
            if status >= 400:
                self._values[self._answers + self._buckets + 3] += 1

    def record_prediction(self, seconds: float, images: int) -> None:
        """Latency and image count of a successful /predict (its status is counted separately)."""
        tail = self._answers + self._buckets
        with self._lock:
            values = self._values
            values[tail] += seconds
            values[tail + 1] += 1
            values[tail + 2] += images
            for index, bound in enumerate(LATENCY_BUCKETS_S):
                if seconds <= bound:
                    values[self._answers + index] += 1

    def render(self, model_version: str, release_name: str) -> str:
        with self._lock:
            values = list(self._values)
        endpoints = [*ENDPOINTS, "other"]
        codes = [*(str(c) for c in STATUS_CODES), "other"]
        buckets = values[self._answers : self._answers + self._buckets]
        latency_sum, latency_count, images, errors = values[self._answers + self._buckets :]
        lines = [
            "# HELP cxml_requests_total Requests answered, by endpoint and status code.",
            "# TYPE cxml_requests_total counter",
        ]
        for endpoint_index, endpoint in enumerate(endpoints):
            for code_index, code in enumerate(codes):
                count = values[endpoint_index * self._codes + code_index]
                if count:
                    lines.append(
                        f'cxml_requests_total{{endpoint="{endpoint}",code="{code}"}} {int(count)}'
                    )
        lines += [
            "# HELP cxml_request_errors_total Requests answered with a 4xx or 5xx status.",
            "# TYPE cxml_request_errors_total counter",
            f"cxml_request_errors_total {int(errors)}",
            "# HELP cxml_images_total Images classified.",
            "# TYPE cxml_images_total counter",
            f"cxml_images_total {int(images)}",
            "# HELP cxml_predict_latency_seconds Time to answer a successful /predict request.",
            "# TYPE cxml_predict_latency_seconds histogram",
        ]
        for bound, count in zip(LATENCY_BUCKETS_S, buckets, strict=True):
            lines.append(f'cxml_predict_latency_seconds_bucket{{le="{bound}"}} {int(count)}')
        lines += [
            f'cxml_predict_latency_seconds_bucket{{le="+Inf"}} {int(latency_count)}',
            f"cxml_predict_latency_seconds_sum {latency_sum:.6f}",
            f"cxml_predict_latency_seconds_count {int(latency_count)}",
            "# HELP cxml_model_info The model version being served.",
            "# TYPE cxml_model_info gauge",
            f'cxml_model_info{{model_version="{_label(model_version)}",'
            f'release="{_label(release_name)}"}} 1',
        ]
        return "\n".join(lines) + "\n"


class CountResponses:
    """ASGI middleware: counts every answer in the metrics, and answers an exception that escapes
    a handler with a 500 in the service's `{"error": ...}` format (the traceback goes to the log).
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
        except Exception:
            if started:
                raise
            traceback.print_exc()
            status = 500
            await send_error(send, status, INTERNAL_ERROR)
        finally:
            self.metrics.record_response(str(scope.get("path", "")), status)


INTERNAL_ERROR = "internal error while answering this request; the server log has the details"


async def send_error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


class PredictionService:
    """The loaded model and what a request needs to be turned into predictions."""

    def __init__(self, settings: ServeSettings, metrics: ServiceMetrics | None = None) -> None:
        import torch

        from cxml.ml import models

        self.settings = settings
        self.device = resolve_device(settings.device)
        torch.set_num_threads(settings.threads)
        try:
            model, self.metadata = models.load_model_file(settings.model_path, self.device)
        except RuntimeError as exc:  # weights that do not fit the architecture in the metadata
            first = str(exc).strip().splitlines()[0]
            raise CxmlError(
                f"{settings.model_path}: the weights do not fit the model ({first}); retrain it"
            ) from None
        self.model = fuse_for_inference(model)
        channels = self.metadata.input_size[0]
        # 0..255 -> normalised in one multiply-add: x * scale + shift
        std = torch.tensor(self.metadata.std, device=self.device).view(1, channels, 1, 1)
        mean = torch.tensor(self.metadata.mean, device=self.device).view(1, channels, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std
        self.ready = False
        self.metrics = metrics if metrics is not None else ServiceMetrics()

    def warm_up(self) -> None:
        """Run one batch through the model, so the first request is not the slow one."""
        import torch

        channels, height, width = self.metadata.input_size
        blank = torch.zeros((2, channels, height, width), dtype=torch.uint8)
        self.classify(blank)
        self.ready = True

    def classify(self, batch: torch.Tensor) -> list[list[float]]:
        """uint8 N,C,H,W -> class probabilities per image (normalised as models.preprocess does)."""
        import torch

        with torch.inference_mode():
            inputs = torch.addcmul(
                self.shift, batch.to(self.device, non_blocking=True).float(), self.scale
            )
            probabilities = torch.softmax(self.model(inputs).float(), dim=1)
        rows: list[list[float]] = probabilities.cpu().tolist()
        return rows

    def predict(self, images: list[bytes]) -> dict[str, Any]:
        import torch

        tensors = [
            decode_image(data, index, self.metadata, self.settings)
            for index, data in enumerate(images)
        ]
        rows = self.classify(torch.stack(tensors))
        names = self.metadata.class_names
        predictions = []
        for row in rows:
            best = max(range(len(row)), key=row.__getitem__)
            predictions.append(
                {"class": names[best], "index": best, "probabilities": [round(p, 6) for p in row]}
            )
        return {
            "model_version": self.settings.model_version,
            "release": self.settings.release_name,
            "classes": list(names),
            "predictions": predictions,
        }

    def version(self) -> dict[str, Any]:
        release = self.settings.release
        metrics = release.metrics if release else {}
        return {
            "model_version": self.settings.model_version,
            "release": self.settings.release_name,
            "model_name": release.model_name if release else None,
            "run_id": release.run_id if release else None,
            "git_commit": (release.git_commit if release else None) or self.metadata.git_commit,
            "created_at": release.created_at if release else self.metadata.created_at,
            "architecture": self.metadata.architecture,
            "input_size": list(self.metadata.input_size),
            "classes": list(self.metadata.class_names),
            "metrics": {k: metrics[k] for k in SUMMARY_METRICS if k in metrics},
            "device": self.device,
            "cxml_version": __version__,
        }


def fuse_for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """Fold batch norms into the convolutions before them (same outputs, fewer ops per request)."""
    import torch
    from torch.fx.experimental.optimization import fuse

    try:
        with torch.inference_mode():
            fused: torch.nn.Module = fuse(model)
    except Exception:  # a model torch.fx cannot trace is served as it is
        return model
    return fused


def resolve_device(requested: str) -> str:
    import torch

    if requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise CxmlError(
                f"--device {requested}: CUDA is not available here; use --device cpu or auto"
            )
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def decode_image(
    data: bytes, index: int, metadata: ModelMetadata, settings: ServeSettings
) -> torch.Tensor:
    """Bytes of one image file -> uint8 C,H,W at the model's input size, or a RequestError."""
    from PIL import Image, UnidentifiedImageError

    from cxml.ml import models

    if not data:
        raise RequestError(400, f"image {index} is empty; send the bytes of a PNG or JPEG file")
    try:
        with warnings.catch_warnings():
            # PIL warns past its own pixel limit and raises past twice it: both mean too large
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RequestError(
            413,
            f"image {index} is over the limit of {settings.max_image_pixels} pixels ({exc}); "
            "send it smaller",
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise RequestError(
            400, f"image {index} is not a readable image; send a PNG, JPEG or other PIL format"
        ) from None
    width, height = image.size
    _, want_height, want_width = metadata.input_size
    if width * height > settings.max_image_pixels:
        raise RequestError(
            413,
            f"image {index} is {width}x{height} pixels, over the limit of "
            f"{settings.max_image_pixels}; send it smaller",
        )
    if not settings.resize and (width, height) != (want_width, want_height):
        raise RequestError(
            422,
            f"image {index} is {width}x{height}; this model takes {want_width}x{want_height} "
            "images, resize it first",
        )
    try:
        return models.image_to_input(image, metadata)
    except (OSError, ValueError, SyntaxError):
        raise RequestError(
            400, f"image {index} is truncated or corrupt; send the whole file"
        ) from None


def images_from_json(body: bytes) -> list[bytes]:
    """`{"image": "<base64>"}` or `{"images": ["<base64>", ...]}` -> the image files' bytes."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RequestError(
            400, 'the body is not valid JSON; send {"images": ["<base64 PNG>", ...]}'
        ) from None
    if not isinstance(payload, dict) or not ({"image", "images"} & payload.keys()):
        raise RequestError(
            422, 'JSON body needs "image" (one base64 image) or "images" (a list of them)'
        )
    encoded = payload["images"] if "images" in payload else [payload["image"]]
    if not isinstance(encoded, list) or not all(isinstance(item, str) for item in encoded):
        raise RequestError(422, '"images" must be a list of base64 strings')
    images = []
    for index, text in enumerate(encoded):
        if text.startswith("data:") and "," in text:
            text = text.split(",", 1)[1]
        try:
            images.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise RequestError(400, f"image {index} is not valid base64") from None
    return images


async def images_from_multipart(request: Request, max_batch: int) -> list[bytes]:
    """Every file part of a multipart form, in order (field names `image` / `images` by custom)."""
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException

    try:
        form = await request.form(max_files=max_batch, max_fields=max_batch + 16)
    except (MultiPartException, HTTPException) as exc:
        # inside an app Starlette turns the parser's MultiPartException into an HTTPException(400)
        raise multipart_error(
            exc.detail if isinstance(exc, HTTPException) else exc.message, max_batch
        ) from None
    images = []
    for _, value in form.multi_items():
        if isinstance(value, UploadFile):
            images.append(await value.read())
    await form.close()
    return images


def multipart_error(problem: str, max_batch: int) -> RequestError:
    """The parser's complaint about a multipart body, as this service's 413 or 400."""
    if problem.startswith("Too many files"):
        return RequestError(
            413,
            f"more than {max_batch} images in one request, over the limit of {max_batch}; "
            "split the batch",
        )
    if problem.startswith(("Too many fields", "Part exceeded")):
        return RequestError(
            413, f"multipart body has too many or too large fields ({problem}); send only images"
        )
    return RequestError(400, f"multipart body is malformed ({problem}); send a valid form")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it passes `limit` bytes (also when chunked)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(
            413,
            f"request body is {declared} bytes, over the limit of {limit}; send fewer or "
            "smaller images",
        )
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(
                413,
                f"request body is over the limit of {limit} bytes; send fewer or smaller images",
            )
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # let request.form() parse what was already read
    return body


async def images_from_request(request: Request, settings: ServeSettings) -> list[bytes]:
    body = await read_body(request, settings.max_request_bytes)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        images = images_from_json(body)
    elif content_type == "multipart/form-data":
        images = await images_from_multipart(request, settings.max_batch)
    elif content_type.startswith("image/") or content_type == "application/octet-stream":
        images = [body]
    else:
        raise RequestError(
            415,
            f"content type {content_type or 'none'!r} is not supported; use "
            "multipart/form-data, application/json or image/*",
        )
    if not images:
        raise RequestError(422, "the request holds no images; send at least one")
    if len(images) > settings.max_batch:
        raise RequestError(
            413,
            f"{len(images)} images in one request, over the limit of {settings.max_batch}; "
            "split the batch",
        )
    return images


def create_app(service: PredictionService) -> FastAPI:
    from fastapi import FastAPI, Response

    app = FastAPI(
        title="cxml serve", version=__version__, docs_url=None, redoc_url=None, openapi_url=None
    )
    settings = service.settings

    def json_response(payload: object, status: int = 200) -> Response:
        return Response(
            json.dumps(payload, separators=(",", ":")),
            status_code=status,
            media_type="application/json",
        )

    # Plain Starlette routes: no dependency injection on the hot path, and the handlers own parsing.
    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        try:
            images = await images_from_request(request, settings)
            result = service.predict(images)
        except RequestError as exc:
            return json_response({"error": exc.message}, exc.status)
        service.metrics.record_prediction(time.perf_counter() - started, len(images))
        return json_response(result)

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
        return json_response(service.version())

    async def metrics(request: Request) -> Response:
        text = service.metrics.render(settings.model_version, settings.release_name)
        return Response(text, media_type="text/plain; version=0.0.4")

    app.add_route("/predict", predict, methods=["POST"])
    app.add_route("/healthz", healthz, methods=["GET"])
    app.add_route("/version", version, methods=["GET"])
    app.add_route("/metrics", metrics, methods=["GET"])
    app.add_middleware(CountResponses, metrics=service.metrics)
    return app


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cxml serve", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", help="release directory (model.pt, release.json, SHA256SUMS)")
    source.add_argument(
        "--model", help="a bare model file (no release record): version comes from --model-version"
    )
    parser.add_argument(
        "--model-version", default="local", help="version to report with --model (default: local)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument(
        "--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:1 ..."
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: half the cores, at most 4)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="serving processes sharing the port (default: the cores, at most 4; 1 on a GPU host)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="most images in one request (default from the release, 64)",
    )
    parser.add_argument(
        "--max-request-bytes", type=int, default=None, help="largest request body (default 8 MiB)"
    )
    parser.add_argument(
        "--no-resize",
        action="store_true",
        help="refuse images not already at the model's input size",
    )
    return parser.parse_args(argv)


def default_workers(device: str) -> int:
    # One process per core serves small models best on CPU; on a GPU one process, one CUDA context.
    on_gpu = device.startswith("cuda") or (device == "auto" and Path("/dev/nvidiactl").exists())
    return 1 if on_gpu else max(1, min(4, os.cpu_count() or 1))


def default_threads(workers: int) -> int:
    # Measured on 2 cores: one torch thread per worker, beside its event loop, beats more threads.
    return max(1, min(4, (os.cpu_count() or 1) // (2 * workers)))


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    release: bundle.ReleaseInfo | None = None
    if args.bundle:
        loaded = bundle.load_bundle(args.bundle)
        release = loaded.info
        model_path = loaded.model_path
        model_version, release_name = release.model_version, release.release
        serving = release.serving
    else:
        model_path = Path(args.model)
        if not model_path.is_file():
            raise CxmlError(f"--model {model_path}: file not found; run `cxml train` first")
        model_version = args.model_version
        release_name = bundle.release_name(model_version, bundle.sha256_file(model_path))
        serving = bundle.ServingConfig()
    workers = args.workers if args.workers is not None else default_workers(args.device)
    threads = args.threads if args.threads is not None else default_threads(workers)
    for name, value in (
        ("--workers", workers),
        ("--threads", threads),
        ("--max-batch", args.max_batch),
        ("--max-request-bytes", args.max_request_bytes),
    ):
        if value is not None and value < 1:
            raise CxmlError(f"{name}: must be at least 1")
    return ServeSettings(
        model_path=model_path,
        release=release,
        host=args.host,
        port=args.port,
        device=args.device,
        threads=threads,
        workers=workers,
        max_batch=args.max_batch or serving.max_batch,
        max_request_bytes=args.max_request_bytes or serving.max_request_bytes,
        resize=serving.resize and not args.no_resize,
        model_version=model_version,
        release_name=release_name,
    )


def run_server(
    app: FastAPI, settings: ServeSettings, listener: socket.socket | None = None
) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=30,
        timeout_keep_alive=5,
    )
    uvicorn.Server(config).run(sockets=[listener] if listener is not None else None)


def serve_one(
    settings: ServeSettings,
    listener: socket.socket | None = None,
    metrics: ServiceMetrics | None = None,
) -> None:
    """Load the model, run one warm-up batch, then answer requests (one process)."""
    service = PredictionService(settings, metrics)
    service.warm_up()
    app = create_app(service)
    info(
        f"serving model {settings.model_version} (release {settings.release_name}) on "
        f"http://{settings.host}:{settings.port} [{service.device}, pid {os.getpid()}, "
        f"{settings.threads} thread(s)]"
    )
    run_server(app, settings, listener)


def bind_listener(settings: ServeSettings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((settings.host, settings.port))
    except OSError as exc:
        listener.close()
        raise CxmlError(
            f"cannot listen on {settings.host}:{settings.port} ({exc.strerror}); pick "
            "another --port"
        ) from None
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener


def serve_workers(settings: ServeSettings) -> int:
    """Fork `workers` processes on one listening socket (before torch is imported); supervise them.

    A worker that fails to start (say, a model that does not load) stops the others and its exit
    code becomes this process's; SIGTERM is passed on, and each worker finishes its requests.
    """
    listener = bind_listener(settings)
    metrics = ServiceMetrics()
    children: list[int] = []
    for _ in range(settings.workers):
        pid = os.fork()
        if pid == 0:
            os._exit(_worker_main(settings, listener, metrics))
        children.append(pid)
    listener.close()
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    exit_code = 0
    while children:
        pid, status = os.wait()
        children.remove(pid)
        code = os.waitstatus_to_exitcode(status)
        if code not in (0, -signal.SIGTERM, -signal.SIGINT) and not stopping:
            exit_code = code if code > 0 else 1
            forward(signal.SIGTERM, None)
    return exit_code


def _worker_main(settings: ServeSettings, listener: socket.socket, metrics: ServiceMetrics) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        return run_entry_point(lambda _argv: _serve_and_return(settings, listener, metrics), [])
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _serve_and_return(
    settings: ServeSettings, listener: socket.socket, metrics: ServiceMetrics
) -> int:
    serve_one(settings, listener, metrics)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from_args(args)
    if settings.workers == 1:
        serve_one(settings)
        return 0
    return serve_workers(settings)


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))

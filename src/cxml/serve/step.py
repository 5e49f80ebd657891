"""`cxml serve`: HTTP inference over a release bundle (/predict, /healthz, /version, /metrics)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from cxml.core.console import run_entry_point
from cxml.core.errors import ConfigError
from cxml.records import release as bundle
from cxml.serve.app import serve_one
from cxml.serve.settings import (
    DEFAULT_MAX_DELAY_MS,
    DEFAULT_MAX_QUEUE,
    LAYOUTS,
    ServeSettings,
    default_active,
    default_threads,
    default_workers,
)
from cxml.serve.workers import serve_workers


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from_args(args)
    if settings.workers == 1:
        serve_one(settings)
        return 0
    return serve_workers(settings)


DEFAULT_MODEL = "model/model.pt"
"""What `cxml train` writes with the default params (outputs.model)."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cxml serve", description=__doc__)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--bundle", help="release directory (model.pt, release.json, SHA256SUMS)")
    source.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="a bare model file (no release record): version comes from --model-version "
        f"(default: {DEFAULT_MODEL}, where `cxml train` writes it)",
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
        help="torch CPU threads per worker (default: cores / (2 x workers), 1 to 4; on 2 cores 1, "
        "which measured best there, see benchmarks/README.md)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="serving processes sharing the port (default: the cores, at most 4, measured on 2 "
        "cores; 1 on a GPU host, not yet measured)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="most images in one request, and in one forward pass of requests batched together "
        "(default from the release, 64)",
    )
    parser.add_argument(
        "--max-delay-ms",
        type=float,
        default=DEFAULT_MAX_DELAY_MS,
        help="how long a request may wait for others to share its forward pass once the model is "
        "idle, while other clients are about; under load batches fill while the previous one "
        f"runs (default {DEFAULT_MAX_DELAY_MS:g}, measured on 2 CPU cores: see "
        "benchmarks/README.md; 0 batches only what arrives while a batch runs)",
    )
    parser.add_argument(
        "--max-request-bytes", type=int, default=None, help="largest request body (default 8 MiB)"
    )
    parser.add_argument(
        "--max-active",
        type=int,
        default=None,
        help="/predict requests a worker decodes and classifies at once (default: its share of "
        "the cores, 2 to 8)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULT_MAX_QUEUE,
        help="/predict requests a worker holds waiting beyond those; more are answered 503 with "
        f"Retry-After (default {DEFAULT_MAX_QUEUE})",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="auto",
        help="memory layout of forward passes on CPU: auto times the standard layout against "
        "channels-last on the loaded model and keeps channels-last for the batch sizes where it "
        "is clearly faster (ResNet-18 at 32x32 on 2 cores: batch 1 only, 1.5x; see "
        "benchmarks/README.md); standard; channels-last for every batch (default auto)",
    )
    parser.add_argument(
        "--no-resize",
        action="store_true",
        help="refuse images not already at the model's input size",
    )
    parser.add_argument(
        "--no-ui",
        action="store_true",
        help="do not serve the demo page (/ and its assets, /examples): the API only",
    )
    return parser.parse_args(argv)


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
            raise ConfigError(
                f"--model {model_path}: file not found; run `cxml train` (or `dvc repro`) first, "
                "or pass --model FILE or --bundle DIR"
            )
        model_version = args.model_version
        release_name = bundle.release_name(model_version, bundle.sha256_file(model_path))
        serving = bundle.ServingConfig()
    workers = args.workers if args.workers is not None else default_workers(args.device)
    threads = args.threads if args.threads is not None else default_threads(workers)
    max_active = args.max_active if args.max_active is not None else default_active(workers)
    for name, value in (
        ("--workers", workers),
        ("--threads", threads),
        ("--max-batch", args.max_batch),
        ("--max-request-bytes", args.max_request_bytes),
        ("--max-active", max_active),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"{name}: must be at least 1")
    if not 0 <= args.max_delay_ms <= 10_000:
        raise ConfigError("--max-delay-ms: must be between 0 and 10000 (milliseconds)")
    if args.max_queue < 0:
        raise ConfigError("--max-queue: must be 0 (no waiting) or more")
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
        max_active=max_active,
        max_queue=args.max_queue,
        max_delay_ms=args.max_delay_ms,
        model_version=model_version,
        release_name=release_name,
        ui=not args.no_ui,
        layout=args.layout,
    )


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))

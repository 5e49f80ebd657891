"""What one `cxml serve` process is told: the model, the address, the request limits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cxml.records import release as bundle

DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
"""Larger images are refused before they are decoded (a decompression bomb guard)."""

DEFAULT_MAX_QUEUE = 32
"""/predict requests one process holds waiting beyond those it works on; more are answered 503.
Big enough for a burst of small requests, small enough that waiting bodies (each up to
max_request_bytes) cannot exhaust memory."""

DEFAULT_MAX_DELAY_MS = 2.0
"""How long a request may wait for others to share its forward pass once the model is idle, while
company is expected. Measured (benchmarks/README.md, 2-core x86_64, ResNet-18 at 32x32, 2
workers): 2 ms gave 1.4x the single-image req/s of 0 ms at 4 clients and 1.1x the img/s of
16-image requests, 5 ms no better; a lone client is not held (nobody else is about)."""


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
    """Most images in one request, and in one forward pass of batched requests."""
    max_delay_ms: float = DEFAULT_MAX_DELAY_MS
    max_request_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    resize: bool = True
    max_active: int = 2
    """/predict requests one process decodes and classifies at once (off its event loop)."""
    max_queue: int = DEFAULT_MAX_QUEUE
    model_version: str = "local"
    release_name: str = "local"
    ui: bool = True
    """Serve the demo page (/, /ui/*, /examples); `--no-ui` turns it off."""
    layout: str = "auto"
    """Memory layout of forward passes on CPU: auto (timed at load, serve/layout.py), standard,
    or channels-last (every batch)."""


LAYOUTS = ("auto", "standard", "channels-last")


def default_workers(device: str) -> int:
    # One process per core serves small models best on CPU; on a GPU one process, one CUDA context.
    on_gpu = device.startswith("cuda") or (device == "auto" and Path("/dev/nvidiactl").exists())
    return 1 if on_gpu else max(1, min(4, os.cpu_count() or 1))


def default_threads(workers: int) -> int:
    # Measured on 2 cores (benchmarks/README.md): 2 workers x 1 torch thread beat 1 worker x 2
    # threads, 1.1x single-image req/s and 1.4x 16-image img/s at 4 clients.
    return max(1, min(4, (os.cpu_count() or 1) // (2 * workers)))


def default_active(workers: int) -> int:
    # Two keep decoding (thread pool) and inference (its own thread) busy side by side; more only
    # pays where a process has spare cores for decoding, as one GPU process does.
    return max(2, min(8, (os.cpu_count() or 1) // workers))

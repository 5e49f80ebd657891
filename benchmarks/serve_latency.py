"""/predict latency and throughput: `cxml serve` against `mlflow models serve` on the same model, one run.

Claim (one run on this machine, 2026-11-25; re-run to check, figures move by ~10-20% between runs):
  hardware: 2-core x86_64 VM, CPU only; Python 3.11.7, torch 2.14.1 (CUDA build, run on the CPU),
  mlflow 3.17.2, uvicorn 0.54 with uvloop + httptools; model: the example small_cnn at 8x8 digits
  (~0.09 M parameters, ~2.4 M MACs per image, MACs not FLOPs). Client: wrk, 1 thread, 4 keep-alive
  connections, 10 s per case after a 3 s warm-up, on the same 2 cores. Both servers in their default
  configuration (mlflow: 1 uvicorn worker; cxml: one worker per core, 1 torch thread each, batch norm
  folded into the convolutions).
    single image   mlflow models serve   1032 req/s   p50 3.5 ms   p99 51 ms
                   cxml serve            2411 req/s   p50 1.3 ms   p99  9 ms   -> 2.34x req/s, lower p99
    16 images      mlflow models serve    508 req/s   (8.1k img/s)   p99 151 ms
                   cxml serve             439 req/s   (7.0k img/s)   p99  24 ms  -> 0.86x req/s
  `--architecture resnet18 --input-size 3x32x32` (same machine and client, two runs):
    single image   mlflow models serve  131 / 129 req/s   p50 29-30 ms   p99 98-99 ms
                   cxml serve           260 / 259 req/s   p50 15 ms      p99 22-23 ms  -> 1.98x / 2.02x
    16 images      mlflow models serve   17 / 15 req/s    (0.25k img/s)  p99 449-470 ms
                   cxml serve           100 / 104 req/s   (1.6k img/s)   p99 54-55 ms  -> 6.0x / 6.7x
  (Figures printed here before 2026-11-25 under that name were small_cnn: the script then ignored
  --architecture.) Single-image ResNet-18 sits right at the 2x goal, with a p99 4x lower.
  The serving goal (>= 2x mlflow's single-image req/s at no worse p99) is met for single images. For
  16-image batches of small_cnn, cxml decodes 16 PNG files per request while mlflow gets ready
  tensors, and is ~14% behind in throughput (with a far lower p99).

What each server gets is what its clients naturally send: cxml takes the PNG file (multipart upload)
and decodes, resizes and normalises it itself; mlflow takes the already normalised float tensor as
JSON (`{"inputs": ...}`). The model is logged for mlflow with `serialization_format="pickle"` of a
TorchScript module, so it accepts any batch size (pt2 with a batch-1 example would fix the batch at 1).

    .venv/bin/python benchmarks/serve_latency.py [--seconds 10] [--connections 4] [--architecture resnet18]
        [--input-size 3x32x32]
    (a smoke run, ~35 s on 2 cores: --seconds 1 --connections 1 --client python --architecture
    resnet18 --input-size 3x16x16)
    (wrk from `apt-get install wrk` is the default client; `--client python` uses httpx threads instead)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))


@dataclass
class Result:
    name: str
    batch: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    p50_ms: float | None = None
    p99_ms: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        known = {0.50: self.p50_ms, 0.99: self.p99_ms}.get(q)
        if known is not None:
            return known
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    def line(self) -> str:
        return (
            f"{self.name:<22} batch {self.batch:>2}  {self.rps:7.1f} req/s  {self.rps * self.batch:8.1f} img/s  "
            f"p50 {self.percentile(0.50):6.2f} ms  p99 {self.percentile(0.99):6.2f} ms  "
            f"errors {self.errors}"
        )


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


DIGITS_INPUT_SIZE = (1, 8, 8)


def example_model(
    path: Path,
    architecture: str = "small_cnn",
    input_size: tuple[int, int, int] = DIGITS_INPUT_SIZE,
) -> Path:
    """`architecture`, untrained, at `input_size` (C, H, W; weights do not change the timing)."""
    import torch

    from cxml.ml import models
    from cxml.ml.models import ModelMetadata

    torch.manual_seed(0)
    channels = input_size[0]
    network = models.build_model(architecture, 10, channels)
    metadata = ModelMetadata(
        architecture,
        10,
        tuple(str(i) for i in range(10)),
        input_size,
        (0.3,) * channels,
        (0.35,) * channels,
        "0.1.0",
    )
    models.save_model_file(path, network, metadata)
    return path


def mlflow_model(model_file: Path, target: Path) -> None:
    import mlflow.pytorch
    import numpy as np
    import torch

    from cxml.ml import models

    network, metadata = models.load_model_file(model_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(network)
    mlflow.pytorch.save_model(
        scripted,
        str(target),
        serialization_format="pickle",
        input_example=np.zeros((2, *metadata.input_size), dtype=np.float32),
        pip_requirements=["torch", "mlflow"],
    )


def start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen(
            argv, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 120
) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout_s} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def load(
    name: str, url: str, batch: int, make_request: Any, seconds: float, threads: int
) -> Result:
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    stop_at = time.monotonic() + seconds + 1.0  # one second of warm-up, not counted
    counting_from = time.monotonic() + 1.0

    def worker(index: int) -> None:
        with httpx.Client(timeout=30) as client:
            while (now := time.monotonic()) < stop_at:
                began = time.perf_counter()
                response = make_request(client, url)
                elapsed = (time.perf_counter() - began) * 1000
                if now < counting_from:
                    continue
                if response.status_code != 200:
                    errors[index] += 1
                latencies[index].append(elapsed)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    flat = [x for chunk in latencies for x in chunk]
    return Result(name, batch, len(flat), sum(errors), seconds, flat)


WRK_SCRIPT = """
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout + e.status, latency:percentile(50), latency:percentile(99)))
end
"""


def load_with_wrk(
    name: str,
    url: str,
    batch: int,
    body: bytes,
    content_type: str,
    seconds: float,
    connections: int,
    work: Path,
) -> Result:
    """wrk (C, one thread) as the client, so the client takes little of the CPU the servers share."""
    (work / "bench.lua").write_text(WRK_SCRIPT)
    (work / "body.bin").write_bytes(body)
    env = dict(os.environ, BENCH_BODY=str(work / "body.bin"), BENCH_CONTENT_TYPE=content_type)
    base = ["wrk", "-t", "1", "-c", str(connections), "-s", str(work / "bench.lua")]
    subprocess.run([*base, "-d", "3s", url], capture_output=True, env=env, check=True)  # warm-up
    output = subprocess.run(
        [*base, "-d", f"{seconds:g}s", url], capture_output=True, text=True, env=env, check=True
    ).stdout
    fields = next(line for line in output.splitlines() if line.startswith("BENCH ")).split()[1:]
    requests, duration_us, errors, p50_us, p99_us = (int(x) for x in fields)
    return Result(
        name, batch, requests, errors, duration_us / 1e6, [], p50_us / 1000, p99_us / 1000
    )


def multipart_body(images: list[bytes]) -> tuple[bytes, str]:
    boundary = "cxmlbenchboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{i}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
        for i, data in enumerate(images)
    ]
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def grey_level(index: int) -> int:
    """The 0..255 level of benchmark image `index` (the same images go to both servers)."""
    return (index * 16) % 256


def png_images(count: int, input_size: tuple[int, int, int]) -> list[bytes]:
    """`count` uniform PNG files at the model's input size and channel count."""
    from PIL import Image

    channels, height, width = input_size
    mode = "L" if channels == 1 else "RGB"
    images = []
    for index in range(count):
        level = grey_level(index)
        buffer = io.BytesIO()
        Image.new(mode, (width, height), level if channels == 1 else (level,) * 3).save(
            buffer, "PNG"
        )
        images.append(buffer.getvalue())
    return images


def mlflow_body(batch: int, input_size: tuple[int, int, int], mean: Any, std: Any) -> bytes:
    """The same images as `png_images`, normalised as cxml does, as mlflow's `{"inputs": ...}`."""
    channels, height, width = input_size
    tensor = [
        [[[(grey_level(index) / 255 - mean[c]) / std[c]] * width] * height for c in range(channels)]
        for index in range(batch)
    ]
    return json.dumps({"inputs": tensor}).encode()


def parse_size(text: str) -> tuple[int, int, int]:
    channels, height, width = (int(part) for part in text.lower().split("x"))
    return channels, height, width


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--connections", type=int, default=4, help="concurrent client connections (default 4)"
    )
    parser.add_argument(
        "--client",
        choices=["wrk", "python"],
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator: wrk (apt-get install wrk; default when found) or Python threads",
    )
    parser.add_argument(
        "--model", help="a cxml model file (default: the example architecture, untrained)"
    )
    parser.add_argument(
        "--architecture",
        default="small_cnn",
        help="without --model: small_cnn (default), resnet18 ...",
    )
    parser.add_argument(
        "--input-size",
        default="1x8x8",
        help="without --model: CxHxW of the example model's input (default 1x8x8, digits)",
    )
    args = parser.parse_args()

    import mlflow
    import torch

    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PYTHONPATH=str(REPO / "src"))
    env["PATH"] = (
        f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # mlflow runs `uvicorn`
    )
    with tempfile.TemporaryDirectory(prefix="cxml-bench-") as workdir:
        work = Path(workdir)
        model_file = (
            Path(args.model)
            if args.model
            else example_model(work / "model.pt", args.architecture, parse_size(args.input_size))
        )
        mlflow_model(model_file, work / "mlflow-model")
        from cxml.ml import models

        _, metadata = models.read_model_file(model_file)
        input_size = metadata.input_size
        print(f"model: {metadata.architecture}, input {'x'.join(map(str, input_size))}", flush=True)

        def measure(name: str, url: str, batch: int, body: bytes, content_type: str) -> Result:
            if args.client == "wrk":
                return load_with_wrk(
                    name, url, batch, body, content_type, args.seconds, args.connections, work
                )

            def send(client: httpx.Client, target: str) -> httpx.Response:
                return client.post(target, content=body, headers={"content-type": content_type})

            return load(name, url, batch, send, args.seconds, args.connections)

        results: list[Result] = []
        mlflow_port, cxml_port = free_port(), free_port()
        mlflow_process = start(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(work / "mlflow-model"),
             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(mlflow_port)],
            work / "mlflow.log", env,
        )  # fmt: skip
        try:
            up = wait_ready(
                f"http://127.0.0.1:{mlflow_port}/health", mlflow_process, work / "mlflow.log"
            )
            print(f"mlflow models serve ready in {up:.1f} s", flush=True)
            time.sleep(3)  # let every worker finish starting
            for batch in (1, 16):
                url = f"http://127.0.0.1:{mlflow_port}/invocations"
                results.append(
                    measure(
                        "mlflow models serve",
                        url,
                        batch,
                        mlflow_body(batch, input_size, metadata.mean, metadata.std),
                        "application/json",
                    )
                )
                print(results[-1].line(), flush=True)
        finally:
            stop(mlflow_process)
        cxml_process = start(
            [sys.executable, "-m", "cxml.serve", "--model", str(model_file), "--port", str(cxml_port)],
            work / "cxml.log", env,
        )  # fmt: skip
        try:
            up = wait_ready(
                f"http://127.0.0.1:{cxml_port}/healthz", cxml_process, work / "cxml.log"
            )
            print(f"cxml serve ready in {up:.1f} s", flush=True)
            time.sleep(3)  # let every worker finish starting
            for batch in (1, 16):
                url = f"http://127.0.0.1:{cxml_port}/predict"
                body, content_type = multipart_body(png_images(batch, input_size))
                results.append(measure("cxml serve", url, batch, body, content_type))
                print(results[-1].line(), flush=True)
        finally:
            stop(cxml_process)

    print()
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, "
        f"mlflow {mlflow.__version__}; client {args.client}, {args.connections} connections, "
        f"{args.seconds:g} s per case, one run"
    )
    for result in results:
        print(result.line())
    mlflow_single, mlflow_batch, cxml_single, cxml_batch = results
    print(
        f"ratio cxml/mlflow: single image {cxml_single.rps / mlflow_single.rps:.2f}x req/s "
        f"(p99 {cxml_single.percentile(0.99):.1f} vs {mlflow_single.percentile(0.99):.1f} ms); "
        f"16 images {cxml_batch.rps / mlflow_batch.rps:.2f}x"
    )
    goal = cxml_single.rps >= 2 * mlflow_single.rps and cxml_single.percentile(
        0.99
    ) <= mlflow_single.percentile(0.99)
    print(
        f"serving goal (>= 2x single-image req/s at no worse p99): {'met' if goal else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

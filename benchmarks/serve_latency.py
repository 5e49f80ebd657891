"""/predict throughput and latency: `cxml serve` vs `mlflow models serve` vs a minimal FastAPI app.

One run, the three servers alternated round by round on the same model, client and cores; for each
batch size (images per request) and number of concurrent clients it prints req/s, img/s and p99
per server, and the ratios cxml/mlflow and cxml/minimal as the median with their range over rounds.
For each server it also reports start-to-healthy time, idle RSS and PSS of its whole process tree
(PSS counts pages shared between processes once), and the CPU split between its processes under
single-image load.

Recorded in benchmarks/README.md under "Issue 17": a quiet-machine table from before the batching
and memory fixes, the `--stages` profile, and the table after them (taken on a loaded machine, so
its ratios still need a quiet re-run). The targets (issue 17): ResNet-18 at 32x32, single-image clients at 4-16 concurrency: >= 3x mlflow's
req/s and >= 1.5x the minimal app's at no worse p99; 16-image batches >= 1.5x the minimal app's
img/s; idle PSS <= mlflow's.

What each server gets is what its clients naturally send: cxml and the minimal app take PNG files
(multipart upload) and decode them; mlflow takes the already normalised float tensor as JSON
(`{"inputs": ...}`), logged as pickled TorchScript so it accepts any batch size. The minimal app is
benchmarks/minimal_fastapi.py (uvicorn, 2 workers, eager torch, one torch thread each).

    .venv/bin/python benchmarks/serve_latency.py --architecture resnet18 --input-size 3x32x32
        [--rounds 3] [--seconds 10] [--batches 1,4,16,64] [--clients 1,4,16] [--client wrk|python]
    .venv/bin/python benchmarks/serve_latency.py --stages --architecture resnet18 --input-size 3x32x32
    (where one request's time goes in cxml: parse, decode, forward pass by batch size, JSON)
    (a smoke run, a few minutes on 2 cores: --rounds 1 --seconds 1 --warmup 0.5 --batches 1,16
    --clients 1,4 --client python --architecture resnet18 --input-size 3x16x16)
    (wrk from `apt-get install wrk` is the default client when found; `--client python` uses httpx
    threads, which take CPU from the servers on a small machine)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, replace
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
    name: str,
    url: str,
    batch: int,
    make_request: Any,
    seconds: float,
    threads: int,
    warmup_s: float = 1.0,
) -> Result:
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    stop_at = time.monotonic() + seconds + warmup_s  # the warm-up is not counted
    counting_from = time.monotonic() + warmup_s

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


@dataclass(frozen=True)
class ServerSpec:
    """One contender: how to start it, where its health check and /predict are, what it is sent."""

    name: str
    argv: Any  # (port) -> argv
    health_path: str
    predict_path: str
    body: Any  # (batch) -> (body, content type)


@dataclass
class Footprint:
    up_s: float
    rss_mb: float
    pss_mb: float
    processes: int


def process_tree(root: int) -> list[int]:
    """`root` and every process below it (from /proc, Linux only)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def memory_mb(pids: list[int]) -> tuple[float, float]:
    """Summed RSS and PSS in MB (smaps_rollup)."""
    rss = pss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss / 1024, pss / 1024


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    ticks = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks[pid] = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks


def cpu_split(before: dict[int, int], after: dict[int, int]) -> list[float]:
    """Each busy process's share of the tree's CPU time between two readings, largest first."""
    used = [after[pid] - before.get(pid, 0) for pid in after]
    total = sum(used)
    return (
        sorted((u / total for u in used if u / max(total, 1) >= 0.02), reverse=True)
        if total
        else []
    )


def stage_timings(model_file: Path, repeats: int = 200) -> None:
    """Where one /predict spends its time in cxml, stage by stage, in this process (no HTTP): the
    profile behind the single-client comparison with the minimal app."""
    import asyncio
    import timeit

    import torch
    from starlette.requests import Request

    from cxml.serve.app import json_text
    from cxml.serve.requests import images_of, read_predict_request
    from cxml.serve.service import PredictionService
    from cxml.serve.settings import ServeSettings

    settings = ServeSettings(model_path=model_file, release=None)
    service = PredictionService(settings)
    service.warm_up()
    input_size = service.metadata.input_size
    body, content_type = multipart_body(png_images(1, input_size))
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]

    async def parse() -> Any:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/predict", "headers": headers}
        return await read_predict_request(Request(scope, receive), settings)

    loop = asyncio.new_event_loop()
    sent = loop.run_until_complete(parse())
    one = service.decode(images_of(sent, settings))
    rows = service.classify(one)
    sixteen = png_images(16, input_size)
    stages: list[tuple[str, Any, int]] = [
        ("multipart read + parse (event loop)", lambda: loop.run_until_complete(parse()), repeats),
        (
            "PNG decode, 1 image (thread pool)",
            lambda: service.decode(images_of(sent, settings)),
            repeats,
        ),
        ("PNG decode, 16 images", lambda: service.decode(sixteen), repeats // 10),
        (
            "drift summary + metrics",
            lambda: service.metrics.record_images([len(body)], service.input_summary(one)),
            repeats,
        ),
        ("answer rows + JSON encode", lambda: json_text(service.answer_rows(rows)), repeats),
    ]
    layouts = {
        name: PredictionService(replace(settings, layout=name))
        for name in ("standard", "channels-last")
    }
    print(f"auto layout: {service.layout.describe()}", flush=True)
    for size in (1, 2, 4, 16, 32, 64):
        batch = torch.cat([one] * size)
        for name, layout_service in layouts.items():
            stages.append(
                (
                    f"forward pass, batch {size}, {name}",
                    lambda b=batch, s=layout_service: s.classify(b),
                    max(5, repeats // (size + 4)),
                )
            )
    for name, work, number in stages:
        work()
        per_call = timeit.timeit(work, number=number) / number * 1000
        print(f"{name:<38} {per_call:8.3f} ms", flush=True)


def parse_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds, servers alternated (3)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per case (10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="uncounted seconds per case (1)")
    parser.add_argument("--batches", default="1,4,16,64", help="images per request (1,4,16,64)")
    parser.add_argument(
        "--clients", "--connections", default="1,4,16", help="concurrent clients (1,4,16)"
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
        "--architecture", default="small_cnn", help="without --model: small_cnn (default), resnet18"
    )
    parser.add_argument(
        "--input-size",
        default="1x8x8",
        help="without --model: CxHxW of the example model's input (default 1x8x8, digits)",
    )
    parser.add_argument(
        "--servers", default="cxml,mlflow,minimal", help="which to run (cxml,mlflow,minimal)"
    )
    parser.add_argument("--cxml-args", default="", help="extra `cxml serve` options, quoted")
    parser.add_argument(
        "--stages",
        action="store_true",
        help="instead: time each stage of one request in cxml (parse, decode, forward pass by "
        "batch size, JSON) in this process, one torch thread",
    )
    args = parser.parse_args()
    if args.stages:
        with tempfile.TemporaryDirectory(prefix="cxml-bench-") as workdir:
            stage_timings(
                Path(args.model)
                if args.model
                else example_model(
                    Path(workdir) / "model.pt", args.architecture, parse_size(args.input_size)
                )
            )
        return 0
    batches, client_counts = parse_list(args.batches), parse_list(args.clients)

    import shlex

    import mlflow
    import torch

    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PYTHONPATH=str(REPO / "src"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    with tempfile.TemporaryDirectory(prefix="cxml-bench-") as workdir:
        work = Path(workdir)
        model_file = (
            Path(args.model)
            if args.model
            else example_model(work / "model.pt", args.architecture, parse_size(args.input_size))
        )
        env["CXML_BENCH_MODEL"] = str(model_file)
        from cxml.ml import models

        _, metadata = models.read_model_file(model_file)
        input_size = metadata.input_size
        print(f"model: {metadata.architecture}, input {'x'.join(map(str, input_size))}", flush=True)
        all_specs = {
            "cxml": ServerSpec(
                "cxml serve",
                lambda port: [
                    sys.executable,
                    "-m",
                    "cxml.serve",
                    "--model",
                    str(model_file),
                    "--port",
                    str(port),
                    *shlex.split(args.cxml_args),
                ],
                "/healthz",
                "/predict",
                lambda batch: multipart_body(png_images(batch, input_size)),
            ),
            "mlflow": ServerSpec(
                "mlflow models serve",
                lambda port: [
                    sys.executable,
                    "-m",
                    "mlflow",
                    "models",
                    "serve",
                    "-m",
                    str(work / "mlflow-model"),
                    "--env-manager",
                    "local",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                "/health",
                "/invocations",
                lambda batch: (
                    mlflow_body(batch, input_size, metadata.mean, metadata.std),
                    "application/json",
                ),
            ),
            "minimal": ServerSpec(
                "minimal FastAPI",
                lambda port: [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "minimal_fastapi:app",
                    "--app-dir",
                    str(REPO / "benchmarks"),
                    "--workers",
                    "2",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ],
                "/health",
                "/predict",
                lambda batch: multipart_body(png_images(batch, input_size)),
            ),
        }
        specs = [all_specs[name] for name in args.servers.split(",")]
        if any(spec.name.startswith("mlflow") for spec in specs):
            mlflow_model(model_file, work / "mlflow-model")

        def measure(spec: ServerSpec, url: str, batch: int, clients: int) -> Result:
            body, content_type = spec.body(batch)
            if args.client == "wrk":
                return load_with_wrk(
                    spec.name, url, batch, body, content_type, args.seconds, clients, work
                )

            def send(client: httpx.Client, target: str) -> httpx.Response:
                return client.post(target, content=body, headers={"content-type": content_type})

            return load(spec.name, url, batch, send, args.seconds, clients, args.warmup)

        results: dict[tuple[str, int, int], list[Result]] = {}
        footprints: dict[str, list[Footprint]] = {}
        splits: dict[str, dict[int, list[list[float]]]] = {}
        for round_index in range(args.rounds):
            order = specs[round_index % len(specs) :] + specs[: round_index % len(specs)]
            for spec in order:
                port = free_port()
                log = work / f"{spec.name.split()[0]}-{round_index}.log"
                began = time.monotonic()
                process = start(spec.argv(port), log, env)
                try:
                    wait_ready(f"http://127.0.0.1:{port}{spec.health_path}", process, log)
                    up = time.monotonic() - began
                    time.sleep(2)  # every worker started and idle
                    rss, pss = memory_mb(process_tree(process.pid))
                    footprint = Footprint(up, rss, pss, len(process_tree(process.pid)))
                    footprints.setdefault(spec.name, []).append(footprint)
                    print(
                        f"round {round_index + 1} {spec.name}: healthy in {up:.1f} s, idle RSS "
                        f"{rss:.0f} MB, PSS {pss:.0f} MB ({footprint.processes} processes)",
                        flush=True,
                    )
                    url = f"http://127.0.0.1:{port}{spec.predict_path}"
                    for batch in batches:
                        for clients in client_counts:
                            before = cpu_ticks(process_tree(process.pid))
                            result = measure(spec, url, batch, clients)
                            if batch == 1:
                                after = cpu_ticks(process_tree(process.pid))
                                by_clients = splits.setdefault(spec.name, {})
                                by_clients.setdefault(clients, []).append(cpu_split(before, after))
                            results.setdefault((spec.name, batch, clients), []).append(result)
                            print(f"  clients {clients:>2}  {result.line()}", flush=True)
                finally:
                    stop(process)

    print()
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, mlflow {mlflow.__version__}; client {args.client}; "
        f"{args.rounds} round(s), {args.seconds:g} s per case; model {metadata.architecture} "
        f"{'x'.join(map(str, input_size))}"
    )
    print("median over rounds (req/s, img/s, p99):")
    for batch in batches:
        for clients in client_counts:
            cells = []
            for spec in specs:
                runs = results[(spec.name, batch, clients)]
                rps = statistics.median(r.rps for r in runs)
                p99 = statistics.median(r.percentile(0.99) for r in runs)
                cells.append(
                    f"{spec.name} {rps:7.1f} req/s {rps * batch:8.1f} img/s p99 {p99:6.1f} ms"
                )
            print(f"batch {batch:>2} clients {clients:>2}: " + " | ".join(cells))
    cxml = all_specs["cxml"].name
    if cxml in {spec.name for spec in specs}:
        print("ratios cxml/other, req/s: median (range over rounds)")
        for batch in batches:
            for clients in client_counts:
                ratios = []
                for spec in specs:
                    if spec.name == cxml:
                        continue
                    pairs = zip(
                        results[(cxml, batch, clients)],
                        results[(spec.name, batch, clients)],
                        strict=True,
                    )
                    ratios.append(f"vs {spec.name} {spread([a.rps / b.rps for a, b in pairs])}")
                print(f"batch {batch:>2} clients {clients:>2}: " + ", ".join(ratios))
    for spec in specs:
        runs = footprints[spec.name]
        print(
            f"{spec.name}: start to healthy {statistics.median(f.up_s for f in runs):.1f} s, idle "
            f"RSS {statistics.median(f.rss_mb for f in runs):.0f} MB, PSS "
            f"{statistics.median(f.pss_mb for f in runs):.0f} MB; CPU split under single-image "
            "load, per round: "
            + "; ".join(
                f"{clients} clients {[[round(share, 2) for share in split] for split in rounds]}"
                for clients, rounds in sorted(splits.get(spec.name, {}).items())
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What a pull request waits for after training: evaluate, gate and report, against `import torch`.

Claim (issue 18): on a 2-core runner, evaluate + gate + report after training take <= 2.2x
`python -c "import torch"` measured in the same run (about 5 s) on the digits example, with
tracking on and PNG charts on; `cxml gate` alone well under a second;
and evaluate and report at 1,000 classes within 1.5x of 10 classes (same number of test images).
Recorded figures, the machine and its load: benchmarks/README.md.

One run measures, as the actions call them (fresh `python -m` processes):

- baseline: `python -c "import torch"`;
- digits: one `cxml train` (1 epoch, tracking on), then `--runs` times: `cxml evaluate
  --tracking-in-background` (as the pull-request template runs it: a SQLite store is logged
  while gate and report run, and the report step waits for it at its end), `cxml gate`,
  `cxml report --target none` (charts drawn); with `--tracking sqlite` also `cxml evaluate`
  waiting for the store itself, for comparison (not in the total); the store is then checked
  to hold the `eval.*` metrics;
- scale: synthetic image folders with 10 and 1,000 classes and the same number of test images,
  trained for 1 epoch each, then evaluate and report `--runs` times each; prints 1000/10 ratios;
- profile (unless --no-profile): `python -X importtime` and cProfile top entries of evaluate.

Tracking (`--tracking`): `sqlite` (default) logs to a SQLite store in the project, the embedded
default; `server` starts a real `mlflow server` on 127.0.0.1 (its own SQLite store; started
before, and outside, every timed part) and sets `tracking.uri` to it, as a team's CI does with
MLFLOW_TRACKING_URI: evaluate then logs its metrics with one REST call instead of mlflow.

Medians of `--runs`. The machine may be shared: the load average is printed before and after.

    .venv/bin/python benchmarks/action_overhead.py [--runs 3] [--no-scale] [--no-profile]
    .venv/bin/python benchmarks/action_overhead.py --tracking server --no-scale
    .venv/bin/python benchmarks/action_overhead.py --setup    # also the setup action, cold/warm
    .venv/bin/python benchmarks/action_overhead.py --src /tmp/before/src  # cxml from a copy
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import pstats
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SETUP_SCRIPT = REPO_ROOT / "actions" / "setup" / "cxml_setup.py"
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}
TIMEOUT_S = 900
SCALE_TEST_IMAGES = 1000
"""Test images in both scale variants: 100 per class at 10 classes, 1 per class at 1,000."""


def run_step(command: Sequence[str], *, cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=TIMEOUT_S
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stdout}\n{result.stderr}")
    return seconds, result.stderr


def timed(command: Sequence[str], *, cwd: Path, env: dict[str, str]) -> float:
    return run_step(command, cwd=cwd, env=env)[0]


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITHUB_", "RUNNER_", "CXML_", "MLFLOW_", "CI"))
    }
    return {**env, **QUIET_ENV, **extra}


def cxml(step: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"cxml.{step}", *args]


EVALUATE = ("evaluate", "--no-fail", "--baseline", "none", "--tracking-in-background")
"""As the pull-request template runs it: a local store is logged while gate and report run, and
the report step waits for it at its end (a server is logged within evaluate either way)."""
EVALUATE_WAITING = EVALUATE[:-1]
GATE = ("gate", "--no-fail", "--baseline", "none")
REPORT = ("report", "--target", "none")


# --- projects ------------------------------------------------------------------------------------


def write_project(directory: Path, data_section: str, tracking_uri: str | None = None) -> Path:
    directory.mkdir(parents=True)
    uri = tracking_uri or f"sqlite:///{directory / 'mlflow.db'}"
    (directory / "params.yaml").write_text(
        f"{data_section}"
        "train:\n  epochs: 1\n  batch_size: 128\n  device: cpu\n"
        "evaluate:\n  gate: ['accuracy >= 0.0']\n  latency_samples: 50\n"
        f"tracking:\n  enabled: true\n  uri: {uri}\n",
        encoding="utf-8",
    )
    return directory


def write_image_folder(root: Path, classes: int, per_split: dict[str, int]) -> None:
    """Tiny 8x8 PNGs, one colour pattern per class (a real folder for the real decoder)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in per_split.items():
        for c in range(classes):
            folder = root / split / f"class_{c:04d}"
            folder.mkdir(parents=True)
            base = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            for i in range(count):
                noise = rng.integers(0, 24, size=(8, 8, 3), dtype=np.uint8)
                Image.fromarray(base ^ noise).save(folder / f"{i}.png")


def scale_project(work: Path, classes: int, tracking_uri: str | None = None) -> Path:
    per_class_test = SCALE_TEST_IMAGES // classes
    per_split = {
        "train": max(4, per_class_test * 4),
        "val": max(1, per_class_test),
        "test": per_class_test,
    }
    data = work / f"images-{classes}"
    write_image_folder(data, classes, per_split)
    section = f"data:\n  source: imagefolder\n  path: {data}\n  image_size: 8\n"
    return write_project(work / f"project-{classes}", section, tracking_uri)


SERVER_START_TIMEOUT_S = 180


@contextlib.contextmanager
def mlflow_server(work: Path, env: dict[str, str]) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 with a SQLite store under `work`; its URL once
    /health answers. Its process group is stopped on the way out."""
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    store = work / "mlflow-server"
    store.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
         "--artifacts-destination", str(store / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("mlflow server did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@contextlib.contextmanager
def tracking_uri(kind: str, work: Path, env: dict[str, str]) -> Iterator[str | None]:
    """None: each project's own SQLite file; or a running server's URL."""
    if kind == "sqlite":
        yield None
        return
    with mlflow_server(work, env) as url:
        yield url


# --- measurements --------------------------------------------------------------------------------


def pipeline_times(
    project: Path, runs: int, env: dict[str, str], *, waiting: bool = False
) -> dict[str, list[float]]:
    """One training run, then evaluate, gate and report `runs` times, interleaved with the
    `import torch` baseline so that load changes hit every figure alike."""
    timed(cxml("train", "--no-progress"), cwd=project, env=env)
    times: dict[str, list[float]] = {"import torch": [], "evaluate": [], "gate": [], "report": []}
    for _ in range(runs):
        times["import torch"].append(
            timed([sys.executable, "-c", "import torch"], cwd=project, env=env)
        )
        times["evaluate"].append(timed(cxml(*EVALUATE), cwd=project, env=env))
        times["gate"].append(timed(cxml(*GATE), cwd=project, env=env))
        times["report"].append(timed(cxml(*REPORT), cwd=project, env=env))
        if waiting:  # for comparison: evaluate waiting for the store itself (no gate/report)
            waited = timed(cxml(*EVALUATE_WAITING), cwd=project, env=env)
            times.setdefault("evaluate, waiting", []).append(waited)
    return times


def check_eval_metrics_in_store(project: Path) -> None:
    """The project's SQLite store holds the run's `eval.*` metrics: the background logging,
    collected by the report step, did log them."""
    import json

    from mlflow.tracking import MlflowClient

    run_id = json.loads((project / "run.json").read_text(encoding="utf-8"))["run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    logged = sorted(k for k in client.get_run(run_id).data.metrics if k.startswith("eval."))
    if "eval.accuracy" not in logged:
        raise SystemExit(f"the eval.* metrics of run {run_id} are not in {project / 'mlflow.db'}")
    if (project / ".cxml" / "eval-tracking.json").exists():
        raise SystemExit("the report step left the background logging uncollected")
    print(f"  (the store holds {len(logged)} eval.* metrics of run {run_id[:8]})")


def check_eval_metrics_logged(project: Path, server_url: str) -> None:
    """The server holds the training run's `eval.*` metrics: the REST path did log them."""
    import json
    import urllib.request

    run_id = json.loads((project / "run.json").read_text(encoding="utf-8"))["run_id"]
    url = f"{server_url}/api/2.0/mlflow/runs/get?run_id={run_id}"
    with urllib.request.urlopen(url, timeout=30) as answer:
        metrics = json.loads(answer.read())["run"]["data"].get("metrics", [])
    logged = sorted({m["key"] for m in metrics if m["key"].startswith("eval.")})
    if "eval.accuracy" not in logged:
        raise SystemExit(f"evaluate did not log eval.* metrics to {server_url}")
    print(f"  (the server holds {len(logged)} eval.* metrics of run {run_id[:8]})")


def import_profile(project: Path, env: dict[str, str], top: int) -> list[tuple[float, str]]:
    """The heaviest top-level imports of evaluate (cumulative seconds, `-X importtime`)."""
    _, stderr = run_step(
        [sys.executable, "-X", "importtime", "-m", "cxml.evaluate", *EVALUATE[1:]],
        cwd=project,
        env=env,
    )
    entries: list[tuple[float, str]] = []
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(2)) <= 1:  # top level: one space of indent
            entries.append((int(match.group(1)) / 1e6, match.group(3)))
    return sorted(entries, reverse=True)[:top]


def cprofile_top(project: Path, env: dict[str, str], top: int) -> list[tuple[float, str]]:
    """Evaluate's functions by cumulative time (cProfile), cxml's own and the libraries'."""
    stats_file = project / "evaluate.prof"
    run_step(
        [
            sys.executable,
            "-m",
            "cProfile",
            "-o",
            str(stats_file),
            "-m",
            "cxml.evaluate",
            *EVALUATE[1:],
        ],
        cwd=project,
        env=env,
    )
    stats = pstats.Stats(str(stats_file))
    rows: list[tuple[float, str]] = []
    for (filename, line, name), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "cxml" in filename and not name.startswith("<"):
            short = filename.split("site-packages/")[-1].split("src/")[-1]
            rows.append((cumulative, f"{short}:{line}({name})"))
    return sorted(rows, reverse=True)[:top]


def setup_times(runs: int, work: Path) -> tuple[list[float], list[float]]:
    """The setup action into a fresh tool cache (cold), then its cache hit (warm)."""
    cache = work / "tool-cache"
    env = clean_env(
        RUNNER_TOOL_CACHE=str(cache),
        CXML_SETUP_PYTHON=sys.executable,
        CXML_SETUP_EXTRAS="train,report,dvc",
    )
    command = [sys.executable, str(SETUP_SCRIPT)]
    cold = [timed(command, cwd=work, env=env)]
    warm = [timed(command, cwd=work, env=env) for _ in range(runs)]
    return cold, warm


# --- output --------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


def print_pipeline(label: str, times: dict[str, list[float]]) -> float:
    torch_s = median(times["import torch"])
    total = sum(median(times[s]) for s in ("evaluate", "gate", "report"))
    print(f"\n{label}")
    for step, values in times.items():  # "evaluate, waiting" is not part of the total
        spread = f"{min(values):.2f}-{max(values):.2f}"
        print(
            f"  {step:14} {median(values):7.2f} s  ({median(values) / torch_s:5.2f}x import torch;"
            f" runs {spread})"
        )
    print(
        f"  evaluate + gate + report {total:6.2f} s = {total / torch_s:.2f}x import torch"
        " (goal <= 2.2x)"
    )
    return total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-scale", action="store_true", help="skip the 10/1,000-class part")
    parser.add_argument("--no-profile", action="store_true", help="skip importtime/cProfile")
    parser.add_argument("--setup", action="store_true", help="also time the setup action")
    parser.add_argument("--top", type=int, default=12, help="profile entries to print")
    parser.add_argument(
        "--tracking",
        choices=("sqlite", "server"),
        default="sqlite",
        help="MLflow store: a SQLite file per project, or a real `mlflow server` (REST)",
    )
    parser.add_argument(
        "--src",
        type=Path,
        default=None,
        help="run cxml from this src folder (PYTHONPATH), e.g. a copy taken before a change",
    )
    args = parser.parse_args(argv)

    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}; runs: {args.runs}")
    print(f"load average at start: {load()}; tracking: {args.tracking}")
    env = clean_env()
    if args.src is not None:
        env["PYTHONPATH"] = str(args.src.resolve())
    print(f"cxml from: {args.src.resolve() if args.src else 'the installed package'}")
    with (
        tempfile.TemporaryDirectory(prefix="cxml-bench-") as tmp,
        tracking_uri(args.tracking, Path(tmp), env) as uri,
    ):
        work = Path(tmp)
        digits = write_project(work / "digits", "", uri)
        digits_times = pipeline_times(digits, args.runs, env, waiting=uri is None)
        print_pipeline("digits (10 classes, 1 epoch)", digits_times)
        if uri is not None:
            check_eval_metrics_logged(digits, uri)
        else:
            check_eval_metrics_in_store(digits)
        if not args.no_profile:
            print("\nevaluate: heaviest top-level imports (-X importtime, cumulative s)")
            for seconds, module in import_profile(digits, env, args.top):
                print(f"  {seconds:6.2f}  {module}")
            print("\nevaluate: cxml functions by cumulative time (cProfile)")
            for seconds, where in cprofile_top(digits, env, args.top):
                print(f"  {seconds:6.2f}  {where}")
        if not args.no_scale:
            scaled = {}
            for classes in (10, 1000):
                project = scale_project(work, classes, uri)
                scaled[classes] = pipeline_times(project, args.runs, env)
                print_pipeline(
                    f"image folder, {classes} classes, {SCALE_TEST_IMAGES} test images",
                    scaled[classes],
                )
            print("\n1000 / 10 classes (goal <= 1.5x)")
            for step in ("evaluate", "report"):
                ratio = median(scaled[1000][step]) / median(scaled[10][step])
                print(f"  {step:10} {ratio:5.2f}x")
        if args.setup:
            cold, warm = setup_times(args.runs, work)
            print(f"\nsetup action: cold {median(cold):.2f} s, warm {median(warm):.2f} s")
    print(f"\nload average at end: {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

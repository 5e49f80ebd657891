"""A release bundle of a test model, and a real `cxml serve` process on a free loopback port."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from cxml.records import release as bundle
from tests.support.deploy import PYTHON, free_port


def save_release(
    model: Path,
    directory: Path,
    *,
    version: str = "7",
    model_name: str = "cxml-model",
    git_commit: str | None = None,
    metrics: dict[str, float] | None = None,
    serving: bundle.ServingConfig | None = None,
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """The bundle a deploy would ship for `model` as model version `version` (run `run<version>`),
    written to `directory`/<release name>; its directory."""
    digest = bundle.sha256_file(model)
    info = bundle.ReleaseInfo(
        release=bundle.release_name(version, digest),
        model_version=version,
        model_name=model_name,
        run_id=f"run{version}",
        tracking_uri=None,
        git_commit=git_commit,
        created_at="2026-11-25T11:00:00Z",
        model_sha256=digest,
        model_metadata=bundle.read_model_metadata(model),
        metrics={"accuracy": 0.9} if metrics is None else metrics,
        gate_decision="pass",
        serving=serving or bundle.ServingConfig(),
    )
    return bundle.save_bundle(directory / info.release, model, info, extra_files).directory


@dataclass
class ServeProcess:
    """A running `cxml serve`: its base URL, its log file and its process."""

    url: str
    log: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def wait_healthy(served: ServeProcess, timeout_s: float = 60.0) -> None:
    """Until /healthz answers 200; fails with the log if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert served.process.poll() is None, served.log_text()
        try:
            if httpx.get(f"{served.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"cxml serve not healthy after {timeout_s} s:\n{served.log_text()}")


@contextmanager
def running_serve(
    argv: Sequence[str], log: Path, *, timeout_s: float = 60.0
) -> Iterator[ServeProcess]:
    """`python -m cxml.serve *argv --port <free>`, healthy; SIGTERM on the way out (then
    `process.returncode` says how it stopped)."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [PYTHON, "-m", "cxml.serve", *argv, "--port", str(port)], stdout=out, stderr=out
        )
    served = ServeProcess(f"http://127.0.0.1:{port}", log, process)
    try:
        wait_healthy(served, timeout_s)
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

"""Checkpoints: cxml's own load without unpickling code, anything else is refused; one training
per directory at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import FAST_PARAMS, PYTHON, write_params

CHECKPOINTS = Path(".cxml/checkpoints")


def train(workdir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "cxml.train", "--no-progress", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


class RunsACommand:
    """What an attacker puts in a checkpoint: unpickling it calls os.system."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def test_a_checkpoint_that_would_run_code_is_refused_and_never_runs(workdir: Path) -> None:
    import torch

    marker = workdir / "pwned"
    (workdir / CHECKPOINTS).mkdir(parents=True)
    torch.save(
        {"epoch": 1, "history": [], "model": RunsACommand(f"touch {marker}")},
        workdir / CHECKPOINTS / "last.pt",
    )
    write_params(workdir, FAST_PARAMS)
    result = train(workdir, "--resume")
    assert not marker.exists(), "unpickling the checkpoint ran the attacker's command"
    assert result.returncode == 2, result.stderr
    assert error_lines(result) == [
        f"error: {CHECKPOINTS / 'last.pt'}: checkpoint refused (it holds Python objects other "
        "than tensors and plain data); delete it and train without --resume"
    ]
    assert "Traceback" not in result.stderr
    assert not (workdir / "model" / "model.pt").exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04 truncated zip"])
def test_a_damaged_checkpoint_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    from cxml.core.errors import TrainingError
    from cxml.ml.checkpoint import read_checkpoint

    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with pytest.raises(TrainingError, match="checkpoint refused") as caught:
        read_checkpoint(path)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(("optimizer", "scheduler"), [("sgd", "cosine"), ("adamw", "none")])
def test_cxml_checkpoints_load_with_weights_only(
    tmp_path: Path, optimizer: str, scheduler: str
) -> None:
    """Every optimizer/scheduler state cxml saves is tensors and plain data."""
    import torch

    from cxml.core.config import TrainConfig
    from cxml.ml.checkpoint import EpochStats, TrainState, read_checkpoint, save_checkpoint
    from cxml.ml.fit import make_optimizer, make_scheduler
    from cxml.ml.models import ModelMetadata, build_model

    cfg = TrainConfig(optimizer=optimizer, scheduler=scheduler)  # type: ignore[arg-type]
    model = build_model("small_cnn", 3, 1)
    opt = make_optimizer(cfg, model, torch.device("cpu"))
    sched = make_scheduler(cfg, opt)
    model(torch.zeros(2, 1, 8, 8)).sum().backward()
    opt.step()
    sched.step()
    metadata = ModelMetadata("small_cnn", 3, ("a", "b", "c"), (1, 8, 8), (0.5,), (0.2,), "0")
    stats = EpochStats(1, 0.5, 0.8, 0.6, 0.7, 0.05, 1.0)
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, opt, sched, None, metadata, TrainState(1, [stats], "run-1"))
    payload = read_checkpoint(path)  # weights_only=True inside
    assert payload["epoch"] == 1 and payload["run_id"] == "run-1"
    assert payload["history"][0]["val_accuracy"] == 0.7


def test_a_second_training_in_the_same_directory_refuses_until_the_first_is_gone(
    workdir: Path,
) -> None:
    write_params(workdir, "train:\n  epochs: 500\n  batch_size: 32\ntracking:\n  enabled: false\n")
    lock = workdir / CHECKPOINTS / "train.lock"
    first = subprocess.Popen(
        [PYTHON, "-m", "cxml.train", "--no-progress"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None, "the first training ended early"
            assert time.monotonic() < deadline, "the first training never took the lock"
            time.sleep(0.05)

        second = train(workdir, "--epochs", "1", timeout=120)
        assert second.returncode == 3, second.stderr
        assert len(error_lines(second)) == 1 and error_lines(second)[0].startswith(
            f"error: {CHECKPOINTS}: another training (pid {first.pid}) is running here"
        )
        assert "Traceback" not in second.stderr
        assert first.poll() is None, "the refused training disturbed the first one"

        first.send_signal(signal.SIGKILL)  # a crash: no cleanup code runs
        first.wait(timeout=30)
        third = train(workdir, "--epochs", "1")
        assert third.returncode == 0, third.stderr  # the kernel freed the dead one's lock
        assert (workdir / "model" / "model.pt").exists()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)

"""Helpers for tests that watch a training process."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def wait_for_checkpoint_epoch(
    path: Path, epoch: int, process: subprocess.Popen[str], timeout: float = 120
) -> None:
    import torch

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "training ended before it could be killed"
        if path.exists():
            try:
                if torch.load(path, map_location="cpu", weights_only=False)["epoch"] >= epoch:
                    return
            except Exception:
                pass  # caught mid-rename; try again
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")

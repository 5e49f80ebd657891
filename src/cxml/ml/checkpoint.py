"""Training state saved after every epoch, so `--resume` continues after a kill."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxml.core import console, files
from cxml.core.errors import EXIT_INPUT, TrainingError
from cxml.ml.distributed import DistContext

if TYPE_CHECKING:
    import torch

    from cxml.ml.models import ModelMetadata

CHECKPOINT_NAME = "last.pt"
LOCK_NAME = "train.lock"


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float


@dataclass
class TrainState:
    """What a checkpoint holds besides the tensors: where training stands."""

    epoch: int
    history: list[EpochStats]
    run_id: str | None


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    metadata: ModelMetadata,
    state: TrainState,
) -> None:
    import torch

    payload = {
        "epoch": state.epoch,
        "history": [asdict(s) for s in state.history],
        "run_id": state.run_id,
        "params_hash": metadata.params_hash,
        "data_hash": metadata.data_hash,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    with files.atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    metadata: ModelMetadata,
    ctx: DistContext,
) -> TrainState:
    if not path.exists():
        if ctx.is_main:
            console.info(f"resume: no checkpoint at {path}; starting from epoch 1")
        return TrainState(epoch=0, history=[], run_id=None)
    payload = read_checkpoint(path)
    for key in ("params_hash", "data_hash"):
        if payload.get(key) != getattr(metadata, key):
            what = "params" if key == "params_hash" else "data"
            raise TrainingError(
                f"{path}: the checkpoint was made with other {what}; train without --resume "
                f"(or delete {path.parent}) to start over",
                exit_code=EXIT_INPUT,
            )
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        if scaler is not None and payload.get("scaler"):
            scaler.load_state_dict(payload["scaler"])
        history = [EpochStats(**row) for row in payload["history"]]
        epoch = int(payload["epoch"])
        run_id = payload.get("run_id")
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError):
        raise _unusable(path, "its contents do not fit this model and optimizer") from None
    if ctx.is_main:
        console.info(f"resume: continuing after epoch {epoch} from {path}")
    return TrainState(
        epoch=epoch, history=history, run_id=run_id if isinstance(run_id, str) else None
    )


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's tensors and plain data, never its code.

    `weights_only=True` unpickles tensors, numbers, strings and containers only: a checkpoint
    from a shared volume or a cache that holds anything else (a `__reduce__` that runs a
    command) is refused before any of it runs. cxml's own checkpoints hold nothing else.
    """
    import pickle

    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise _unusable(path, "it holds Python objects other than tensors and plain data") from None
    except Exception:
        raise _unusable(path, "it is damaged or not a torch file") from None
    if not isinstance(payload, dict):
        raise _unusable(path, "it is not a cxml checkpoint")
    return payload


def _unusable(path: Path, why: str) -> TrainingError:
    # The user must delete it: bad input (exit 2), not a runtime failure.
    return TrainingError(
        f"{path}: checkpoint refused ({why}); delete it and train without --resume",
        exit_code=EXIT_INPUT,
    )


@contextmanager
def training_lock(checkpoint_dir: Path) -> Iterator[None]:
    """Hold `<checkpoint_dir>/train.lock` for a whole training, or refuse if another holds it.

    Two trainings in one directory would overwrite each other's checkpoints and outputs. An
    flock belongs to the open file, so the kernel frees it when the process ends in any way
    (exit, crash, SIGKILL): a stale lock cannot outlive its holder. The file itself stays (a
    removed lock file could be locked by one process while another creates a new one).
    """
    import fcntl

    path = checkpoint_dir / LOCK_NAME
    try:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+", encoding="utf-8")  # "a+": never truncate the holder's pid
    except OSError as exc:
        raise TrainingError(
            f"{path}: cannot create the training lock ({exc.strerror}); "
            "make outputs.checkpoint_dir a writable directory",
            exit_code=EXIT_INPUT,
        ) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingError(
                f"{checkpoint_dir}: another training ({_holder(handle)}) is running here and "
                "writes the same checkpoints and outputs; wait for it to end or stop it, or give "
                "this one its own outputs (outputs.checkpoint_dir, outputs.model, ...)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


def _holder(handle: Any) -> str:
    handle.seek(0)
    pid = handle.read(20).strip()
    return f"pid {pid}" if pid.isdigit() else "pid unknown"

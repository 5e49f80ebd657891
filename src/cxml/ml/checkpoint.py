"""Training state saved after every epoch, so `--resume` continues after a kill."""

from __future__ import annotations

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
    import torch

    if not path.exists():
        if ctx.is_main:
            console.info(f"resume: no checkpoint at {path}; starting from epoch 1")
        return TrainState(epoch=0, history=[], run_id=None)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise TrainingError(  # the user must delete it: bad input, not a runtime failure
            f"{path}: checkpoint cannot be read ({exc}); delete it and train without --resume",
            exit_code=EXIT_INPUT,
        ) from None
    for key in ("params_hash", "data_hash"):
        if payload.get(key) != getattr(metadata, key):
            what = "params" if key == "params_hash" else "data"
            raise TrainingError(
                f"{path}: the checkpoint was made with other {what}; train without --resume "
                f"(or delete {path.parent}) to start over",
                exit_code=EXIT_INPUT,
            )
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    if scaler is not None and payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    history = [EpochStats(**row) for row in payload["history"]]
    if ctx.is_main:
        console.info(f"resume: continuing after epoch {payload['epoch']} from {path}")
    return TrainState(epoch=int(payload["epoch"]), history=history, run_id=payload.get("run_id"))

"""The training loop: optimiser, scheduler, epochs, validation, checkpoints (`cxml train` calls fit)."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cxml.core import console
from cxml.core.config import Params, TrainConfig
from cxml.core.errors import TrainingError
from cxml.ml.batches import BatchSource, EpochBatches, choose_data_path, to_device
from cxml.ml.checkpoint import (
    CHECKPOINT_NAME,
    EpochStats,
    TrainState,
    load_checkpoint,
    save_checkpoint,
)
from cxml.ml.device import Precision, choose_precision
from cxml.ml.distributed import DistContext
from cxml.ml.pixels import IMAGE_INPUT_SCALE

if TYPE_CHECKING:
    import torch

    from cxml.ml.data import Dataset, Split
    from cxml.ml.models import ModelMetadata


class RunTracker(Protocol):
    """Where fit reports the run (tracking.runs.RunLogger): started once, told every epoch."""

    run_id: str | None

    def start(self, resume_run_id: str | None = None) -> None: ...

    def log_epoch(self, stats: dict[str, float]) -> None: ...


class NoTracking:
    """A RunTracker that records nothing (tracking off, or a rank other than the main one)."""

    run_id: str | None = None

    def start(self, resume_run_id: str | None = None) -> None:
        del resume_run_id

    def log_epoch(self, stats: dict[str, float]) -> None:
        del stats


@dataclass
class FitResult:
    model: torch.nn.Module
    history: list[EpochStats]
    run_id: str | None
    seconds: float


# --- model, optimiser, scheduler ----------------------------------------------------------------


def make_optimizer(
    cfg: TrainConfig, model: torch.nn.Module, device: torch.device
) -> torch.optim.Optimizer:
    import torch

    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.ndim <= 1 or name.endswith(".bias") else decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # Fused kernels on GPU: one launch per step instead of one per parameter.
    fused = True if device.type == "cuda" else None
    if cfg.optimizer == "sgd":
        nesterov = cfg.momentum > 0
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov, fused=fused
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, fused=fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused)


def make_scheduler(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    import torch

    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def build_training_model(params: Params, data: Dataset, device: torch.device) -> torch.nn.Module:
    """The architecture in params.yaml, with its starting weights, on `device`."""
    import torch

    from cxml.ml.models import build_model, load_weights_file

    model = build_model(
        params.model.architecture,
        data.num_classes,
        data.input_size[0],
        params.model.hidden_sizes,
    )
    if params.model.weights:
        load_weights_file(model, params.model.weights)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def wrap_for_training(
    model: torch.nn.Module, cfg: TrainConfig, device: torch.device, ctx: DistContext
) -> torch.nn.Module:
    """DistributedDataParallel across processes and torch.compile, as configured."""
    import torch

    train_model: torch.nn.Module = model
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        train_model = torch.compile(train_model, mode=cfg.compile_mode)  # type: ignore[assignment]
    return train_model


# --- the training loop --------------------------------------------------------------------------


def fit(
    params: Params,
    data: Dataset,
    metadata: ModelMetadata,
    device: torch.device,
    ctx: DistContext,
    *,
    resume: bool,
    show_progress: bool,
    tracker: RunTracker | None = None,
) -> FitResult:
    import torch

    from cxml.ml.distributed import barrier, same_on_all_ranks

    cfg = params.train
    tracker = tracker or NoTracking()
    model = build_training_model(params, data, device)
    optimizer = make_optimizer(cfg, model, device)
    scheduler = make_scheduler(cfg, optimizer)
    precision = choose_precision(cfg, device)
    scaler = torch.amp.GradScaler("cuda") if precision.use_grad_scaler else None

    checkpoint_path = Path(params.outputs.checkpoint_dir) / CHECKPOINT_NAME
    state = TrainState(epoch=0, history=[], run_id=None)
    if resume:
        state = load_checkpoint(checkpoint_path, model, optimizer, scheduler, scaler, metadata, ctx)
    if not same_on_all_ranks(state.epoch, ctx):
        raise TrainingError(
            f"the ranks resumed from different epochs in {checkpoint_path}: is another training "
            "writing there? stop it, or give this run its own outputs.checkpoint_dir"
        )
    train_model = wrap_for_training(model, cfg, device, ctx)
    tracker.start(resume_run_id=state.run_id)
    state.run_id = tracker.run_id

    data_path, why = choose_data_path(cfg, data, device)
    if ctx.is_main:
        console.info(f"data path: {data_path} ({why})")
    train_batches = BatchSource(data.train, data_path, device, cfg, ctx)
    val_split = to_device(data.val, device) if data_path == "resident" else data.val
    mean = torch.tensor(metadata.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(metadata.std, device=device).view(1, -1, 1, 1)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    started = time.perf_counter() - sum(s.seconds for s in state.history)

    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        epoch_start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        sums = train_one_epoch(
            train_model,
            train_batches.epoch(epoch),
            params,
            epoch,
            optimizer,
            scaler,
            precision,
            loss_fn,
            mean,
            std,
            device,
            ctx,
            progress=show_progress and ctx.is_main,
            input_scale=metadata.input_scale,
        )
        scheduler.step()
        val_sums = evaluate_loss_accuracy(
            model,
            val_split,
            cfg.batch_size * 2,
            precision,
            loss_fn,
            mean,
            std,
            device,
            ctx,
            input_scale=metadata.input_scale,
        )
        stats = epoch_stats(epoch, sums, val_sums, lr, time.perf_counter() - epoch_start)
        check_finite(stats, cfg)
        state.history.append(stats)
        state.epoch = epoch
        if ctx.is_main:
            console.info(format_epoch(stats, cfg.epochs))
            save_checkpoint(checkpoint_path, model, optimizer, scheduler, scaler, metadata, state)
            tracker.log_epoch(asdict(stats))
        barrier(ctx)

    check_ranks_agree(model, ctx)
    return FitResult(
        model=model,
        history=state.history,
        run_id=tracker.run_id,
        seconds=time.perf_counter() - started,
    )


def check_finite(stats: EpochStats, cfg: TrainConfig) -> None:
    if not (math.isfinite(stats.loss) and math.isfinite(stats.val_loss)):
        raise TrainingError(
            f"the training loss became {stats.loss} in epoch {stats.epoch}; training stopped and no model was "
            f"written: lower train.lr (now {cfg.lr}) or check the data"
        )


def check_ranks_agree(model: torch.nn.Module, ctx: DistContext) -> None:
    """After distributed training every rank must hold the same weights."""
    if not ctx.enabled:
        return
    from cxml.ml.distributed import weights_in_sync

    if not weights_in_sync(model, ctx):
        raise TrainingError(
            "the ranks ended with different weights; this is a bug, please report it"
        )
    if ctx.is_main:
        console.info(f"distributed: weights identical on all {ctx.world_size} ranks")


def train_one_epoch(
    model: torch.nn.Module,
    batches: EpochBatches,
    params: Params,
    epoch: int,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    precision: Precision,
    loss_fn: torch.nn.Module,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    ctx: DistContext,
    *,
    progress: bool,
    input_scale: float = IMAGE_INPUT_SCALE,
) -> torch.Tensor:
    """One pass over this rank's share; returns [loss_sum, correct, count] summed over all ranks.

    `input_scale` is the model file's (ml/pixels.py); the default is an image model's."""
    import torch

    from cxml.ml.batches import normalise, random_crop, random_flip
    from cxml.ml.distributed import all_reduce_sum

    cfg = params.train
    model.train()
    generator = torch.Generator(device=device).manual_seed(cfg.seed * 7919 + epoch * 31 + ctx.rank)
    # Accumulated on the device and read once per epoch: no host sync inside the step.
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    with progress_bar(progress, batches.count, f"epoch {epoch}/{cfg.epochs}") as advance:
        for images, labels in batches:
            images = random_crop(images, params.data.crop_padding, generator)
            if params.data.flip:
                images = random_flip(images, generator)
            inputs = normalise(images, mean, std, input_scale)
            if device.type == "cuda":
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with precision.autocast(device):
                logits = model(inputs)
                loss = loss_fn(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            count = torch.tensor(float(labels.shape[0]), device=device, dtype=torch.float64)
            correct = (logits.argmax(1) == labels).sum().double()
            sums += torch.stack([loss.detach().double() * count, correct, count])
            advance()
    return all_reduce_sum(sums, ctx)


def evaluate_loss_accuracy(
    model: torch.nn.Module,
    split: Split,
    batch_size: int,
    precision: Precision,
    loss_fn: torch.nn.Module,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    ctx: DistContext,
    *,
    input_scale: float = IMAGE_INPUT_SCALE,
) -> torch.Tensor:
    import torch

    from cxml.ml.batches import normalise
    from cxml.ml.distributed import all_reduce_sum

    model.eval()
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    mine = torch.arange(ctx.rank, len(split), ctx.world_size, device=split.images.device)
    with torch.inference_mode():
        for start in range(0, int(mine.shape[0]), batch_size):
            index = mine[start : start + batch_size]
            images = split.images[index].to(device, non_blocking=True)
            inputs = normalise(images, mean, std, input_scale)
            if device.type == "cuda":
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            labels = split.labels[index].to(device, non_blocking=True)
            with precision.autocast(device):
                logits = model(inputs).float()
            sums += torch.stack(
                [
                    torch.nn.functional.cross_entropy(logits, labels, reduction="sum").double(),
                    (logits.argmax(1) == labels).sum().double(),
                    torch.tensor(float(labels.shape[0]), device=device, dtype=torch.float64),
                ]
            )
    del loss_fn  # validation reports plain cross-entropy, without label smoothing
    return all_reduce_sum(sums.clone(), ctx)


def epoch_stats(
    epoch: int, train_sums: torch.Tensor, val_sums: torch.Tensor, lr: float, seconds: float
) -> EpochStats:
    loss_sum, correct, count = (float(v) for v in train_sums.tolist())
    val_loss_sum, val_correct, val_count = (float(v) for v in val_sums.tolist())
    return EpochStats(
        epoch=epoch,
        loss=loss_sum / max(count, 1.0),
        accuracy=correct / max(count, 1.0),
        val_loss=val_loss_sum / max(val_count, 1.0),
        val_accuracy=val_correct / max(val_count, 1.0),
        lr=lr,
        seconds=seconds,
    )


def format_epoch(stats: EpochStats, epochs: int) -> str:
    return (
        f"epoch {stats.epoch}/{epochs}  loss {stats.loss:.4f}  acc {stats.accuracy:.4f}  "
        f"val_loss {stats.val_loss:.4f}  val_acc {stats.val_accuracy:.4f}  lr {stats.lr:.4g}  {stats.seconds:.1f}s"
    )


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, description: str) -> Iterator[Callable[[], None]]:
    if not enabled:
        yield lambda: None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=description, leave=False, file=sys.stderr, dynamic_ncols=True)
    try:
        yield lambda: bar.update(1)
    finally:
        bar.close()

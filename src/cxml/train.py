"""`python -m cxml.train`: train the classifier in params.yaml and write model, metrics and plots."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxml import __version__
from cxml.core import console, files, ghactions
from cxml.core.config import Params, TrainConfig, load_params, validate_ranges
from cxml.core.errors import TrainingError
from cxml.ml.batches import BatchSource, EpochBatches, choose_data_path, to_device
from cxml.ml.checkpoint import (
    CHECKPOINT_NAME,
    EpochStats,
    TrainState,
    load_checkpoint,
    save_checkpoint,
)
from cxml.ml.device import (
    Precision,
    choose_device,
    choose_precision,
    configure_torch,
    describe_device,
    use_compile_cache,
)
from cxml.ml.distributed import DistContext

if TYPE_CHECKING:
    import torch

    from cxml.ml.data import Dataset, Split
    from cxml.ml.models import ModelMetadata


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cxml train", description=__doc__)
    parser.add_argument("--params", default=None, help="params file (default: params.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument(
        "--device", default=None, help="override train.device (auto, cpu, cuda, mps)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None)
    progress.add_argument("--no-progress", dest="progress", action="store_false")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    params = apply_overrides(load_params(args.params), args)
    validate_ranges(params)
    use_compile_cache(params.train)

    import torch

    from cxml.ml.data import load_dataset
    from cxml.ml.distributed import init_distributed, shutdown

    device = choose_device(params.train.device)
    ctx = init_distributed(device.type == "cuda")
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    try:
        configure_torch(params.train, device)
        data = load_dataset(params.data)
        say = console.info if ctx.is_main else _silent
        say(
            f"data: {data.description}; train {len(data.train)}, val {len(data.val)}, test {len(data.test)}"
        )
        say(
            f"device: {describe_device(device)}"
            + (f", {ctx.world_size} processes ({ctx.backend})" if ctx.enabled else "")
        )
        metadata = build_metadata(params, data)
        result = fit(
            params,
            data,
            metadata,
            device,
            ctx,
            resume=args.resume,
            show_progress=want_progress(args.progress),
            tracking=not args.no_tracking,
        )
        if ctx.is_main:
            write_outputs(params, result, metadata)
    finally:
        shutdown(ctx)
    return 0


def _silent(message: str) -> None:
    del message


def apply_overrides(params: Params, args: argparse.Namespace) -> Params:
    import dataclasses

    train = params.train
    if args.device:
        train = dataclasses.replace(train, device=args.device)
    else:
        from cxml.core import env

        if env.get(env.CXML_DEVICE):
            train = dataclasses.replace(train, device=env.get(env.CXML_DEVICE) or "auto")
    if args.epochs is not None:
        train = dataclasses.replace(train, epochs=args.epochs)
    return dataclasses.replace(params, train=train)


def want_progress(flag: bool | None) -> bool:
    """A progress bar on a terminal, one plain line per epoch in CI logs."""
    return sys.stderr.isatty() if flag is None else flag


# --- model, optimiser, metadata -----------------------------------------------------------------


def build_metadata(params: Params, data: Dataset) -> ModelMetadata:
    from cxml.ml.models import ModelMetadata

    mean, std = data.channel_stats()
    return ModelMetadata(
        architecture=params.model.architecture,
        num_classes=data.num_classes,
        class_names=data.class_names,
        input_size=data.input_size,
        mean=mean,
        std=std,
        cxml_version=__version__,
        git_commit=current_git_commit(),
        params_hash=params.digest(),
        data_hash=data.content_hash,
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def current_git_commit() -> str | None:
    from cxml.core import env

    if env.get(env.GITHUB_SHA):
        return env.get(env.GITHUB_SHA)
    import subprocess

    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False, timeout=10
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


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


# --- the training loop --------------------------------------------------------------------------


@dataclass
class FitResult:
    model: torch.nn.Module
    history: list[EpochStats]
    run_id: str | None
    model_version: str | None
    seconds: float


def fit(
    params: Params,
    data: Dataset,
    metadata: ModelMetadata,
    device: torch.device,
    ctx: DistContext,
    *,
    resume: bool,
    show_progress: bool,
    tracking: bool,
) -> FitResult:
    import torch

    from cxml.ml.models import build_model, load_weights_file
    from cxml.tracking.runs import RunLogger

    cfg = params.train
    model = build_model(params.model.architecture, data.num_classes, data.input_size[0])
    if params.model.weights:
        load_weights_file(model, params.model.weights)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model, device)
    scheduler = make_scheduler(cfg, optimizer)
    precision = choose_precision(cfg, device)
    scaler = torch.amp.GradScaler("cuda") if precision.use_grad_scaler else None

    checkpoint_path = Path(params.outputs.checkpoint_dir) / CHECKPOINT_NAME
    state = TrainState(epoch=0, history=[], run_id=None)
    if resume:
        state = load_checkpoint(checkpoint_path, model, optimizer, scheduler, scaler, metadata, ctx)
    from cxml.ml.distributed import same_on_all_ranks

    if not same_on_all_ranks(state.epoch, ctx):
        raise TrainingError(
            f"the ranks resumed from different epochs in {checkpoint_path}: is another training "
            "writing there? stop it, or give this run its own outputs.checkpoint_dir"
        )

    train_model: torch.nn.Module = model
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        train_model = torch.compile(train_model, mode=cfg.compile_mode)  # type: ignore[assignment]

    logger = RunLogger(params, enabled=tracking and params.tracking.enabled and ctx.is_main)
    logger.start(resume_run_id=state.run_id)
    state.run_id = logger.run_id

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
        )
        scheduler.step()
        val_sums = evaluate_loss_accuracy(
            model, val_split, cfg.batch_size * 2, precision, loss_fn, mean, std, device, ctx
        )
        stats = epoch_stats(epoch, sums, val_sums, lr, time.perf_counter() - epoch_start)
        if not (math.isfinite(stats.loss) and math.isfinite(stats.val_loss)):
            raise TrainingError(
                f"the training loss became {stats.loss} in epoch {epoch}; training stopped and no model was "
                f"written: lower train.lr (now {cfg.lr}) or check the data"
            )
        state.history.append(stats)
        state.epoch = epoch
        if ctx.is_main:
            console.info(format_epoch(stats, cfg.epochs))
            save_checkpoint(checkpoint_path, model, optimizer, scheduler, scaler, metadata, state)
            logger.log_epoch(asdict(stats))
        from cxml.ml.distributed import barrier

        barrier(ctx)

    if ctx.enabled:
        from cxml.ml.distributed import weights_in_sync

        if not weights_in_sync(model, ctx):
            raise TrainingError(
                "the ranks ended with different weights; this is a bug, please report it"
            )
        if ctx.is_main:
            console.info(f"distributed: weights identical on all {ctx.world_size} ranks")
    result = FitResult(
        model=model,
        history=state.history,
        run_id=logger.run_id,
        model_version=None,
        seconds=time.perf_counter() - started,
    )
    if ctx.is_main:
        result.model_version = logger.finish(model, metadata, data)
    return result


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
) -> torch.Tensor:
    """One pass over this rank's share; returns [loss_sum, correct, count] summed over all ranks."""
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
            inputs = normalise(images, mean, std)
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
            inputs = normalise(images, mean, std)
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


# --- outputs ---------------------------------------------------------------------------------------


def train_metrics(history: Sequence[EpochStats]) -> dict[str, float | int]:
    """The last epoch's numbers; wall-clock times stay in plots/run.json so reruns compare equal."""
    last = history[-1]
    return {
        "epochs": last.epoch,
        "loss": round(last.loss, 6),
        "accuracy": round(last.accuracy, 6),
        "val_loss": round(last.val_loss, 6),
        "val_accuracy": round(last.val_accuracy, 6),
    }


def write_outputs(params: Params, result: FitResult, metadata: ModelMetadata) -> None:
    from cxml.ml.models import save_model_file
    from cxml.tracking.runs import redact_uri, resolve_tracking_uri

    out = params.outputs
    save_model_file(out.model, result.model, metadata)
    files.write_json(out.train_metrics, train_metrics(result.history))
    header = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
    rows = [
        [
            s.epoch,
            f"{s.loss:.6f}",
            f"{s.accuracy:.6f}",
            f"{s.val_loss:.6f}",
            f"{s.val_accuracy:.6f}",
            f"{s.lr:.6g}",
            f"{s.seconds:.3f}",
        ]
        for s in result.history
    ]
    files.write_csv(out.train_plot, header, rows)
    run_info = {
        "run_id": result.run_id,
        "tracking_uri": redact_uri(resolve_tracking_uri(params.tracking.uri))
        if result.run_id
        else None,
        "experiment": params.tracking.experiment,
        "model_name": params.tracking.model_name,
        "model_version": result.model_version,
        "model_path": out.model,
        "git_commit": metadata.git_commit,
        "epochs": len(result.history),
        "train_seconds": round(result.seconds, 3),
    }
    files.write_json(out.run_info, run_info)
    console.info(f"model: {out.model}  metrics: {out.train_metrics}  plots: {out.train_plot}")
    ghactions.set_output("run-id", result.run_id or "")
    ghactions.set_output("model-path", out.model)
    ghactions.set_output("metrics-file", str(out.train_metrics))
    ghactions.set_output("model-version", result.model_version or "")


if __name__ == "__main__":
    from cxml.core.console import run_entry_point

    raise SystemExit(run_entry_point(main))

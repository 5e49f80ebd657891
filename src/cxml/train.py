"""`python -m cxml.train`: train the classifier in params.yaml and write model, metrics and plots."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cxml import __version__
from cxml.core import console, files, ghactions
from cxml.core.config import OutputsConfig, Params, load_params, validate_ranges
from cxml.gate.decide import check_gate_settings
from cxml.ml.checkpoint import EpochStats
from cxml.ml.device import choose_device, configure_torch, describe_device, use_compile_cache
from cxml.ml.distributed import DistContext
from cxml.ml.fit import FitResult, fit
from cxml.records.metrics import write_metrics
from cxml.records.run import RunRecord, write_run

if TYPE_CHECKING:
    import torch

    from cxml.ml.data import Dataset
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
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help=console.PROGRESS_HELP,
    )
    progress.add_argument(
        "--no-progress", dest="progress", action="store_false", help=console.NO_PROGRESS_HELP
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    params = apply_overrides(load_params(args.params), args)
    validate_ranges(params)
    check_gate_settings(params)  # a typo in a gate rule fails now, not after training
    params.outputs.check_writable()
    tracked = tracking_available(params, args)
    use_compile_cache(params.train)
    with hold_training_lock(params.outputs):
        train(params, args, tracked=tracked)
    return 0


def tracking_available(params: Params, args: argparse.Namespace) -> bool:
    """Whether to log to MLflow; an unreachable server fails in seconds, not after minutes of
    retries (TrackingError), unless `tracking.required: false` makes tracking optional."""
    from cxml.core.errors import TrackingError
    from cxml.core.redact import redact_uri
    from cxml.tracking.client import resolve_tracking_uri, unreachable_reason

    cfg = params.tracking
    if args.no_tracking or not cfg.enabled:
        return False
    uri = resolve_tracking_uri(cfg.uri)
    reason = unreachable_reason(uri)
    if reason is None:
        return True
    problem = f"MLflow tracking server {redact_uri(uri)} is not reachable ({reason})"
    if cfg.required:
        raise TrackingError(
            f"{problem}; start it or fix MLFLOW_TRACKING_URI (or tracking.uri), or set "
            "tracking.required: false in params.yaml to train without tracking"
        )
    console.warn(f"{problem}; tracking.required is false, so training goes on without tracking")
    return False


def train(params: Params, args: argparse.Namespace, *, tracked: bool) -> None:
    """Load the data, fit, and (on the main process) log the run and write the outputs."""
    from cxml.ml.data import load_dataset
    from cxml.ml.distributed import shutdown
    from cxml.tracking.runs import RunLogger

    device, ctx = start_processes(params)
    try:
        configure_torch(params.train, device)
        data = load_dataset(params.data)
        describe_run(data, device, ctx)
        metadata = build_metadata(params, data)
        run_logger = RunLogger(params, enabled=tracked and ctx.is_main)
        epochs = f"training: {params.train.epochs} epochs"
        with ghactions.log_group(epochs, enabled=ctx.is_main):  # folded in the Actions log
            result = fit(
                params,
                data,
                metadata,
                device,
                ctx,
                resume=args.resume,
                show_progress=want_progress(args.progress),
                tracker=run_logger,
            )
        if ctx.is_main:
            model_version = run_logger.finish(result.model, metadata, data)
            record = run_record(params, result, metadata, model_version, run_logger.experiment_id)
            write_outputs(params.outputs, result, metadata, record)
    finally:
        shutdown(ctx)


def hold_training_lock(out: OutputsConfig) -> AbstractContextManager[None]:
    """The directory's training lock, held by the first process (torchrun starts one per GPU)."""
    from cxml.ml.checkpoint import training_lock
    from cxml.ml.distributed import first_process

    return training_lock(Path(out.checkpoint_dir)) if first_process() else nullcontext()


def start_processes(params: Params) -> tuple[torch.device, DistContext]:
    """The device, and the process group when started by torchrun (one GPU per process)."""
    import torch

    from cxml.ml.distributed import init_distributed

    device = choose_device(params.train.device)
    ctx = init_distributed(device.type == "cuda")
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    return device, ctx


def describe_run(data: Dataset, device: torch.device, ctx: DistContext) -> None:
    if not ctx.is_main:
        return
    console.info(
        f"data: {data.description}; train {len(data.train)}, val {len(data.val)}, test {len(data.test)}"
    )
    console.info(
        f"device: {describe_device(device)}"
        + (f", {ctx.world_size} processes ({ctx.backend})" if ctx.enabled else "")
    )


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
    return console.want_progress(flag)


# --- metadata and outputs ------------------------------------------------------------------------


def build_metadata(params: Params, data: Dataset) -> ModelMetadata:
    from cxml.core.git import current_commit
    from cxml.ml.models import ModelMetadata
    from cxml.ml.tabular import metadata_fields

    mean, std = data.channel_stats()
    return ModelMetadata(
        architecture=params.model.architecture,
        num_classes=data.num_classes,
        class_names=data.class_names,
        input_size=data.input_size,
        mean=mean,
        std=std,
        cxml_version=__version__,
        git_commit=current_commit(),
        params_hash=params.digest(),
        data_hash=data.content_hash,
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **metadata_fields(params.model, data),
    )


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


def write_outputs(
    out: OutputsConfig, result: FitResult, metadata: ModelMetadata, record: RunRecord
) -> None:
    """The model file, metrics/train.json, plots/train.csv and run.json; then the step outputs."""
    from cxml.ml.models import save_model_file

    save_model_file(out.model, result.model, metadata)
    write_metrics(out.train_metrics, train_metrics(result.history))
    write_train_plot(out, result.history)
    write_run(out.run_info, record)
    console.info(f"model: {out.model}  metrics: {out.train_metrics}  plots: {out.train_plot}")
    ghactions.set_output("run-id", record.run_id or "")
    ghactions.set_output("model-path", out.model)
    ghactions.set_output("metrics-file", str(out.train_metrics))
    ghactions.set_output("model-version", record.model_version or "")


def write_train_plot(out: OutputsConfig, history: Sequence[EpochStats]) -> None:
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
        for s in history
    ]
    files.write_csv(out.train_plot, header, rows)


def run_record(
    params: Params,
    result: FitResult,
    metadata: ModelMetadata,
    model_version: str | None,
    experiment_id: str | None,
) -> RunRecord:
    """run.json: the MLflow run and registered version (tracking URI without credentials)."""
    from cxml.core.redact import redact_uri
    from cxml.tracking.client import resolve_tracking_uri

    tracked = result.run_id is not None
    return RunRecord(
        run_id=result.run_id,
        tracking_uri=redact_uri(resolve_tracking_uri(params.tracking.uri)) if tracked else None,
        experiment=params.tracking.experiment,
        experiment_id=experiment_id if tracked else None,
        model_name=params.tracking.model_name,
        model_version=model_version,
        model_path=params.outputs.model,
        git_commit=metadata.git_commit,
        epochs=len(result.history),
        train_seconds=round(result.seconds, 3),
    )


if __name__ == "__main__":
    from cxml.core.console import run_entry_point

    raise SystemExit(run_entry_point(main))

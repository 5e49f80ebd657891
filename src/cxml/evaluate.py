"""`python -m cxml.evaluate`: test-split metrics and plots, baseline comparison and the gate."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cxml.core import console, files
from cxml.core.config import EvaluateConfig, OutputsConfig, Params, load_params, validate_ranges
from cxml.gate.decide import (
    add_gate_arguments,
    check_gate_settings,
    find_baseline,
    gate_exit_code,
    gate_rule_texts,
    publish_gate,
    run_gate,
)
from cxml.records.metrics import write_metrics

if TYPE_CHECKING:
    import torch

    from cxml.ml.data import Split
    from cxml.ml.models import ModelMetadata


@dataclass(frozen=True)
class Predictions:
    actual: list[int]
    predicted: list[int]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cxml evaluate", description=__doc__)
    parser.add_argument("--params", default=None, help="params file (default: params.yaml)")
    parser.add_argument("--model", default=None, help="model file (default: outputs.model)")
    parser.add_argument(
        "--device", default=None, help="device for inference (default: train.device)"
    )
    add_gate_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    params = load_params(args.params)
    validate_ranges(params)
    params.outputs.check_writable()
    rule_texts = gate_rule_texts(args, params)  # a typo in a rule fails before minutes of work
    check_gate_settings(params, rule_texts, args.baseline)
    model_path = args.model or params.outputs.model
    baseline = find_baseline(args.baseline, params)  # a required, missing one: before the work
    console.info(f"baseline: {baseline.description}")

    import torch

    from cxml.ml.data import load_dataset
    from cxml.ml.device import choose_device
    from cxml.ml.models import load_model_file

    device = choose_device(args.device or params.train.device)
    model, metadata = load_model_file(model_path, device=str(device))
    data = load_dataset(params.data)
    check_data_matches(metadata, data.content_hash, data.class_names)
    torch.manual_seed(params.train.seed)

    predictions = predict(model, data.test, metadata, params.evaluate.batch_size, device)
    metrics = classification_metrics(predictions, metadata.class_names)
    metrics.update(measure_latency(model, data.test, metadata, params.evaluate, device))
    write_outputs(params.outputs, metrics, predictions, metadata.class_names)
    log_to_tracking(params, metrics)
    console.info(summary_line(metrics))

    gate = run_gate(
        rule_texts,
        metrics,
        baseline,
        params.outputs.gate,
        model_path=model_path,
        run_info=params.outputs.run_info,
    )
    publish_gate(gate, params.outputs.gate)
    return gate_exit_code(gate, no_fail=args.no_fail)


def check_data_matches(metadata: ModelMetadata, data_hash: str, class_names: Sequence[str]) -> None:
    from cxml.core.errors import DataError

    if tuple(class_names) != tuple(metadata.class_names):
        raise DataError(
            "the test data's classes differ from the model's "
            f"({len(class_names)} vs {len(metadata.class_names)}); evaluate with the params the model was trained with"
        )
    if metadata.data_hash and metadata.data_hash != data_hash:
        console.warn(
            "the dataset changed since the model was trained (data hash differs); retrain for a fair comparison"
        )


def predict(
    model: torch.nn.Module,
    split: Split,
    metadata: ModelMetadata,
    batch_size: int,
    device: torch.device,
) -> Predictions:
    import torch

    from cxml.ml.models import preprocess

    predicted: list[int] = []
    with torch.inference_mode():
        for start in range(0, len(split), batch_size):
            images = split.images[start : start + batch_size].to(device)
            logits = model(preprocess(images, metadata))
            predicted += logits.argmax(1).cpu().tolist()
    return Predictions(actual=split.labels.tolist(), predicted=predicted)


def measure_latency(
    model: torch.nn.Module,
    split: Split,
    metadata: ModelMetadata,
    cfg: EvaluateConfig,
    device: torch.device,
) -> dict[str, float]:
    """`latency_p50_ms` and `latency_p95_ms` for one image, as a single-image request sees it."""
    timings = time_single_images(model, split, metadata, cfg.latency_samples, device)
    return {
        "latency_p50_ms": round(percentile(timings, 50), 4),
        "latency_p95_ms": round(percentile(timings, 95), 4),
    }


def time_single_images(
    model: torch.nn.Module,
    split: Split,
    metadata: ModelMetadata,
    samples: int,
    device: torch.device,
) -> list[float]:
    """Milliseconds per single-image forward pass, after a few warm-up calls."""
    import torch

    from cxml.ml.models import preprocess

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    timings: list[float] = []
    with torch.inference_mode():
        for i in range(samples + 5):
            image = split.images[i % len(split)].unsqueeze(0).to(device)
            synchronize()
            start = time.perf_counter()
            model(preprocess(image, metadata))
            synchronize()
            if i >= 5:  # the first calls warm up allocators and kernels
                timings.append((time.perf_counter() - start) * 1000.0)
    return timings


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def classification_metrics(predictions: Predictions, class_names: Sequence[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    labels = list(range(len(class_names)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        predictions.actual, predictions.predicted, labels=labels, average="macro", zero_division=0
    )
    per_class: dict[str, float] = {}
    for index, name in enumerate(class_names):
        members = [
            p for a, p in zip(predictions.actual, predictions.predicted, strict=True) if a == index
        ]
        if members:
            per_class[name] = round(sum(p == index for p in members) / len(members), 6)
    return {
        "accuracy": round(float(accuracy_score(predictions.actual, predictions.predicted)), 6),
        "precision_macro": round(float(precision), 6),
        "recall_macro": round(float(recall), 6),
        "f1_macro": round(float(f1), 6),
        "num_test_images": len(predictions.actual),
        "per_class_accuracy": per_class,
    }


def summary_line(metrics: dict[str, Any]) -> str:
    return (
        f"test accuracy {metrics['accuracy']:.4f}  f1_macro {metrics['f1_macro']:.4f}  "
        f"latency p50 {metrics['latency_p50_ms']:.3f} ms  p95 {metrics['latency_p95_ms']:.3f} ms  "
        f"({metrics['num_test_images']} images)"
    )


def write_outputs(
    out: OutputsConfig,
    metrics: dict[str, Any],
    predictions: Predictions,
    class_names: Sequence[str],
) -> None:
    """metrics/eval.json and the confusion and per-class plots (DVC formats)."""
    write_metrics(out.eval_metrics, metrics)
    confusion = [
        [class_names[a], class_names[p]]
        for a, p in zip(predictions.actual, predictions.predicted, strict=True)
    ]
    files.write_csv(out.confusion_plot, ["actual", "predicted"], confusion)
    support = {name: predictions.actual.count(i) for i, name in enumerate(class_names)}
    per_class = [
        [name, metrics["per_class_accuracy"].get(name, ""), support[name]] for name in class_names
    ]
    files.write_csv(out.per_class_plot, ["class", "accuracy", "support"], per_class)


def log_to_tracking(params: Params, metrics: dict[str, Any]) -> None:
    """Add `eval.*` metrics to the training run, so the registry's champion carries them."""
    from cxml.core.metrics import flatten
    from cxml.records.run import read_run

    if not params.tracking.enabled:
        return
    run = read_run(params.outputs.run_info)
    if run is None or not run.run_id:
        return
    try:
        from cxml.tracking.runs import log_eval_metrics

        log_eval_metrics(params.tracking.uri, run.run_id, flatten(metrics))
    except Exception as exc:
        console.warn(
            f"MLflow: logging evaluation metrics failed ({str(exc).splitlines()[0]}); the files are written"
        )


if __name__ == "__main__":
    from cxml.core.console import run_entry_point

    raise SystemExit(run_entry_point(main))

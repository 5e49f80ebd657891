"""`python -m cxml.evaluate`: test-split metrics and plots, baseline comparison and the gate."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cxml.core import console, files
from cxml.core.config import OutputsConfig, Params, load_params, validate_ranges
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
    from cxml.tracking.runs import EvalMetricsLogger


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
    parser.add_argument(
        "--tracking-in-background",
        action="store_true",
        help="with a local MLflow store (SQLite or files), log the evaluation metrics after this "
        "step exits, and let the report step (`cxml report`, `cxml run`) wait for them and "
        "apply tracking.required: the seconds of opening the store leave the critical path. "
        "Only where the report step runs next on this machine. A tracking server is always "
        "logged at once",
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
    # a SQLite store: mlflow's import and set-up (seconds) run in a child beside torch and the
    # model; a tracking server: one REST call once the metrics exist (milliseconds)
    tracking = start_tracking(params, in_background=args.tracking_in_background)

    import torch

    from cxml.ml.data import load_dataset
    from cxml.ml.device import choose_device
    from cxml.ml.models import load_model_file
    from cxml.ml.tabular import binary_metrics, check_features_match, input_metrics

    device = choose_device(args.device or params.train.device)
    if tracking is not None and tracking.runs_beside and device.type == "cpu":
        leave_a_core_to_tracking(torch)
    model, metadata = load_model_file(model_path, device=str(device))
    data = load_dataset(params.data, decode=("test",))  # the other splits are only hashed
    check_data_matches(metadata, data.content_hash, data.class_names)
    check_features_match(metadata, data.feature_names)
    torch.manual_seed(params.train.seed)

    predictions = predict(model, data.test, metadata, params.evaluate.batch_size, device)
    metrics = classification_metrics(predictions, metadata.class_names)
    metrics.update(binary_metrics(model, data.test, metadata, params.evaluate.batch_size, device))
    metrics.update(input_metrics(metadata))
    from cxml.ml.latency import measure_latency

    metrics.update(measure_latency(model, data.test, metadata, params.evaluate, device))
    send_to_tracking(tracking, metrics)  # logged in the background while the files are written
    write_outputs(params.outputs, metrics, predictions, metadata.class_names)
    console.info(summary_line(metrics))
    finish_tracking(params, tracking)  # before gate.json: a required tracking failure is exit 3

    gate = run_gate(
        rule_texts,
        metrics,
        baseline,
        params.outputs.gate,
        model_path=model_path,
        run_info=params.outputs.run_info,
        directions=params.evaluate.directions,
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


def classification_metrics(predictions: Predictions, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy and macro precision/recall/F1 (classes with no predictions or no images count
    as 0, like scikit-learn's `zero_division=0`), from one confusion matrix."""
    import torch

    classes = len(class_names)
    actual = torch.tensor(predictions.actual, dtype=torch.int64)
    predicted = torch.tensor(predictions.predicted, dtype=torch.int64)
    confusion = torch.bincount(actual * classes + predicted, minlength=classes * classes)
    confusion = confusion.reshape(classes, classes).double()
    correct = confusion.diagonal()
    support = confusion.sum(dim=1)
    predicted_count = confusion.sum(dim=0)
    precision = torch.where(predicted_count > 0, correct / predicted_count.clamp_min(1), 0.0)
    recall = torch.where(support > 0, correct / support.clamp_min(1), 0.0)
    denominator = precision + recall
    f1 = torch.where(denominator > 0, 2 * precision * recall / denominator.clamp_min(1e-300), 0.0)
    per_class = {
        name: round(float(correct[i] / support[i]), 6)
        for i, name in enumerate(class_names)
        if support[i] > 0
    }
    images = len(predictions.actual)
    return {
        "accuracy": round(float(correct.sum()) / images, 6) if images else 0.0,
        "precision_macro": round(float(precision.mean()), 6),
        "recall_macro": round(float(recall.mean()), 6),
        "f1_macro": round(float(f1.mean()), 6),
        "num_test_images": images,
        "per_class_accuracy": per_class,
    }


def summary_line(metrics: dict[str, Any]) -> str:
    return (
        f"test accuracy {metrics['accuracy']:.4f}  f1_macro {metrics['f1_macro']:.4f}  "
        f"latency p50 {metrics['latency_p50_ms']:.3f} ms  p95 {metrics['latency_p95_ms']:.3f} ms  "
        f"({metrics['num_test_images']} {'rows' if 'num_features' in metrics else 'images'})"
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


TRACKING_WAIT_S = 60.0
"""How long evaluate waits at its end for the metrics to reach MLflow (a server retrying)."""


def start_tracking(params: Params, *, in_background: bool = False) -> EvalMetricsLogger | None:
    """Start what logs to MLflow for the training run (REST for a server, else a child process
    that opens the store); once `send_to_tracking` gives it the metrics, it adds them as
    `eval.*` in one batch (so the registry's champion carries them); `finish_tracking` collects
    the outcome, or with `in_background` leaves a local store's logging to `cxml report`. None
    when tracking is off or no run."""
    from cxml.records.run import read_run
    from cxml.tracking.background import remove_handoff

    remove_handoff()  # an earlier evaluation's outcome nobody collected is not this one's
    if not params.tracking.enabled:
        return None
    run = read_run(params.outputs.run_info)
    if run is None or not run.run_id:
        return None
    from cxml.tracking.runs import start_eval_metrics

    return start_eval_metrics(params.tracking.uri, run.run_id, in_background=in_background)


def leave_a_core_to_tracking(torch: Any) -> None:
    """One torch thread fewer while the logging child opens the store beside the model: torch's
    threads wait for each other at every operation, and one that shares its core with the child
    holds up all (measured on 2 cores: the test-split pass 10x and the latency trials 3x slower,
    the trials timing the contention rather than the model)."""
    torch.set_num_threads(max(1, torch.get_num_threads() - 1))


def send_to_tracking(tracking: EvalMetricsLogger | None, metrics: dict[str, Any]) -> None:
    from cxml.core.metrics import flatten

    if tracking is not None:
        tracking.send(flatten(metrics))


def finish_tracking(params: Params, tracking: EvalMetricsLogger | None) -> None:
    """Wait (bounded) for the metrics logging; a failure stops the step while tracking is
    required (exit 3), else it warns: the files are written either way. Logging left in the
    background is collected by the pipeline's last step (tracking/background.py)."""
    from cxml.tracking.background import judge_eval_logging

    if tracking is None:
        return
    error = tracking.wait(TRACKING_WAIT_S)
    if error is not None:
        judge_eval_logging(params, error)
    elif tracking.in_background:
        console.info(
            "MLflow: the evaluation metrics are being logged in the background; "
            "`cxml report` waits for them at its end"
        )


if __name__ == "__main__":
    from cxml.core.console import run_entry_point

    raise SystemExit(run_entry_point(main))

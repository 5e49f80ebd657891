"""Metric directions (declared or by name) and the noise rule shared by the gate and the report."""

from __future__ import annotations

import pytest

from cxml.core.metrics import (
    NOISE_IMAGES,
    direction_of,
    judge_change,
    resolved_directions,
)


@pytest.mark.parametrize(
    ("name", "direction"),
    [
        ("accuracy", "higher"),
        ("f1_macro", "higher"),
        ("precision_macro", "higher"),
        ("recall_macro", "higher"),
        ("val_accuracy", "higher"),
        ("loss", "lower"),
        ("val_loss", "lower"),
        ("latency_p95_ms", "lower"),
        ("seconds", "lower"),
        ("rmse", "lower"),
        ("val_mae", "lower"),
        ("mse", "lower"),
        ("wer", "lower"),
        ("cer", "lower"),
        ("error_rate", "lower"),
        ("per_class_accuracy.error", "higher"),  # a class named `error` is still an accuracy
        ("per_class_accuracy.latency", "higher"),
        ("num_test_images", None),
        ("epochs", None),
        ("latency_p95_ms_spread", None),
    ],
)
def test_default_directions_by_name(name: str, direction: str | None) -> None:
    assert direction_of(name) == direction


def test_declared_directions_win_by_full_name_then_last_part() -> None:
    declared = {"my_score": "lower", "rmse": "higher", "per_class_accuracy": "lower"}
    assert direction_of("my_score", declared) == "lower"
    assert direction_of("train.rmse", declared) == "higher"
    assert direction_of("per_class_accuracy.cat", declared) == "lower"
    assert direction_of("accuracy", declared) == "higher"


def test_resolved_directions_cover_metrics_and_declared_names_but_not_counts() -> None:
    found = resolved_directions(["accuracy", "num_test_images", "rmse"], {"bleu": "higher"})
    assert found == {"accuracy": "higher", "rmse": "lower", "bleu": "higher"}


@pytest.mark.parametrize(
    ("current", "baseline", "verdict", "images"),
    [
        (259, 259, "same", 0),
        (260, 259, "within noise", 1),
        (259 - NOISE_IMAGES, 259, "within noise", -NOISE_IMAGES),
        (259 + NOISE_IMAGES + 1, 259, "better", NOISE_IMAGES + 1),
        (259 - NOISE_IMAGES - 1, 259, "worse", -NOISE_IMAGES - 1),
    ],
)
def test_accuracy_noise_is_counted_in_test_images(
    current: int, baseline: int, verdict: str, images: int
) -> None:
    change = judge_change(
        "accuracy",
        {"accuracy": current / 269, "num_test_images": 269},
        {"accuracy": baseline / 269, "num_test_images": 269},
    )
    assert change is not None
    assert (change.verdict, change.images, change.images_total) == (verdict, images, 269)


def test_accuracy_on_test_sets_of_different_sizes_counts_each_side() -> None:
    change = judge_change(
        "accuracy",
        {"accuracy": 265 / 270, "num_test_images": 270},
        {"accuracy": 259 / 269, "num_test_images": 269},
    )
    assert change is not None and change.images == 6 and change.verdict == "better"


def test_per_class_accuracy_noise_uses_the_class_support() -> None:
    metrics = {"per_class_accuracy.cat": 26 / 27}
    baseline = {"per_class_accuracy.cat": 25 / 27}
    change = judge_change("per_class_accuracy.cat", metrics, baseline, support={"cat": 27})
    assert change is not None and change.verdict == "within noise"
    assert change.noise_note() == "+1 image of 27"


def test_latency_noise_is_the_wider_trial_spread_of_either_side() -> None:
    current = {"latency_p95_ms": 1.5, "latency_p95_ms_spread": 0.1}
    baseline = {"latency_p95_ms": 1.2, "latency_p95_ms_spread": 0.35}
    change = judge_change("latency_p95_ms", current, baseline)
    assert change is not None and change.verdict == "within noise" and change.spread == 0.35
    assert change.noise_note() == "trial spread 0.35 ms"
    slower = judge_change("latency_p95_ms", {**current, "latency_p95_ms": 1.6}, baseline)
    assert slower is not None and slower.verdict == "worse"


def test_without_a_noise_model_a_change_is_better_or_worse() -> None:
    change = judge_change("rmse", {"rmse": 0.15}, {"rmse": 0.12}, declared={"rmse": "lower"})
    assert change is not None and change.verdict == "worse" and change.moved == "rose"
    assert judge_change("rmse", {"rmse": 0.15}, {}) is None

"""Latency in repeated trials after warm-up: the median trial and the spread between trials."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cxml.ml import latency
from cxml.ml.latency import WARMUP_CALLS, percentile, summarize_trials, time_trials


def test_the_median_trial_is_reported_with_the_spread_between_trials() -> None:
    # one trial on a loaded machine (all ten times slower) moves the median not at all
    calm = [1.0, 1.1, 1.2, 1.3, 2.0]
    loaded = [10.0, 11.0, 12.0, 13.0, 20.0]
    summary = summarize_trials([calm, calm, loaded, calm, calm])
    assert summary.p50_ms == pytest.approx(percentile(calm, 50))
    assert summary.p95_ms == pytest.approx(percentile(calm, 95))
    assert summary.p95_spread_ms == pytest.approx(percentile(loaded, 95) - percentile(calm, 95))
    assert (summary.trials, summary.samples) == (5, 5)
    metrics = summary.to_metrics()
    assert set(metrics) == {
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p50_ms_spread",
        "latency_p95_ms_spread",
    }


def test_no_trials_give_zeros_not_an_error() -> None:
    assert summarize_trials([]).to_metrics()["latency_p95_ms"] == 0.0


def test_time_trials_warms_up_then_times_every_call() -> None:
    calls: list[int] = []

    def work(index: int) -> None:
        calls.append(index)
        time.sleep(0.001)

    rounds = time_trials(work, trials=3, samples=4)
    assert len(calls) == WARMUP_CALLS + 12
    assert [len(r) for r in rounds] == [4, 4, 4]
    assert all(ms >= 0.9 for r in rounds for ms in r)


def fake_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """`time.perf_counter` as latency.py sees it, advanced one second per timed call."""
    now = [0.0]
    monkeypatch.setattr(latency.time, "perf_counter", lambda: now[0])

    def one_second_call(index: int) -> None:
        now[0] += 1.0

    return one_second_call


@pytest.mark.parametrize(
    ("budget_s", "trials_run"),
    [(0.0, 3), (11.0, 3), (12.0, 4), (13.5, 5), (math.inf, 5)],
)
def test_trials_stop_at_the_time_budget_once_three_are_done(
    monkeypatch: pytest.MonkeyPatch, budget_s: float, trials_run: int
) -> None:
    # 5 warm-up calls, then 2 calls per trial: 3 trials end at 11 s, 4 at 13 s
    call = fake_clock(monkeypatch)
    rounds = latency.time_trials(call, trials=5, samples=2, warmup=5, budget_s=budget_s)
    assert len(rounds) == trials_run
    assert all(len(r) == 2 for r in rounds)  # a trial is never cut short


def test_fewer_trials_asked_than_the_minimum_all_run(monkeypatch: pytest.MonkeyPatch) -> None:
    call = fake_clock(monkeypatch)
    assert len(latency.time_trials(call, trials=2, samples=2, budget_s=0.0)) == 2
    assert latency.MIN_TRIALS == 3


def test_a_real_model_gets_a_median_and_a_spread_from_evaluate_settings() -> None:
    torch = pytest.importorskip("torch")
    from cxml.core.config import EvaluateConfig
    from cxml.ml.data import Split
    from cxml.ml.latency import measure_latency
    from cxml.ml.models import ModelMetadata, build_model

    metadata = ModelMetadata(
        architecture="small_cnn",
        num_classes=10,
        class_names=tuple(str(i) for i in range(10)),
        input_size=(1, 8, 8),
        mean=(0.5,),
        std=(0.25,),
        cxml_version="test",
    )
    model = build_model("small_cnn", 10, 1).eval()
    images = torch.randint(0, 255, (20, 1, 8, 8), dtype=torch.uint8)
    split = Split(images=images, labels=torch.zeros(20, dtype=torch.long))
    cfg = EvaluateConfig(latency_samples=10, latency_trials=3, latency_budget_s=0.0)
    metrics = measure_latency(model, split, metadata, cfg, torch.device("cpu"))
    assert metrics["latency_p50_ms"] > 0
    assert metrics["latency_p95_ms"] >= metrics["latency_p50_ms"]
    assert metrics["latency_p95_ms_spread"] >= 0


@pytest.mark.slow
def test_a_real_run_writes_the_median_and_spread_to_eval_json(trained_dir: Path) -> None:
    metrics = json.loads((trained_dir / "metrics/eval.json").read_text())
    for name in ("latency_p50_ms", "latency_p95_ms"):
        assert metrics[f"{name}_spread"] >= 0
    assert metrics["latency_p50_ms"] <= metrics["latency_p95_ms"]
    report = (trained_dir / "report.md").read_text()
    assert "| `latency_p95_ms_spread` |" in report

"""`cxml serve`'s /metrics: the predicted-class counter (the canary's class-distribution check),
the release info series, and the input summaries for drift (size, brightness, standard score)."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import httpx
import pytest

from cxml.records import release as bundle
from cxml.serve.metrics import MAX_COUNTED_CLASSES, ReleaseLabels, ServiceMetrics
from tests.support.deploy import make_model_file, png_bytes
from tests.support.serving import running_serve, save_release


def class_counts(text: str) -> dict[str, int]:
    prefix = 'cxml_predicted_class_total{class="'
    counts = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            name, _, value = line[len(prefix) :].partition('"} ')
            counts[name] = int(value)
    return counts


def test_predicted_classes_are_counted_under_the_model_class_names() -> None:
    metrics = ServiceMetrics()
    metrics.record_prediction(0.01, 3, [1, 1, 0])
    metrics.record_prediction(0.01, 1, [2])
    text = metrics.render("1", "r1", ("cat", "dog", "bird", "fish"))
    assert "# TYPE cxml_predicted_class_total counter" in text
    # every class of the model, 0 included: a class that stops being predicted stays visible
    assert class_counts(text) == {"cat": 1, "dog": 2, "bird": 1, "fish": 0}


def test_the_counter_is_declared_before_any_prediction() -> None:
    text = ServiceMetrics().render("1", "r1", ("a", "b"))
    assert "# TYPE cxml_predicted_class_total counter" in text
    assert class_counts(text) == {"a": 0, "b": 0}


def test_the_label_set_stays_bounded_for_huge_models() -> None:
    metrics = ServiceMetrics()
    names = tuple(f"c{i}" for i in range(MAX_COUNTED_CLASSES + 50))
    metrics.record_prediction(0.01, 3, [0, MAX_COUNTED_CLASSES + 7, MAX_COUNTED_CLASSES + 49])
    counts = class_counts(metrics.render("1", "r1", names))
    assert len(counts) == MAX_COUNTED_CLASSES + 1
    assert counts["c0"] == 1 and counts["other"] == 2


def test_class_names_are_escaped_as_label_values() -> None:
    metrics = ServiceMetrics()
    metrics.record_prediction(0.01, 1, [0])
    text = metrics.render("1", "r1", ('say "hi"\\',))
    assert 'cxml_predicted_class_total{class="say \\"hi\\"\\\\"} 1' in text


def sample(text: str, series: str) -> float:
    """The value of one series (name and labels exactly as written) in /metrics text."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in:\n{text}")


def assert_buckets(text: str, histogram: str, expected: dict[str, float]) -> None:
    """Each bucket `le` of `histogram` in /metrics text holds the cumulative count `expected[le]`."""
    assert {le: sample(text, f'{histogram}_bucket{{le="{le}"}}') for le in expected} == expected


def test_the_release_is_one_info_series_for_joins() -> None:
    labels = ReleaseLabels("3-abc", "3", "cxml-model", 'run "7"')
    text = ServiceMetrics().render("3", "3-abc", labels=labels)
    assert "# TYPE cxml_release_info gauge" in text
    info = 'cxml_release_info{release="3-abc",model_version="3",model_name="cxml-model",'
    assert sample(text, info + 'run_id="run \\"7\\""}') == 1
    # the other series stay without release labels: one series each, whatever the release
    assert "cxml_request_errors_total 0" in text and "cxml_images_total 0" in text
    # a bare model file names only what it knows
    bare = ServiceMetrics().render("local", "local")
    assert (
        'cxml_release_info{release="local",model_version="local",model_name="",run_id=""} 1' in bare
    )


def test_image_inputs_are_summarised_by_size_and_brightness() -> None:
    metrics = ServiceMetrics()
    metrics.record_images([500, 3000], [10.0, 200.0])
    metrics.record_images([70_000], [255.0])
    text = metrics.render("1", "r1", reference_brightness=76.5)
    assert "# TYPE cxml_input_bytes histogram" in text
    assert_buckets(text, "cxml_input_bytes", {"1024": 1, "4096": 2, "262144": 3, "+Inf": 3})
    assert sample(text, "cxml_input_bytes_sum") == 73_500
    assert_buckets(text, "cxml_input_brightness", {"16": 1, "208": 2, "240": 2, "+Inf": 3})
    assert sample(text, "cxml_input_brightness_sum") == 465
    assert sample(text, "cxml_input_brightness_count") == 3
    assert sample(text, "cxml_input_brightness_reference") == 76.5
    assert "cxml_input_standard_score" not in text  # an image model has no feature rows


def test_tabular_rows_are_summarised_by_their_standard_score() -> None:
    metrics = ServiceMetrics()
    metrics.record_rows(300, [-0.1, 2.5, -4.0])
    text = metrics.render("1", "r1", tabular=True)
    assert_buckets(text, "cxml_input_standard_score", {"-3": 1, "0": 2, "3": 3})
    assert sample(text, "cxml_input_standard_score_sum") == pytest.approx(-1.6)
    assert sample(text, "cxml_input_bytes_sum") == 300  # each row its share of the body
    assert sample(text, "cxml_input_bytes_count") == 3
    assert "cxml_input_brightness" not in text


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = make_model_file(tmp_path_factory.mktemp("model") / "model.pt", seed=5)
    serving = bundle.ServingConfig(max_batch=8, max_request_bytes=200_000)
    return save_release(model, tmp_path_factory.mktemp("release"), version="3", serving=serving)


def test_the_app_summarises_what_it_decodes(release_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from cxml.serve.app import create_app
    from cxml.serve.service import PredictionService
    from cxml.serve.step import parse_args, settings_from_args

    service = PredictionService(settings_from_args(parse_args(["--bundle", str(release_dir)])))
    service.warm_up()
    bright, dark = png_bytes(200), png_bytes(40)
    with TestClient(create_app(service)) as client:
        files = [("file", ("a.png", bright, "image/png")), ("file", ("b.png", dark, "image/png"))]
        assert client.post("/predict", files=files).status_code == 200
        bad = client.post(
            "/predict", content=b"not an image", headers={"content-type": "image/png"}
        )
        assert bad.status_code == 400
        text = client.get("/metrics").text
    assert sample(text, "cxml_input_brightness_count") == 2  # the bad request decoded nothing
    assert sample(text, "cxml_input_brightness_sum") == 240
    assert sample(text, "cxml_input_bytes_sum") == len(bright) + len(dark)
    assert sample(text, "cxml_input_brightness_reference") == pytest.approx(0.3 * 255)
    release = (
        f'release="{release_dir.name}",model_version="3",model_name="cxml-model",run_id="run3"'
    )
    assert sample(text, f"cxml_release_info{{{release}}}") == 1


@pytest.mark.slow
def test_a_real_serve_counts_the_classes_it_answered(release_dir: Path, tmp_path: Path) -> None:
    argv = ["--bundle", str(release_dir), "--workers", "2", "--threads", "1"]
    with running_serve(argv, tmp_path / "serve.log") as served:
        base = served.url
        answered: Counter[str] = Counter()
        for value in range(0, 256, 16):  # different images, a new connection each: both workers
            files = [("file", ("a.png", png_bytes(value), "image/png")),
                     ("file", ("b.png", png_bytes(255 - value), "image/png"))]  # fmt: skip
            response = httpx.post(f"{base}/predict", files=files, timeout=10)
            assert response.status_code == 200, response.text
            answered.update(p["class"] for p in response.json()["predictions"])
        httpx.post(f"{base}/predict", content=b"not an image", timeout=10)  # a 4xx: no class
        counts = class_counts(httpx.get(f"{base}/metrics", timeout=5).text)
        assert set(counts) == {str(i) for i in range(10)}  # the model's classes, bounded
        assert {name: n for name, n in counts.items() if n} == dict(answered)
        assert sum(counts.values()) == 32
    assert served.process.returncode in (0, -signal.SIGTERM)

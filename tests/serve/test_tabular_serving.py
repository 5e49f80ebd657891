"""`cxml serve` with a tabular model: the three JSON forms, the same answers as training's
normaliser, /version's feature list, clear 4xx for bad rows, and dynamic batching of rows."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from cxml.core.config import DataConfig, ModelConfig
from cxml.ml import models
from cxml.ml.batches import normalise
from cxml.ml.data import Dataset, load_dataset
from cxml.serve.app import create_app
from cxml.serve.service import PredictionService
from cxml.serve.step import parse_args, settings_from_args
from tests.support.serving import running_serve
from tests.support.tabular import mlp_metadata


@pytest.fixture(scope="module")
def data() -> Dataset:
    return load_dataset(DataConfig(source="breast_cancer"))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory, data: Dataset) -> Path:
    torch.manual_seed(5)
    model_cfg = ModelConfig(architecture="mlp", hidden_sizes=(16, 8))
    network = models.build_model("mlp", 2, 30, model_cfg.hidden_sizes)
    metadata = mlp_metadata(data, model_cfg)
    path = tmp_path_factory.mktemp("tabular") / "model.pt"
    models.save_model_file(path, network, metadata)
    return path


@pytest.fixture(scope="module")
def service(model_path: Path) -> PredictionService:
    args = parse_args(["--model", str(model_path), "--device", "cpu", "--max-batch", "16"])
    service = PredictionService(settings_from_args(args))
    service.warm_up()
    return service


@pytest.fixture(scope="module")
def client(service: PredictionService) -> Iterator[TestClient]:
    with TestClient(create_app(service)) as client:
        yield client


def rows_of(data: Dataset, count: int) -> list[list[float]]:
    rows: list[list[float]] = data.test.images[:count].flatten(1).tolist()
    return rows


def training_probabilities(model_path: Path, features: torch.Tensor) -> list[list[float]]:
    """What training's batches give: the model on `normalise` with fit's N,F,1,1 statistics."""
    network, metadata = models.load_model_file(model_path)
    mean = torch.tensor(metadata.mean).view(1, -1, 1, 1)
    std = torch.tensor(metadata.std).view(1, -1, 1, 1)
    with torch.inference_mode():
        inputs = normalise(features, mean, std, metadata.input_scale)
        probabilities = torch.softmax(network(inputs), dim=1)
    result: list[list[float]] = probabilities.tolist()
    return result


def test_the_three_forms_answer_alike_and_as_training_does(
    client: TestClient, data: Dataset, model_path: Path
) -> None:
    rows = rows_of(data, 3)
    names = list(data.feature_names)
    one = client.post("/predict", json={"features": rows[0]})
    many = client.post("/predict", json={"rows": rows})
    records = client.post(
        "/predict", json={"records": [dict(zip(names, r, strict=True)) for r in rows]}
    )
    for response in (one, many, records):
        assert response.status_code == 200, response.text
    assert many.json()["predictions"] == records.json()["predictions"]
    assert one.json()["predictions"][0] == many.json()["predictions"][0]
    assert many.json()["classes"] == ["malignant", "benign"]
    offline = training_probabilities(model_path, data.test.images[:3])
    for online, expected in zip(many.json()["predictions"], offline, strict=True):
        assert online["probabilities"] == pytest.approx(expected, abs=2e-6)
        assert online["index"] == max(range(2), key=expected.__getitem__)


def test_records_take_the_features_in_any_order(client: TestClient, data: Dataset) -> None:
    row = rows_of(data, 1)[0]
    reordered = dict(reversed(list(zip(data.feature_names, row, strict=True))))
    a = client.post("/predict", json={"records": [reordered]}).json()
    b = client.post("/predict", json={"features": row}).json()
    assert a["predictions"] == b["predictions"]


def test_version_lists_the_features_with_training_ranges(client: TestClient, data: Dataset) -> None:
    version = client.get("/version").json()
    assert version["input"] == "features"
    assert version["feature_names"] == list(data.feature_names)
    first = version["features"][0]
    train = data.train.images.flatten(1)
    assert first["name"] == "mean radius"
    assert first["min"] == pytest.approx(float(train[:, 0].min()), abs=1e-4)
    assert first["max"] == pytest.approx(float(train[:, 0].max()), abs=1e-4)
    assert first["min"] <= first["mean"] <= first["max"]
    assert first["mean"] == pytest.approx(float(train[:, 0].double().mean()), rel=1e-5)


BAD_REQUESTS = [
    (
        {"features": [1.0] * 29},
        422,
        "row 0: 29 values, the model takes 30 (missing feature(s) 'worst fractal dimension')",
    ),
    ({"features": [1.0] * 31}, 422, "1 extra value(s) after the last feature"),
    ({"rows": [[1.0] * 30, [1.0] * 30 + [2.0]]}, 422, "row 1: 31 values"),
    (
        {"features": [1.0] * 29 + ["big"]},
        422,
        "row 0, feature 'worst fractal dimension': \"big\" is not a number",
    ),
    ({"features": [True] + [1.0] * 29}, 422, "row 0, feature 'mean radius': true is not a number"),
    ({"features": [None] + [1.0] * 29}, 422, "feature 'mean radius': null is not a number"),
    ({"records": [{"mean radius": 1.0}]}, 422, "record 0: missing feature(s) 'mean texture'"),
    ({"rows": [[1.0] * 30] * 17}, 413, "17 rows in one request, over the limit of 16"),
    ({"rows": []}, 422, "no rows"),
    ({"rows": 3}, 422, '"rows" must be a list'),
    ({"image": "aGk="}, 422, "a tabular model takes exactly one of"),
    ({"features": [1.0] * 30, "rows": []}, 422, "exactly one of"),
    ([1.0] * 30, 422, "exactly one of"),
]


@pytest.mark.parametrize(("payload", "status", "expected"), BAD_REQUESTS)
def test_bad_rows_get_a_4xx_naming_the_feature(
    client: TestClient, payload: object, status: int, expected: str
) -> None:
    response = client.post("/predict", json=payload)
    assert response.status_code == status, response.text
    assert expected in response.json()["error"]


def test_extra_record_feature_and_bad_bodies(client: TestClient, data: Dataset) -> None:
    record = dict(zip(data.feature_names, rows_of(data, 1)[0], strict=True))
    response = client.post("/predict", json={"records": [record, {**record, "age": 40}]})
    assert response.status_code == 422
    assert "record 1: unknown feature(s) 'age'" in response.json()["error"]
    huge = b'{"features": [' + b"1" * 400 + b"e999" + b", 1" * 29 + b"]}"
    response = client.post("/predict", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "too large for a float" in response.json()["error"]
    for body in (b"{", b"[" * 100_000):
        response = client.post(
            "/predict", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, response.text
    response = client.post("/predict", files={"image": ("x.png", b"\x89PNG")})
    assert response.status_code == 415 and "application/json" in response.json()["error"]


def test_concurrent_rows_go_through_the_batcher(service: PredictionService, data: Dataset) -> None:
    """Rows are counted and batched like images: every row reaches the dynamic batcher, and each
    answer is the one the row gets in a batch of all of them."""
    rows = rows_of(data, 12)
    with TestClient(create_app(service)) as client:
        before = batch_totals(service)

        def ask(row: list[float]) -> object:
            response = client.post("/predict", json={"features": row})
            assert response.status_code == 200, response.text
            return response.json()["predictions"]

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, rows))
        after = batch_totals(service)
    assert after[0] - before[0] == len(rows)  # rows through the batcher
    assert 1 <= after[1] - before[1] <= len(rows)  # forward passes
    batch = torch.tensor(rows).view(len(rows), -1, 1, 1)
    together = service.answer(batch)["predictions"]
    for answer, expected in zip(answers, together, strict=True):
        assert answer == [expected]


def batch_totals(service: PredictionService) -> tuple[float, float]:
    """(rows, forward passes) so far, from the service's own /metrics text."""
    text = service.metrics.render("local", "local")
    total = re.search(r"^cxml_batch_images_sum\S* (\S+)$", text, re.MULTILINE)
    count = re.search(r"^cxml_batch_images_count\S* (\S+)$", text, re.MULTILINE)
    assert total and count, text
    return float(total[1]), float(count[1])


@pytest.mark.slow
def test_a_real_cxml_serve_process_answers_feature_rows(
    model_path: Path, data: Dataset, tmp_path: Path
) -> None:
    argv = ["--model", str(model_path), "--device", "cpu", "--workers", "1"]
    with running_serve(argv, tmp_path / "serve.log") as served:
        base = served.url
        rows = rows_of(data, 2)
        response = httpx.post(f"{base}/predict", json={"rows": rows}, timeout=10)
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 2
        bad = httpx.post(f"{base}/predict", json={"features": [1, 2]}, timeout=10)
        assert bad.status_code == 422 and "missing feature(s)" in bad.json()["error"]
        assert (
            json.loads(httpx.get(f"{base}/version", timeout=10).text)["feature_names"][0]
            == "mean radius"
        )

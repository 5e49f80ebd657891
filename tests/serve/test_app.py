"""`cxml serve`: predictions, health, version and metrics; every bad request is a 4xx, never a 500."""

from __future__ import annotations

import base64
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from cxml.core.errors import ConfigError, DeployError
from cxml.records import release as bundle
from cxml.serve.app import INTERNAL_ERROR, create_app
from cxml.serve.service import PredictionService
from cxml.serve.settings import DEFAULT_MAX_IMAGE_PIXELS, default_threads, default_workers
from cxml.serve.step import parse_args, settings_from_args
from tests.support.deploy import PYTHON, free_port, make_model_file, png_bytes
from tests.support.serving import running_serve, save_release


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = make_model_file(
        tmp_path_factory.mktemp("model") / "model.pt", seed=3, git_commit="c0ffee"
    )
    return save_release(
        model,
        tmp_path_factory.mktemp("release"),
        git_commit="c0ffee",
        metrics={"accuracy": 0.97, "latency_p50_ms": 0.3, "seconds": 12.0},
        serving=bundle.ServingConfig(max_batch=8, max_request_bytes=200_000),
    )


def make_service(release_dir: Path, *extra: str) -> PredictionService:
    args = parse_args(["--bundle", str(release_dir), "--device", "cpu", *extra])
    return PredictionService(settings_from_args(args))


@pytest.fixture(scope="module")
def service(release_dir: Path) -> PredictionService:
    service = make_service(release_dir)
    service.warm_up()
    return service


@pytest.fixture
def client(service: PredictionService) -> Iterator[TestClient]:
    with TestClient(create_app(service)) as test_client:
        yield test_client


def multipart(*images: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]


def test_one_image_as_multipart(client: TestClient) -> None:
    response = client.post("/predict", files=multipart(png_bytes()))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "7" and body["release"].startswith("7-")
    assert body["classes"] == [str(i) for i in range(10)]
    (prediction,) = body["predictions"]
    assert prediction["class"] == body["classes"][prediction["index"]]
    assert len(prediction["probabilities"]) == 10
    assert sum(prediction["probabilities"]) == pytest.approx(1.0, abs=1e-4)


def test_a_batch_gets_one_prediction_per_image_in_order(
    client: TestClient, service: PredictionService
) -> None:
    images = [png_bytes(v) for v in (0, 60, 120, 180, 255)]
    batch = client.post("/predict", files=multipart(*images)).json()["predictions"]
    singles = [
        client.post("/predict", files=multipart(image)).json()["predictions"][0] for image in images
    ]
    assert len(batch) == 5
    for together, alone in zip(batch, singles, strict=True):
        assert together["index"] == alone["index"]
        assert together["probabilities"] == pytest.approx(alone["probabilities"], abs=1e-4)


def test_base64_json_and_raw_bodies(client: TestClient) -> None:
    encoded = base64.b64encode(png_bytes()).decode()
    assert len(client.post("/predict", json={"image": encoded}).json()["predictions"]) == 1
    response = client.post(
        "/predict", json={"images": [encoded, f"data:image/png;base64,{encoded}"]}
    )
    assert len(response.json()["predictions"]) == 2
    raw = client.post("/predict", content=png_bytes(), headers={"content-type": "image/png"})
    assert raw.status_code == 200


def test_other_image_sizes_and_modes_are_resized(client: TestClient) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (37, 20), (10, 200, 30)).save(buffer, "JPEG")
    assert client.post("/predict", files=multipart(buffer.getvalue())).status_code == 200


BAD_REQUESTS = [
    ("not an image", {"files": multipart(b"hello")}, 400, "not a readable image"),
    ("empty file", {"files": multipart(b"")}, 400, "empty"),
    ("truncated png", {"files": multipart(png_bytes()[:40])}, 400, "image 0"),
    ("empty batch json", {"json": {"images": []}}, 422, "no images"),
    (
        "multipart without files",
        {
            "content": b'--b\r\nContent-Disposition: form-data; name="note"\r\n\r\nx\r\n--b--\r\n',
            "headers": {"content-type": "multipart/form-data; boundary=b"},
        },
        422,
        "no images",
    ),
    ("no image key", {"json": {"picture": "x"}}, 422, '"images"'),
    ("images not a list", {"json": {"images": "abc"}}, 422, "list of base64"),
    ("bad base64", {"json": {"image": "***"}}, 400, "not valid base64"),
    (
        "invalid json",
        {"content": b"{nope", "headers": {"content-type": "application/json"}},
        400,
        "not valid JSON",
    ),
    (
        "json nested 90k deep",
        {
            "content": b'{"images":' + b"[" * 90_000 + b"]" * 90_000 + b"}",
            "headers": {"content-type": "application/json"},
        },
        400,
        "nested too deeply",
    ),
    (
        "json integer with 5000 digits",
        {
            "content": b'{"images":[],"n":' + b"7" * 5000 + b"}",
            "headers": {"content-type": "application/json"},
        },
        400,
        "number too long",
    ),
    (
        "text body",
        {"content": b"hi", "headers": {"content-type": "text/plain"}},
        415,
        "not supported",
    ),
    ("no content type", {"content": b"hi"}, 415, "not supported"),
    ("too many images", {"files": multipart(*[png_bytes()] * 9)}, 413, "over the limit of 8"),
    (
        "body too large",
        {"content": b"x" * 300_000, "headers": {"content-type": "image/png"}},
        413,
        "over the limit",
    ),
]


@pytest.mark.parametrize(
    ("name", "request_kwargs", "status", "phrase"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_requests_get_a_clear_4xx(
    client: TestClient, name: str, request_kwargs: dict[str, object], status: int, phrase: str
) -> None:
    response = client.post("/predict", **request_kwargs)
    assert response.status_code == status, response.text
    assert phrase in response.json()["error"]


def test_chunked_body_over_the_limit_is_refused(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 10_000

    response = client.post("/predict", content=chunks(), headers={"content-type": "image/png"})
    assert response.status_code == 413


def test_images_with_huge_dimensions_are_refused_before_decoding(client: TestClient) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (5000, 5000)).save(buffer, "PNG")  # tiny file, 25 M pixels
    response = client.post("/predict", files=multipart(buffer.getvalue()))
    assert response.status_code == 413 and "pixels" in response.json()["error"]


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with no image data behind it (60 bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "side",
    [20000, 10000],  # past twice PIL's own limit it raises; past the limit itself it warns
)
def test_a_header_claiming_a_huge_image_is_a_413_naming_the_limit(
    client: TestClient, side: int
) -> None:
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # as `-W error` would
        response = client.post("/predict", files=multipart(png_header(side, side)))
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert f"over the limit of {DEFAULT_MAX_IMAGE_PIXELS}" in error and "smaller" in error


def test_too_many_multipart_files_is_a_413_in_the_service_format(release_dir: Path) -> None:
    fresh = make_service(release_dir)
    fresh.warm_up()
    with TestClient(create_app(fresh)) as client:
        response = client.post("/predict", files=multipart(*[png_bytes()] * 20))  # limit 8
        assert response.status_code == 413, response.text
        assert response.json() == {
            "error": "more than 8 images in one request, over the limit of 8; split the batch"
        }
        malformed = client.post(
            "/predict",
            content=b"--b\r\nContent-Disposition: form-data\r\n\r\nx",
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        assert 400 <= malformed.status_code < 500 and "error" in malformed.json()
        text = client.get("/metrics").text
    assert 'cxml_requests_total{endpoint="/predict",code="413"} 1' in text


def test_wrong_size_is_refused_when_resizing_is_off(release_dir: Path) -> None:
    strict = make_service(release_dir, "--no-resize")
    strict.warm_up()
    with TestClient(create_app(strict)) as client:
        response = client.post("/predict", files=multipart(png_bytes(size=(9, 8))))
        assert response.status_code == 422 and "takes 8x8" in response.json()["error"]
        assert client.post("/predict", files=multipart(png_bytes())).status_code == 200


def test_garbage_never_gives_a_500(client: TestClient) -> None:
    import random

    rng = random.Random(0)
    for _ in range(50):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        content_type = rng.choice(
            ["image/png", "application/json", "multipart/form-data; boundary=x", "image/jpeg"]
        )
        response = client.post("/predict", content=blob, headers={"content-type": content_type})
        assert 400 <= response.status_code < 500, (content_type, blob[:40], response.text)


def test_healthz_is_ready_only_after_warm_up(release_dir: Path) -> None:
    cold = make_service(release_dir)
    with TestClient(create_app(cold)) as client:
        assert client.get("/healthz").status_code == 503
        cold.warm_up()
        response = client.get("/healthz")
        assert response.status_code == 200 and response.json()["model_version"] == "7"


def test_version_reports_the_release(client: TestClient) -> None:
    version = client.get("/version").json()
    assert version["model_version"] == "7" and version["release"].startswith("7-")
    assert version["model_name"] == "cxml-model" and version["git_commit"] == "c0ffee"
    assert version["metrics"] == {"accuracy": 0.97, "latency_p50_ms": 0.3}
    assert version["input_size"] == [1, 8, 8] and version["device"] == "cpu"


def test_metrics_count_requests_errors_and_latency(release_dir: Path) -> None:
    fresh = make_service(release_dir)
    fresh.warm_up()
    with TestClient(create_app(fresh)) as client:
        client.post("/predict", files=multipart(png_bytes(), png_bytes()))
        client.post("/predict", files=multipart(b"nope"))
        text = client.get("/metrics").text
    assert 'cxml_requests_total{endpoint="/predict",code="200"} 1' in text
    assert 'cxml_requests_total{endpoint="/predict",code="400"} 1' in text
    assert "cxml_request_errors_total 1" in text
    assert "cxml_images_total 2" in text
    assert "cxml_predict_latency_seconds_count 1" in text
    assert 'cxml_predict_latency_seconds_bucket{le="+Inf"} 1' in text
    assert 'cxml_model_info{model_version="7",release="7-' in text


def test_errors_outside_the_handler_are_counted_and_answered_in_the_service_format(
    tmp_path: Path, release_dir: Path
) -> None:
    # A model whose metadata names no classes loads and warms up, then fails on every prediction.
    import dataclasses

    from cxml.ml import models

    state, metadata = models.read_model_file(release_dir / "model.pt")
    network = models.build_model(metadata.architecture, metadata.num_classes, 1)
    network.load_state_dict(state)
    broken = tmp_path / "model.pt"
    models.save_model_file(broken, network, dataclasses.replace(metadata, class_names=()))
    service = PredictionService(
        settings_from_args(parse_args(["--model", str(broken), "--device", "cpu"]))
    )
    service.warm_up()
    with TestClient(create_app(service)) as client:
        failed = client.post("/predict", files=multipart(png_bytes()))
        assert failed.status_code == 500
        assert failed.json() == {"error": INTERNAL_ERROR}
        assert client.get("/nowhere").status_code == 404
        assert client.get("/predict").status_code == 405
        text = client.get("/metrics").text
    assert 'cxml_requests_total{endpoint="/predict",code="500"} 1' in text
    assert 'cxml_requests_total{endpoint="other",code="404"} 1' in text
    assert 'cxml_requests_total{endpoint="/predict",code="405"} 1' in text
    assert "cxml_request_errors_total 3" in text
    assert "cxml_predict_latency_seconds_count 0" in text


def test_a_tampered_bundle_does_not_start(tmp_path: Path, release_dir: Path) -> None:
    import shutil

    copy = tmp_path / "release"
    shutil.copytree(release_dir, copy)
    (copy / "release.json").write_text((copy / "release.json").read_text().replace('"7"', '"8"'))
    with pytest.raises(DeployError, match="does not match its sha256"):
        settings_from_args(parse_args(["--bundle", str(copy)]))


def test_bare_model_file_and_option_checks(tmp_path: Path, release_dir: Path) -> None:
    settings = settings_from_args(
        parse_args(["--model", str(release_dir / "model.pt"), "--model-version", "9"])
    )
    assert settings.model_version == "9" and settings.release_name.startswith("9-")
    with pytest.raises(ConfigError, match="file not found"):
        settings_from_args(parse_args(["--model", str(tmp_path / "none.pt")]))
    with pytest.raises(ConfigError, match="--threads"):
        settings_from_args(parse_args(["--bundle", str(release_dir), "--threads", "0"]))
    with pytest.raises(ConfigError, match="--max-active"):
        settings_from_args(parse_args(["--bundle", str(release_dir), "--max-active", "0"]))
    with pytest.raises(ConfigError, match="--max-queue"):
        settings_from_args(parse_args(["--bundle", str(release_dir), "--max-queue", "-1"]))
    queued = settings_from_args(
        parse_args(["--bundle", str(release_dir), "--max-active", "3", "--max-queue", "0"])
    )
    assert (queued.max_active, queued.max_queue) == (3, 0)


@pytest.mark.slow
def test_a_real_serve_process_answers_and_stops_cleanly(release_dir: Path, tmp_path: Path) -> None:
    argv = ["--bundle", str(release_dir), "--workers", "2"]
    with running_serve(argv, tmp_path / "serve.log") as served:
        base = served.url
        response = httpx.post(
            f"{base}/predict", files=multipart(png_bytes(), png_bytes(9)), timeout=10
        )
        assert response.status_code == 200 and len(response.json()["predictions"]) == 2
        assert httpx.get(f"{base}/version", timeout=5).json()["model_version"] == "7"
        time.sleep(2)  # both workers up
        for _ in range(20):  # a new connection each time, so both workers answer some
            httpx.post(f"{base}/predict", files=multipart(png_bytes()), timeout=10)
        # the workers count into one shared set of metrics, whichever of them is asked
        for _ in range(6):
            text = httpx.get(f"{base}/metrics", timeout=5).text
            assert 'cxml_requests_total{endpoint="/predict",code="200"} 21' in text
            assert "cxml_images_total 22" in text
    # uvicorn finishes in-flight requests, then re-raises SIGTERM (as process managers expect)
    assert served.process.returncode in (0, -signal.SIGTERM)


def test_folded_model_gives_the_reference_probabilities(
    service: PredictionService, release_dir: Path
) -> None:
    import torch

    from cxml.ml import models

    reference, metadata = models.load_model_file(release_dir / "model.pt")
    batch = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    with torch.inference_mode():
        expected = torch.softmax(reference(models.preprocess(batch, metadata)), dim=1)
    got = torch.tensor(service.classify(batch))
    assert torch.allclose(got, expected, atol=1e-5)


def test_default_workers_and_threads_fit_the_cores() -> None:
    assert default_workers("cuda:0") == 1
    assert 1 <= default_workers("cpu") <= 4
    assert default_threads(4) >= 1


@pytest.mark.slow
def test_workers_share_the_port_and_a_bad_model_stops_them_all(
    tmp_path: Path, release_dir: Path
) -> None:
    broken = tmp_path / "model.pt"
    broken.write_bytes((release_dir / "model.pt").read_bytes()[:-100])
    process = subprocess.run(
        [
            PYTHON,
            "-m",
            "cxml.serve",
            "--model",
            str(broken),
            "--workers",
            "2",
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 2, process.stdout + process.stderr
    assert "error: " in process.stderr and "not a readable cxml model file" in process.stderr

"""The demo page served with the model: /, its assets, the bundle's examples, --no-ui, headers,
metrics; and the page itself in a real headless chromium, against a real `cxml serve`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from cxml.core.config import DataConfig
from cxml.deploy import bundle as release_builder
from cxml.deploy import plan
from cxml.deploy.host.settings import HostSettings
from cxml.records import release as bundle
from cxml.records.examples import EXAMPLES_FILE_NAME, read_examples
from cxml.serve.app import create_app
from cxml.serve.service import PredictionService
from cxml.serve.step import parse_args, settings_from_args
from cxml.serve.ui import CONTENT_SECURITY_POLICY
from tests.support.deploy import PYTHON, make_model_file
from tests.support.serving import running_serve, save_release
from tests.support.tabular import mlp_metadata

UI_FILES = Path(__file__).resolve().parents[2] / "src" / "cxml" / "serve" / "ui"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "demo-page.png"
DOCS_TABULAR_SCREENSHOT = DOCS_SCREENSHOT.with_name("demo-page-tabular.png")


def build_bundle(
    model: Path,
    target_dir: Path,
    *,
    metrics: dict[str, float] | None = None,
    data: DataConfig | None = None,
    model_name: str = "digits-classifier",
) -> Path:
    return save_release(
        model,
        target_dir,
        model_name=model_name,
        git_commit="c0ffee",
        metrics=metrics or {"accuracy": 0.97, "f1_macro": 0.968, "latency_p50_ms": 0.3},
        extra_files=release_builder.bundle_example_files(data or DataConfig()),
    )


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = make_model_file(tmp_path_factory.mktemp("model") / "model.pt", seed=3)
    return build_bundle(model, tmp_path_factory.mktemp("release"))


def client_for(*argv: str) -> TestClient:
    service = PredictionService(settings_from_args(parse_args([*argv, "--device", "cpu"])))
    service.warm_up()
    return TestClient(create_app(service))


@pytest.fixture(scope="module")
def client(release_dir: Path) -> Iterator[TestClient]:
    with client_for("--bundle", str(release_dir)) as test_client:
        yield test_client


# --- HTTP ------------------------------------------------------------------------------------


def test_the_page_and_its_assets_have_strict_security_headers(client: TestClient) -> None:
    for path, media_type in (
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(media_type)
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "default-src 'self'" in CONTENT_SECURITY_POLICY
        assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert client.get("/ui/other.js").status_code == 404
    assert client.get("/ui/..%2Fservice.py").status_code == 404


def test_the_page_has_no_inline_script_or_style_and_loads_nothing_from_elsewhere() -> None:
    page = (UI_FILES / "index.html").read_text(encoding="utf-8")
    assert re.findall(r"<script(?![^>]*\bsrc=)", page) == []
    assert "<style" not in page and " style=" not in page and "on" + "click=" not in page
    for text in (page, (UI_FILES / "app.js").read_text(), (UI_FILES / "style.css").read_text()):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    # the page posts to /predict alone: what it can upload is what /predict accepts
    script = (UI_FILES / "app.js").read_text(encoding="utf-8")
    assert re.findall(r'method:\s*"(\w+)"', script) == ["POST"]
    assert re.findall(r'fetch\("([^"]+)", \{ method: "POST"', script) == ["/predict"]


def test_the_page_is_accessible_by_construction() -> None:
    page = (UI_FILES / "index.html").read_text(encoding="utf-8")
    assert '<input type="file" id="image-file"' in page
    assert '<label for="image-file"' in page
    assert 'aria-live="polite"' in page
    assert '<html lang="en">' in page and 'name="viewport"' in page
    assert "prefers-color-scheme: dark" in (UI_FILES / "style.css").read_text(encoding="utf-8")


def test_the_bundle_examples_are_listed_and_served(client: TestClient, release_dir: Path) -> None:
    listed = client.get("/examples").json()["examples"]
    assert len(listed) == release_builder.EXAMPLES_PER_BUNDLE
    assert [e["label"] for e in listed] == [str(i) for i in range(len(listed))]
    for entry in listed:
        response = client.get(entry["url"])
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.content == (release_dir / entry["name"]).read_bytes()
    for name in ("model.pt", "release.json", EXAMPLES_FILE_NAME, "example-99.png"):
        assert client.get(f"/examples/{name}").status_code == 404


def test_the_examples_are_in_the_checksums_and_the_bundle_verifies(release_dir: Path) -> None:
    bundle.verify_bundle(release_dir)
    listed = bundle.manifest_checksums(release_dir)
    examples = read_examples(release_dir)
    assert {e.name for e in examples} | {EXAMPLES_FILE_NAME} <= set(listed)


def test_the_digits_examples_come_from_the_test_split() -> None:
    import numpy as np
    from sklearn.datasets import load_digits

    from cxml.ml.data import stratified_split

    labels = load_digits().target
    for seed, val, test in ((0, 0.15, 0.15), (7, 0.2, 0.1)):
        expected = stratified_split(labels, val, test, seed)[2].tolist()
        assert release_builder.test_split_indices(labels, val, test, seed) == expected
    assert np.unique(labels).size == 10


def ml_test_split_rows(data: DataConfig) -> tuple[list[list[float]], list[str]]:
    """The test split cxml.ml cuts for `data`: its rows and their class names."""
    from cxml.ml.data import load_dataset

    dataset = load_dataset(data)
    rows: list[list[float]] = dataset.test.images.flatten(1).tolist()
    return rows, [dataset.class_names[int(i)] for i in dataset.test.labels]


def assert_rows_from_the_test_split(data: DataConfig, count: int) -> list[str]:
    picked = release_builder.pick_example_rows(data, count)
    rows, labels = ml_test_split_rows(data)
    assert [r.name for r in picked] == [f"row-{i}" for i in range(count)]
    for row in picked:
        as_float32 = [float(f"{v:.7g}") for v in row.features]
        matches = [
            i
            for i, test_row in enumerate(rows)
            if all(
                abs(a - b) <= 1e-5 * max(1.0, abs(b))
                for a, b in zip(as_float32, test_row, strict=True)
            )
        ]
        assert matches, f"{row.name} is not a test-split row"
        assert labels[matches[0]] == row.label
    return [r.label for r in picked]


def test_the_breast_cancer_example_rows_come_from_the_test_split() -> None:
    for seed, val, test in ((0, 0.15, 0.15), (5, 0.2, 0.1)):
        data = DataConfig(
            source="breast_cancer", val_fraction=val, test_fraction=test, split_seed=seed
        )
        labels = assert_rows_from_the_test_split(data, 4)
        assert labels == ["malignant", "benign", "malignant", "benign"]


def write_table(path: Path, rows: int, *, label: str = "kind") -> Path:
    lines = [f"width,{label},height,noise"]
    for i in range(rows):
        kind = ("small", "large", "medium")[i % 3]
        lines.append(f"{i * 1.5},{kind},{100 - i},{(i * 7) % 11 / 10}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_example_rows_come_from_the_test_split_in_the_models_column_order(
    tmp_path: Path,
) -> None:
    table = write_table(tmp_path / "table.csv", 60)
    data = DataConfig(
        source="csv",
        path=str(table),
        label_column="kind",
        feature_columns=("noise", "width"),
        split_seed=3,
    )
    labels = assert_rows_from_the_test_split(data, 5)
    assert labels == ["large", "medium", "small", "large", "medium"]  # the classes sorted
    assert all(len(row.features) == 2 for row in release_builder.pick_example_rows(data, 5))
    folder = tmp_path / "splits"
    folder.mkdir()
    write_table(folder / "train.csv", 30)
    write_table(folder / "test.csv", 9)
    whole_file = DataConfig(source="csv", path=str(folder), label_column="kind")
    picked = release_builder.pick_example_rows(whole_file, 3)
    assert [(r.label, r.features) for r in picked] == [
        ("large", (1.5, 99.0, 0.7)),
        ("medium", (3.0, 98.0, 0.3)),
        ("small", (0.0, 100.0, 0.0)),
    ]


def test_a_table_the_examples_cannot_read_leaves_the_release_without_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = write_table(tmp_path / "table.csv", 30)
    data = DataConfig(source="csv", path=str(table), label_column="missing")
    assert release_builder.bundle_example_files(data) == {}
    assert "ships no examples" in capsys.readouterr().err


def test_imagefolder_examples_are_test_images_with_their_folder_as_label(tmp_path: Path) -> None:
    from tests.support.deploy import png_bytes

    for split in ("train", "test"):
        for label in ("cat", "dog"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                (folder / f"{i}.png").write_bytes(png_bytes(10 * i + (split == "test")))
    (tmp_path / "test" / "cat" / "notes.txt").write_text("not an image")
    picked = release_builder.pick_examples(DataConfig(source="imagefolder", path=str(tmp_path)), 3)
    assert [(e.name, e.label) for e in picked] == [
        ("example-0.png", "cat"),
        ("example-1.png", "dog"),
        ("example-2.png", "cat"),
    ]
    assert picked[0].data == (tmp_path / "test" / "cat" / "0.png").read_bytes()


def test_the_deploy_uploads_the_examples_before_the_manifest(release_dir: Path) -> None:
    extra = sorted(set(bundle.manifest_checksums(release_dir)) - {"model.pt", "release.json"})
    info = bundle.load_bundle(release_dir).info
    agent = plan.HostAgent(HostSettings(root=Path("/srv/cxml")), ("python3",))
    steps = plan.plan_deploy(agent, info, str(release_dir), "abcd", extra).steps
    batch = steps[1].stdin or ""
    uploaded = re.findall(r"put \S+/([\w.-]+)\"? ", batch)
    assert uploaded[-1] == "SHA256SUMS" and set(extra) <= set(uploaded)


def test_no_ui_turns_the_page_off_and_keeps_the_api(release_dir: Path) -> None:
    from tests.support.deploy import png_bytes

    with client_for("--bundle", str(release_dir), "--no-ui") as quiet:
        for path in ("/", "/ui/app.js", "/ui/style.css", "/examples", "/examples/example-0.png"):
            assert quiet.get(path).status_code == 404, path
        files = [("images", ("a.png", png_bytes(), "image/png"))]
        assert quiet.post("/predict", files=files).status_code == 200


def test_a_bare_model_file_has_the_page_without_examples(tmp_path: Path) -> None:
    model = make_model_file(tmp_path / "model.pt", seed=1)
    with client_for("--model", str(model)) as bare:
        assert bare.get("/").status_code == 200
        assert bare.get("/examples").json() == {"examples": []}


def test_the_page_and_assets_are_counted_in_metrics(release_dir: Path) -> None:
    with client_for("--bundle", str(release_dir)) as fresh:
        for path in ("/", "/ui/app.js", "/ui/style.css", "/examples", "/examples/example-0.png"):
            fresh.get(path)
        fresh.get("/ui/missing.js")
        text = fresh.get("/metrics").text
    assert 'cxml_requests_total{endpoint="/",code="200"} 1' in text
    assert 'cxml_requests_total{endpoint="/ui",code="200"} 2' in text
    assert 'cxml_requests_total{endpoint="/ui",code="404"} 1' in text
    assert 'cxml_requests_total{endpoint="/examples",code="200"} 2' in text


def test_a_damaged_examples_index_leaves_the_page_without_examples(
    release_dir: Path, tmp_path: Path
) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(release_dir, damaged)
    (damaged / EXAMPLES_FILE_NAME).write_text('{"format": "cxml-examples/1", "examples": 3}')
    settings = settings_from_args(parse_args(["--bundle", str(release_dir), "--device", "cpu"]))
    from dataclasses import replace

    from cxml.serve.ui import bundle_examples

    moved = replace(settings, model_path=damaged / "model.pt")
    assert bundle_examples(moved) == []


# --- a tabular model's page ------------------------------------------------------------------

BREAST_CANCER = DataConfig(source="breast_cancer")


def make_tabular_model_file(path: Path) -> Path:
    """An untrained breast-cancer MLP file, as training would write it (the fast tests only need
    its inputs; the browser test trains one for real)."""
    import torch

    from cxml.core.config import ModelConfig
    from cxml.ml import models
    from cxml.ml.data import load_dataset

    data = load_dataset(BREAST_CANCER)
    torch.manual_seed(5)
    metadata = mlp_metadata(data, ModelConfig(architecture="mlp", hidden_sizes=(16, 8)))
    models.save_model_file(path, models.build_model("mlp", 2, 30, (16, 8)), metadata)
    return path


@pytest.fixture(scope="module")
def tabular_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = make_tabular_model_file(tmp_path_factory.mktemp("tabular") / "model.pt")
    return build_bundle(
        model,
        tmp_path_factory.mktemp("tabular-release"),
        data=BREAST_CANCER,
        model_name="breast-cancer",
        metrics={"accuracy": 0.965, "roc_auc": 0.99},
    )


def test_a_tabular_page_gets_its_form_from_version_and_rows_from_examples(
    tabular_release: Path,
) -> None:
    with client_for("--bundle", str(tabular_release)) as tabular:
        version = tabular.get("/version").json()
        listed = tabular.get("/examples").json()["examples"]
        assert tabular.get("/").status_code == 200
        assert tabular.get("/examples/row-0").status_code == 404  # rows live in the list
        first = tabular.post("/predict", json={"features": listed[0]["features"]})
        missing = tabular.post("/predict", json={"features": [None, *listed[0]["features"][1:]]})
    # the page builds one field per /version feature, in order, with its training range
    assert version["input"] == "features"
    assert [f["name"] for f in version["features"]] == version["feature_names"]
    assert all(f["min"] <= f["mean"] <= f["max"] for f in version["features"])
    # the bundle's test-split rows, with true labels, in the model's feature order
    assert len(listed) == release_builder.EXAMPLES_PER_BUNDLE
    assert [e["label"] for e in listed[:2]] == ["malignant", "benign"]
    assert all(len(e["features"]) == len(version["feature_names"]) for e in listed)
    assert all("url" not in e for e in listed)
    assert first.status_code == 200
    assert first.json()["predictions"][0]["class"] in ("malignant", "benign")
    # what the form sends for an empty field: the server names the feature, the page shows it
    assert missing.status_code == 422
    assert "'mean radius'" in missing.json()["error"]


def test_the_tabular_form_is_built_by_the_page_script_and_is_accessible() -> None:
    page = (UI_FILES / "index.html").read_text(encoding="utf-8")
    script = (UI_FILES / "app.js").read_text(encoding="utf-8")
    assert '<form id="features-form" novalidate>' in page
    assert '<button type="button" id="fill-example"' in page
    assert '<button type="submit" id="predict-features"' in page
    assert 'version.input === "features"' in script
    # every field: a <label for>, a numeric input, the training range as a described hint
    for needed in (
        "label.htmlFor = id",
        'input.type = "number"',
        'input.setAttribute("aria-describedby"',
        "feature.min",
        "feature.max",
        "JSON.stringify({ features: readFeatureValues() })",
        '"content-type": "application/json"',
        'setAttribute("aria-invalid", "true")',
    ):
        assert needed in script, needed
    css = (UI_FILES / "style.css").read_text(encoding="utf-8")
    assert ".feature-grid" in css and "auto-fill" in css


def test_the_example_rows_round_trip_through_the_bundle(tabular_release: Path) -> None:
    from cxml.records.examples import read_example_rows

    bundle.verify_bundle(tabular_release)
    rows = read_example_rows(tabular_release)
    expected = release_builder.pick_example_rows(BREAST_CANCER)
    assert rows == expected
    assert read_examples(tabular_release) == []
    assert EXAMPLES_FILE_NAME in bundle.manifest_checksums(tabular_release)


@pytest.mark.parametrize(
    "entry",
    [
        {"name": "row-0", "label": "a", "features": [1, "2"]},
        {"name": "row-0", "label": "a", "features": [1, True]},
        {"name": "row-0", "label": "a", "features": []},
        {"name": "row-0", "label": "a", "features": [10**400]},
        {"name": "../row", "label": "a", "features": [1]},
        {"name": "row-0", "label": "", "features": [1]},
    ],
)
def test_a_damaged_example_row_leaves_the_page_without_rows(
    tabular_release: Path, tmp_path: Path, entry: dict[str, object]
) -> None:
    from dataclasses import replace

    from cxml.serve.ui import bundle_example_rows

    damaged = tmp_path / "damaged"
    shutil.copytree(tabular_release, damaged)
    index = {"format": "cxml-examples/1", "examples": [entry]}
    (damaged / EXAMPLES_FILE_NAME).write_text(json.dumps(index), encoding="utf-8")
    settings = settings_from_args(parse_args(["--bundle", str(tabular_release), "--device", "cpu"]))
    assert bundle_example_rows(replace(settings, model_path=damaged / "model.pt")) == []


def test_example_rows_too_large_for_the_index_are_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    header = ",".join(f"f{i}" for i in range(2000)) + ",label"
    lines = [header] + [",".join(["1.23456789"] * 2000) + f",{i % 2}" for i in range(20)]
    (tmp_path / "wide.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = DataConfig(source="csv", path=str(tmp_path / "wide.csv"), test_fraction=0.3)
    assert release_builder.bundle_example_files(data) == {}
    assert "over examples.json's limit" in capsys.readouterr().err


# --- the page in a real browser --------------------------------------------------------------

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium and chromedriver are not installed (apt-get install chromium "
    "chromium-driver; CI installs them from .ci/apt-packages.txt)",
)


@contextmanager
def serving(release: Path, log_path: Path) -> Iterator[str]:
    """A real `cxml serve` of a release bundle on a free port; yields its base URL."""
    argv = ["--bundle", str(release), "--workers", "1", "--device", "cpu"]
    with running_serve(argv, log_path) as server:
        yield server.url


@pytest.fixture(scope="module")
def served_trained_model(
    trained_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real `cxml serve` of the trained digits model, bundled with its test examples."""
    work = tmp_path_factory.mktemp("served")
    eval_file = trained_dir / "metrics" / "eval.json"  # what `cxml run` measured, if it did
    evaluated = json.loads(eval_file.read_text(encoding="utf-8")) if eval_file.is_file() else {}
    metrics = release_builder.numeric_metrics(evaluated)
    release = build_bundle(trained_dir / "model" / "model.pt", work, metrics=metrics)
    with serving(release, work / "serve.log") as base:
        yield base


TABULAR_PARAMS = """
data:
  source: breast_cancer
model:
  architecture: mlp
  hidden_sizes: [32, 16]
train:
  epochs: 6
  batch_size: 64
  lr: 0.05
tracking:
  enabled: false
"""


@pytest.fixture(scope="module")
def served_tabular_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `cxml serve` of a breast-cancer MLP that `cxml train` trained (a few epochs),
    bundled with its test-split example rows."""
    work = tmp_path_factory.mktemp("served-tabular")
    (work / "params.yaml").write_text(TABULAR_PARAMS, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CXML_", "MLFLOW_"))}
    trained = subprocess.run(
        [PYTHON, "-m", "cxml.cli", "train"],
        cwd=work,
        env={**env, "MLFLOW_DISABLE_TELEMETRY": "true"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert trained.returncode == 0, trained.stdout + trained.stderr
    release = build_bundle(
        work / "model" / "model.pt",
        work,
        data=BREAST_CANCER,
        model_name="breast-cancer",
        metrics={"accuracy": 0.965, "f1_macro": 0.962, "roc_auc": 0.993},
    )
    with serving(release, work / "serve.log") as base:
        yield base


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1000,1250",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(30)
        yield driver
    finally:
        driver.quit()


def wait_until(condition: object, timeout_s: float = 20.0) -> object:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(None, timeout_s).until(lambda _: condition())  # type: ignore[operator]


def wait_ready(browser: object) -> None:
    """Until the page's script has marked <body data-ready>."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    wait_until(lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))


def open_page(browser: object, base: str) -> None:
    """`base`/ in the browser, once its answer is seen to carry the strict CSP; returns when the
    page is ready."""
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    page = httpx.get(f"{base}/", timeout=10)
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    browser.get(f"{base}/")
    wait_ready(browser)


@pytest.mark.slow
@needs_chromium
def test_the_page_in_a_real_browser_shows_what_predict_answers(
    served_trained_model: str, browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    base = served_trained_model
    open_page(browser, base)
    assert browser.find_element(By.ID, "model-name").text == "digits-classifier"
    facts = browser.find_element(By.ID, "facts").text
    assert "7" in facts and "small_cnn" in facts
    assert re.search(r"Accuracy\s*\d+\.\d%", browser.find_element(By.ID, "metrics").text)

    # upload a test image through the file input, as a person would
    example = httpx.get(f"{base}/examples", timeout=10).json()["examples"][3]
    image_file = tmp_path / "digit.png"
    image_file.write_bytes(httpx.get(base + example["url"], timeout=10).content)
    browser.find_element(By.ID, "image-file").send_keys(str(image_file))
    shown = str(wait_until(lambda: top_class(browser)))
    with image_file.open("rb") as handle:
        answer = httpx.post(
            f"{base}/predict", files=[("images", ("digit.png", handle, "image/png"))], timeout=10
        ).json()
    assert shown == answer["predictions"][0]["class"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#result .bars li")) == 5
    assert re.search(r"answered in \d+ ms", browser.find_element(By.ID, "latency").text)

    # an example from the bundle, by click
    buttons = browser.find_elements(By.CSS_SELECTOR, "#example-list button")
    assert len(buttons) == release_builder.EXAMPLES_PER_BUNDLE
    buttons[1].click()
    wait_until(lambda: "True label: 1" in browser.find_element(By.ID, "result").text)
    assert top_class(browser) == "1"  # the trained model reads this test digit right

    browser.save_screenshot(str(tmp_path / "demo-page.png"))
    assert (tmp_path / "demo-page.png").stat().st_size > 0
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":  # refresh the one docs/ shows
        browser.save_screenshot(str(DOCS_SCREENSHOT))

    # keyboard: on a fresh page, Tab reaches the file input (the drop zone's real control) first
    browser.refresh()
    wait_ready(browser)
    ActionChains(browser).send_keys(Keys.TAB).perform()
    assert browser.switch_to.active_element.get_attribute("id") == "image-file"

    check_dark_and_narrow(browser, tmp_path / "demo-page")

    problems = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert problems == []


@pytest.mark.slow
@needs_chromium
def test_the_tabular_form_in_a_real_browser_shows_what_predict_answers(
    served_tabular_model: str, browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    base = served_tabular_model
    version = httpx.get(f"{base}/version", timeout=10).json()
    open_page(browser, base)
    assert browser.find_element(By.ID, "model-name").text == "breast-cancer"
    assert not browser.find_element(By.ID, "features-input").get_attribute("hidden")
    assert browser.find_element(By.ID, "image-input").get_attribute("hidden")
    inputs = browser.find_elements(By.CSS_SELECTOR, "#feature-fields input")
    assert [i.get_attribute("name") for i in inputs] == version["feature_names"]
    for field, feature in zip(inputs, version["features"], strict=True):
        label = browser.find_element(By.CSS_SELECTOR, f"label[for='{field.get_attribute('id')}']")
        assert label.text == feature["name"]
        assert field.get_attribute("type") == "number"
        hint = browser.find_element(By.ID, f"{field.get_attribute('id')}-hint")
        assert field.get_attribute("aria-describedby").startswith(hint.get_attribute("id"))
        assert "–" in hint.text

    # keyboard alone: Tab reaches the example button, Enter fills a row, Enter in a field submits
    ActionChains(browser).send_keys(Keys.TAB).perform()
    assert browser.switch_to.active_element.get_attribute("id") == "fill-example"
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_until(lambda: inputs[0].get_attribute("value"))
    assert "true label: malignant" in browser.find_element(By.ID, "fill-status").text
    inputs[3].send_keys(Keys.ENTER)
    shown = str(wait_until(lambda: top_class(browser)))
    sent = [float(str(i.get_attribute("value"))) for i in inputs]
    answer = httpx.post(f"{base}/predict", json={"features": sent}, timeout=10).json()
    assert shown == answer["predictions"][0]["class"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#result .bars li")) == 2
    assert re.search(r"answered in \d+ ms", browser.find_element(By.ID, "latency").text)
    assert "True label: malignant" in browser.find_element(By.ID, "result").text

    # a missing value: the server's message, next to the field it names
    inputs[0].clear()
    browser.find_element(By.ID, "predict-features").click()
    problem = browser.find_element(By.ID, "feature-0-error")
    wait_until(lambda: problem.text)
    assert "'mean radius'" in problem.text and "not a number" in problem.text
    assert inputs[0].get_attribute("aria-invalid") == "true"
    assert browser.switch_to.active_element.get_attribute("id") == "feature-0"
    assert "refused the row (422)" in browser.find_element(By.ID, "result").text
    browser.save_screenshot(str(tmp_path / "demo-page-tabular-refused.png"))

    # the next example row (benign), by click, for the picture
    browser.find_element(By.ID, "fill-example").click()
    assert problem.text == "" and inputs[0].get_attribute("aria-invalid") is None
    browser.find_element(By.ID, "predict-features").click()
    wait_until(lambda: "True label: benign" in browser.find_element(By.ID, "result").text)
    browser.save_screenshot(str(tmp_path / "demo-page-tabular.png"))
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        browser.save_screenshot(str(DOCS_TABULAR_SCREENSHOT))

    check_dark_and_narrow(browser, tmp_path / "demo-page-tabular")

    # the one refusal above is logged by chromium as a failed load; nothing else may be
    problems = [
        e
        for e in browser.get_log("browser")
        if e["level"] in ("SEVERE", "WARNING") and "status of 422" not in e["message"]
    ]
    assert problems == []


def check_dark_and_narrow(browser: object, screenshots: Path) -> None:
    """Light and dark follow prefers-color-scheme, and nothing is wider than a phone's screen;
    a screenshot of each, named after `screenshots` (`<name>-dark.png`, `<name>-narrow.png`)."""
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    light = page_background(browser)
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    assert page_background(browser) != light
    browser.save_screenshot(f"{screenshots}-dark.png")
    browser.set_window_size(390, 844)
    assert browser.execute_script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
    browser.save_screenshot(f"{screenshots}-narrow.png")


def page_background(browser: object) -> str:
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    color: str = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
    return color


def top_class(browser: object) -> str | None:
    from selenium.common.exceptions import NoSuchElementException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    try:
        text: str = browser.find_element(By.ID, "top-class").text
    except NoSuchElementException:
        return None
    return text or None

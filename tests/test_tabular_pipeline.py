"""The tabular example end to end: `cxml init --example breast_cancer`, then `cxml run` (train ->
evaluate -> gate -> report, MLflow on SQLite) with the template's own settings reaches >= 95%
test accuracy; the model file, metrics, plots and MLflow model are those of an image run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxml.core.config import load_params, validate_ranges
from cxml.init import plan_files
from tests.conftest import PYTHON, git, run_cxml

CSV_PARAMS = (
    "data: {source: csv, path: data/table.csv, label_column: kind}\n"
    "model: {architecture: mlp, hidden_sizes: [8]}\n"
    "train: {epochs: 2, device: cpu}\n"
    "evaluate: {baseline: none, gate: ['accuracy >= 0']}\n"
    "tracking: {enabled: false}\n"
)


@pytest.fixture(scope="module")
def tabular_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tabular-run")
    init = run_cxml(
        "init",
        ".",
        "--example",
        "breast_cancer",
        "--no-dvc",
        "--workflows",
        "none",
        cwd=directory,
    )
    assert init.returncode == 0, init.stdout + init.stderr
    params = directory / "params.yaml"
    # CPU here; the template's epochs, batch size and learning rate are kept as they are
    params.write_text(params.read_text().replace("device: auto", "device: cpu"))
    # its own store: mlflow.set_tracking_uri in earlier in-process tests also sets the variable
    store = {"MLFLOW_TRACKING_URI": f"sqlite:///{directory / 'mlflow.db'}"}
    result = run_cxml("run", "--baseline", "none", cwd=directory, env=store, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return directory


@pytest.mark.slow
def test_init_writes_the_tabular_params(tabular_run: Path) -> None:
    params = load_params(tabular_run / "params.yaml", required=True)
    validate_ranges(params)
    assert params.data.source == "breast_cancer"
    assert params.model.architecture == "mlp"
    assert params.train.epochs == 15


@pytest.mark.slow
def test_run_reaches_95_percent_with_roc_auc_and_confusion(tabular_run: Path) -> None:
    metrics = json.loads((tabular_run / "metrics" / "eval.json").read_text())
    assert metrics["accuracy"] >= 0.95
    assert metrics["roc_auc"] >= 0.97
    assert metrics["f1_macro"] >= 0.94
    assert metrics["num_test_images"] == 86
    confusion = (tabular_run / "plots" / "confusion.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted" and len(confusion) == 87
    assert {line.split(",")[0] for line in confusion[1:]} == {"malignant", "benign"}
    gate = json.loads((tabular_run / "gate.json").read_text())
    assert gate["decision"] == "pass"
    assert (tabular_run / "report.md").is_file()


@pytest.mark.slow
def test_model_file_carries_features_and_mlflow_holds_the_model(tabular_run: Path) -> None:
    import mlflow
    import torch

    from cxml.ml.data import load_dataset
    from cxml.ml.models import load_model_file, preprocess

    model, metadata = load_model_file(tabular_run / "model" / "model.pt")
    assert metadata.architecture == "mlp" and metadata.input_size == (30, 1, 1)
    assert metadata.feature_names[0] == "mean radius" and len(metadata.feature_max) == 30
    run = json.loads((tabular_run / "run.json").read_text())
    assert run["model_version"] == "1"

    # the registered MLflow model takes raw feature rows and answers like the model file
    data = load_dataset(load_params(tabular_run / "params.yaml").data, decode=("test",))
    rows = data.test.images[:4]
    mlflow.set_tracking_uri(f"sqlite:///{tabular_run / 'mlflow.db'}")
    logged = mlflow.pytorch.load_model("models:/cxml-model/1")
    with torch.inference_mode():
        expected = model(preprocess(rows, metadata))
        served = logged(rows)
    assert torch.allclose(served, expected, atol=1e-5)
    with torch.inference_mode():
        assert torch.allclose(logged(rows.flatten(1)), expected, atol=1e-5)  # plain N,F rows


def test_a_bad_csv_stops_train_with_one_line_and_nothing_written(tmp_path: Path) -> None:
    (tmp_path / "table.csv").write_text("a,b,label\n1,2,x\n3,oops,y\n", encoding="utf-8")
    (tmp_path / "params.yaml").write_text(
        "data: {source: csv, path: table.csv}\nmodel: {architecture: mlp}\n"
        "train: {device: cpu}\ntracking: {enabled: false}\n",
        encoding="utf-8",
    )
    result = run_cxml("train", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: table.csv: row 3, column 'b': 'oops' is not a finite number; "
        "fix the cell or leave the column out of data.feature_columns"
    ]
    assert not (tmp_path / "model").exists() and "Traceback" not in result.stderr


def test_mlp_on_images_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("model: {architecture: mlp}\n", encoding="utf-8")
    result = run_cxml("train", cwd=tmp_path)
    assert result.returncode == 2
    assert "model.architecture: tabular data" in result.stderr


@pytest.mark.slow
def test_evaluate_refuses_data_the_model_was_not_trained_on(
    tabular_run: Path, tmp_path: Path
) -> None:
    params = (tabular_run / "params.yaml").read_text()
    changed = params.replace("  # feature_columns: []", "  feature_columns: [mean radius]")
    (tmp_path / "params.yaml").write_text(changed.replace("source: breast_cancer", "source: csv"))
    table = tmp_path / "t.csv"
    table.write_text("mean radius,label\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    (tmp_path / "params.yaml").write_text(
        (tmp_path / "params.yaml").read_text().replace("  # path: data/table.csv", "  path: t.csv")
    )
    model = tabular_run / "model" / "model.pt"
    result = run_cxml("evaluate", "--model", str(model), "--baseline", "none", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error:" in result.stderr and "Traceback" not in result.stderr


def csv_table(rows: int) -> str:
    lines = [f"{i % 7 * 0.5:.1f},{50 + i},{'cat' if i % 2 else 'dog'}" for i in range(rows)]
    return "height,weight,kind\n" + "\n".join(lines) + "\n"


def test_the_pipeline_lists_a_csv_as_a_dependency_of_train_and_evaluate() -> None:
    import yaml

    for example in ("digits", "breast_cancer"):
        planned = plan_files((), actions=None, use_dvc=True, example=example)
        pipeline = yaml.safe_load(next(f.content for f in planned if f.path == "dvc.yaml"))
        assert "deps" not in pipeline["stages"]["train"]  # built-in data: nothing to add
    planned = plan_files(
        (), actions=None, use_dvc=True, example="digits", data_dependency="data/my table.csv"
    )
    pipeline = yaml.safe_load(next(f.content for f in planned if f.path == "dvc.yaml"))
    assert pipeline["stages"]["train"]["deps"] == ["data/my table.csv"]
    assert pipeline["stages"]["evaluate"]["deps"] == ["model/model.pt", "data/my table.csv"]


@pytest.mark.slow
def test_init_and_dvc_repro_on_a_csv_params(tmp_path: Path) -> None:
    """`cxml init` keeps a csv params.yaml and makes its table a DVC dependency: `dvc repro`
    trains and evaluates, and a changed table makes train (and so evaluate) stale."""
    import os
    import subprocess
    import sys

    import yaml

    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "data").mkdir()
    table = tmp_path / "data" / "table.csv"
    table.write_text(csv_table(60), encoding="utf-8")
    (tmp_path / "params.yaml").write_text(CSV_PARAMS, encoding="utf-8")
    init = run_cxml("init", ".", "--workflows", "none", cwd=tmp_path)
    assert init.returncode == 0, init.stdout + init.stderr
    assert (tmp_path / "params.yaml").read_text() == CSV_PARAMS  # kept
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]
    assert "data/table.csv" in stages["train"]["deps"]
    assert "data/table.csv" in stages["evaluate"]["deps"]

    bin_dir = str(Path(PYTHON).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    def dvc(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "dvc", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    dvc("repro")
    metrics = json.loads((tmp_path / "metrics" / "eval.json").read_text())
    assert metrics["num_features"] == 2 and metrics["num_test_images"] > 0
    assert json.loads(dvc("status", "--json")) == {}
    table.write_text(csv_table(70), encoding="utf-8")
    stale = json.loads(dvc("status", "--json"))
    assert "train" in stale and "evaluate" in stale

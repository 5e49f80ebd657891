"""Evaluate and gate on a really trained model: metrics files, baselines from git, exit codes."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import git, run_cxml


@pytest.fixture
def trained(trained_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's trained workspace (tests change files in it)."""
    target = tmp_path / "ws"
    shutil.copytree(trained_dir, target)
    return target


def test_eval_outputs(trained: Path) -> None:
    metrics = json.loads((trained / "metrics/eval.json").read_text())
    for name in (
        "accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "latency_p50_ms",
        "latency_p95_ms",
    ):
        assert isinstance(metrics[name], float), name
    assert metrics["accuracy"] >= 0.9
    assert metrics["latency_p50_ms"] <= metrics["latency_p95_ms"]
    assert set(metrics["per_class_accuracy"]) == {str(i) for i in range(10)}
    confusion = list(csv.DictReader((trained / "plots/confusion.csv").open()))
    assert len(confusion) == metrics["num_test_images"]
    correct = sum(row["actual"] == row["predicted"] for row in confusion)
    assert correct / len(confusion) == pytest.approx(metrics["accuracy"], abs=1e-6)
    per_class = list(csv.DictReader((trained / "plots/per_class.csv").open()))
    assert [row["class"] for row in per_class] == [str(i) for i in range(10)]
    report = (trained / "report.md").read_text()
    assert report.startswith("<!-- cxml-report: cxml-model -->")


def test_baseline_from_a_git_ref_and_gate_exit_codes(trained: Path) -> None:
    git(trained, "init", "-q", "-b", "main")
    git(trained, "commit", "-q", "--allow-empty", "-m", "root")
    baseline = {"accuracy": 0.999, "f1_macro": 0.5, "latency_p95_ms": 1000.0}
    (trained / "metrics/eval.json").write_text(json.dumps(baseline))
    git(trained, "add", "metrics/eval.json")
    git(trained, "commit", "-q", "-m", "baseline")
    git(trained, "checkout", "-q", "-b", "feature")

    rules = ["--gate", "accuracy >= baseline - 0.005", "--gate", "f1_macro > baseline"]
    result = run_cxml("evaluate", "--baseline", "git:main", *rules, cwd=trained)
    assert result.returncode == 1, result.stderr  # accuracy below 0.994 fails
    assert "baseline: metrics/eval.json at main" in result.stdout
    gate = json.loads((trained / "gate.json").read_text())
    assert gate["decision"] == "fail"
    assert gate["baseline"]["metrics"] == baseline
    assert [r["result"] for r in gate["rules"]] == ["fail", "pass"]
    assert gate["rules"][0]["threshold"] == pytest.approx(0.994)

    assert (
        run_cxml("evaluate", "--baseline", "git:main", "--no-fail", *rules, cwd=trained).returncode
        == 0
    )

    # `auto` finds the same baseline through GITHUB_BASE_REF, as in a pull_request job
    result = run_cxml(
        "gate", "--gate", "f1_macro > baseline", cwd=trained, env={"GITHUB_BASE_REF": "main"}
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((trained / "gate.json").read_text())["baseline"]["ref"] == "main"


def test_no_baseline_is_said_plainly(trained: Path) -> None:
    result = run_cxml("gate", "--baseline", "auto", cwd=trained)
    assert result.returncode == 0
    assert "skipped (no baseline)" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--gate", "acuracy >= 0.9"],
            "error: gate rule 'acuracy >= 0.9': unknown metric 'acuracy'; known metrics: accuracy,",
        ),
        (["--gate", "accuracy >>= 0.9"], "error: gate rule 'accuracy >>= 0.9': "),
        (
            ["--baseline", "git:no-such-branch"],
            "error: baseline: git ref 'no-such-branch' not found",
        ),
        (["--baseline", "yesterday"], "error: baseline: unknown value 'yesterday'"),
    ],
)
def test_bad_gate_input_is_one_line_and_leaves_gate_json_alone(
    trained: Path, args: list[str], message: str
) -> None:
    before = (trained / "gate.json").read_bytes()
    result = run_cxml("gate", *args, cwd=trained)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(message), result.stderr
    assert (trained / "gate.json").read_bytes() == before


def test_unknown_metric_fails_before_any_evaluation(trained: Path) -> None:
    (trained / "metrics/eval.json").unlink()
    (trained / "params.yaml").write_text("evaluate:\n  gate: ['accuracy >= baseline -']\n")
    result = run_cxml("evaluate", cwd=trained)
    assert result.returncode == 2
    assert "gate rule 'accuracy >= baseline -'" in result.stderr
    assert not (trained / "metrics/eval.json").exists()


def test_missing_model_file(trained: Path) -> None:
    (trained / "model/model.pt").unlink()
    result = run_cxml("evaluate", cwd=trained)
    assert result.returncode == 2
    assert "model/model.pt: model file not found; run `cxml train` first" in result.stderr


def test_corrupt_gate_input_metrics(trained: Path) -> None:
    (trained / "metrics/eval.json").write_text("{not json")
    result = run_cxml("gate", cwd=trained)
    assert result.returncode == 2
    assert "metrics/eval.json: not valid JSON" in result.stderr
    assert "re-run `cxml evaluate`" in result.stderr


def test_a_bare_ref_is_a_git_baseline(trained: Path) -> None:
    git(trained, "init", "-q", "-b", "main")
    git(trained, "add", "metrics/eval.json")
    git(trained, "commit", "-q", "-m", "baseline")
    result = run_cxml("gate", "--baseline", "main", "--gate", "accuracy >= baseline", cwd=trained)
    assert result.returncode == 0, result.stderr
    assert json.loads((trained / "gate.json").read_text())["baseline"]["source"] == "git:main"


def test_gate_json_records_the_model_it_judged(trained: Path) -> None:
    """evaluate binds its verdict to the model file's bytes and run, for redeploy to check."""
    import hashlib

    gate = json.loads((trained / "gate.json").read_text())
    run = json.loads((trained / "run.json").read_text())
    model_bytes = (trained / "model/model.pt").read_bytes()
    assert gate["model"] == {
        "path": "model/model.pt",
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "run_id": run["run_id"],
    }
    assert run["run_id"]

    from cxml.records.gate import read_gate

    read = read_gate(trained / "gate.json")
    assert read.model_sha256 == hashlib.sha256(model_bytes).hexdigest()
    assert read.model_run_id == run["run_id"] and read.model_path == "model/model.pt"


def test_cxml_gate_records_a_missing_model_as_null(trained: Path) -> None:
    (trained / "model/model.pt").unlink()
    result = run_cxml("gate", "--baseline", "none", "--gate", "accuracy >= 0.5", cwd=trained)
    assert result.returncode == 0, result.stderr
    model = json.loads((trained / "gate.json").read_text())["model"]
    assert model["path"] == "model/model.pt" and model["sha256"] is None


def test_require_baseline_fails_before_evaluating(trained: Path) -> None:
    (trained / "metrics/eval.json").unlink()
    (trained / "params.yaml").write_text(
        "train:\n  epochs: 4\n  batch_size: 128\nevaluate:\n  require_baseline: true\n"
    )
    result = run_cxml("evaluate", "--baseline", "auto", cwd=trained)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no baseline"), result.stderr
    assert "evaluate.require_baseline: false" in lines[0]
    assert not (trained / "metrics/eval.json").exists()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_without_scikit_learn_match_it(seed: int) -> None:
    """Accuracy and macro precision/recall/F1 from a few lines of torch, as scikit-learn computes
    them (classes never predicted or absent from the test images count as 0)."""
    import random

    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    from cxml.evaluate import Predictions, classification_metrics

    rng = random.Random(seed)
    names = [f"c{i}" for i in range(7)]
    actual = [rng.randrange(6) for _ in range(200)]  # class c6 has no test images
    predicted = [a if rng.random() < 0.7 else rng.randrange(5) for a in actual]
    metrics = classification_metrics(Predictions(actual, predicted), names)
    precision, recall, f1, _ = precision_recall_fscore_support(
        actual, predicted, labels=list(range(7)), average="macro", zero_division=0
    )
    assert metrics["accuracy"] == round(float(accuracy_score(actual, predicted)), 6)
    assert metrics["precision_macro"] == pytest.approx(round(float(precision), 6), abs=1e-6)
    assert metrics["recall_macro"] == pytest.approx(round(float(recall), 6), abs=1e-6)
    assert metrics["f1_macro"] == pytest.approx(round(float(f1), 6), abs=1e-6)
    assert set(metrics["per_class_accuracy"]) == {f"c{i}" for i in range(6)}


def test_a_required_tracking_failure_at_evaluate_is_exit_3_before_gate_json(
    trained: Path,
) -> None:
    """The metrics go to MLflow off the critical path; a tracking server that does not answer
    is still reported, per tracking.required, before the gate is written."""
    import socket

    (trained / "gate.json").unlink(missing_ok=True)
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    unreachable = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    result = run_cxml("evaluate", "--baseline", "none", cwd=trained, env=unreachable, timeout=120)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: MLflow"), result.stderr
    assert "Traceback" not in result.stderr
    assert not (trained / "gate.json").exists()


def test_a_training_run_missing_from_the_store_is_a_warning(trained: Path) -> None:
    """DVC reused a model trained against another store: run.json names a run this store does
    not have. Tracking works; there is just no run to add `eval.*` to: warn, write the gate."""
    (trained / "gate.json").unlink(missing_ok=True)
    run_file = trained / "run.json"
    original = run_file.read_text()
    run = json.loads(original)
    run["run_id"] = "0" * 32  # a run the store does not have
    run_file.write_text(json.dumps(run))
    try:
        result = run_cxml("evaluate", "--baseline", "none", cwd=trained)
    finally:
        run_file.write_text(original)
    assert result.returncode == 0, result.stderr
    assert "is not in this tracking store" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert (trained / "gate.json").exists()
    assert (trained / "metrics/eval.json").exists()


def eval_metrics_in_store(workspace: Path) -> dict[str, float]:
    """The `eval.*` metrics MLflow holds for run.json's run, read with MLflow itself."""
    from mlflow.tracking import MlflowClient

    run_id = json.loads((workspace / "run.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    metrics = client.get_run(run_id).data.metrics
    return {key: value for key, value in metrics.items() if key.startswith("eval.")}


def test_cxml_run_collects_the_metrics_it_logged_in_the_background(trained: Path) -> None:
    """`cxml run` evaluates with --tracking-in-background and waits for it after the report."""
    written = json.loads((trained / "metrics/eval.json").read_text())
    assert eval_metrics_in_store(trained)["eval.accuracy"] == pytest.approx(written["accuracy"])
    assert not (trained / ".cxml/eval-tracking.json").exists()


def test_evaluate_in_the_background_then_report_collects(trained: Path) -> None:
    from mlflow.tracking import MlflowClient

    run_id = json.loads((trained / "run.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{trained / 'mlflow.db'}")
    client.log_metric(run_id, "eval.accuracy", -1.0)  # so the new value is seen to arrive
    evaluated = run_cxml(
        "evaluate", "--baseline", "none", "--tracking-in-background", cwd=trained, timeout=120
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert "logged in the background" in evaluated.stdout + evaluated.stderr
    reported = run_cxml("report", "--dry-run", "--target", "none", cwd=trained, timeout=120)
    assert reported.returncode == 0, reported.stderr
    assert "in the store" in reported.stdout + reported.stderr
    written = json.loads((trained / "metrics/eval.json").read_text())
    assert eval_metrics_in_store(trained)["eval.accuracy"] == pytest.approx(written["accuracy"])
    assert not (trained / ".cxml/eval-tracking.json").exists()


def test_a_background_tracking_failure_fails_the_report_step_after_writing_it(
    trained: Path,
) -> None:
    """tracking.required (the default): the report is written (and would be posted), then the
    step stops with exit 3 naming the failure (a store file that is not a database)."""
    (trained / "junk.db").write_text("not a database\n" * 200)
    broken = {"MLFLOW_TRACKING_URI": f"sqlite:///{trained / 'junk.db'}"}
    evaluated = run_cxml(
        "evaluate",
        "--baseline",
        "none",
        "--tracking-in-background",
        cwd=trained,
        env=broken,
        timeout=120,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    (trained / "report.md").unlink(missing_ok=True)
    reported = run_cxml("report", "--dry-run", "--target", "none", cwd=trained, timeout=120)
    assert reported.returncode == 3, reported.stdout + reported.stderr
    assert (
        reported.stderr.strip()
        .splitlines()[-1]
        .startswith("error: MLflow: logging evaluation metrics failed")
    ), reported.stderr
    assert "Traceback" not in reported.stderr
    assert (trained / "report.md").exists()
    assert not (trained / ".cxml/eval-tracking.json").exists()

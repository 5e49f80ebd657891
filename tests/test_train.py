"""Training for real on the digits: outputs, bad inputs, NaN, resume after a kill, reproducibility."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import FAST_PARAMS, PYTHON, run_cxml, write_params
from tests.support.train import wait_for_checkpoint_epoch

OUTPUTS = ("model/model.pt", "metrics/train.json", "plots/train.csv", "run.json")


def assert_no_outputs(directory: Path) -> None:
    left = [name for name in OUTPUTS if (directory / name).exists()]
    assert left == [], f"half-done outputs left behind: {left}"
    tmp_files = [p for p in directory.rglob("*.tmp")]
    assert tmp_files == []


def test_train_writes_model_metrics_and_plots(workdir: Path) -> None:
    write_params(workdir, FAST_PARAMS)
    result = run_cxml("train", cwd=workdir)
    assert result.returncode == 0, result.stderr
    # one plain line per epoch when not on a terminal (CI logs)
    assert [
        line.split()[1] for line in result.stdout.splitlines() if line.startswith("epoch ")
    ] == ["1/3", "2/3", "3/3"]
    metrics = json.loads((workdir / "metrics/train.json").read_text())
    assert metrics["epochs"] == 3 and 0.5 < metrics["val_accuracy"] <= 1.0
    rows = list(csv.DictReader((workdir / "plots/train.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert set(rows[0]) == {
        "epoch",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "seconds",
    }
    assert float(rows[0]["lr"]) > float(rows[2]["lr"])  # cosine schedule

    from cxml.ml.models import load_model_file

    model, metadata = load_model_file(workdir / "model/model.pt")
    assert metadata.architecture == "small_cnn"
    assert metadata.class_names == tuple(str(i) for i in range(10))
    assert metadata.input_size == (1, 8, 8)
    assert len(metadata.params_hash or "") == 16 and len(metadata.data_hash or "") == 16
    assert sum(p.numel() for p in model.parameters()) > 1000


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("train:\n  lr: fast\n", "error: params.yaml: train.lr: expected a number, got 'fast'"),
        ("train:\n  learning_rate: 0.1\n", "error: params.yaml: train.learning_rate: unknown key"),
        (
            "model:\n  architecture: resnet1800\n",
            "error: model.architecture: unknown architecture 'resnet1800'",
        ),
        (
            "data:\n  source: imagefolder\n  path: no/such/dir\n",
            "error: data.path: no/such/dir is not a directory",
        ),
        ("model:\n  weights: missing.pth\n", "error: model.weights: missing.pth not found"),
        (
            "train:\n  device: cuda\n",
            "error: train.device: cuda was asked for but no CUDA GPU is visible",
        ),
    ],
)
def test_bad_input_one_line_and_nothing_written(workdir: Path, params: str, message: str) -> None:
    write_params(workdir, params + "tracking:\n  enabled: false\n")
    result = run_cxml("train", cwd=workdir)
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and error_lines[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr
    assert_no_outputs(workdir)


def make_folder_dataset(
    root: Path, *, empty_class: bool = False, corrupt: bool = False, extra_test_class: bool = False
) -> None:
    for split in ("train", "val", "test"):
        for name, colour in (("red", (220, 0, 0)), ("blue", (0, 0, 220))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (10, 10), colour).save(folder / f"{i}.png")
    if empty_class:
        (root / "train" / "green").mkdir()
    if corrupt:
        (root / "train" / "red" / "bad.jpg").write_bytes(b"not an image")
    if extra_test_class:
        (root / "test" / "green").mkdir()
        Image.new("RGB", (10, 10), (0, 220, 0)).save(root / "test" / "green" / "0.png")


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty_class", "train/green: class folder has no images"),
        ("corrupt", "1 unreadable image file(s):"),
        ("extra_test_class", "class 'green' is in the test split but not in train"),
    ],
)
def test_bad_dataset_one_line_and_nothing_written(workdir: Path, kind: str, message: str) -> None:
    make_folder_dataset(workdir / "data", **{kind: True})
    write_params(
        workdir,
        "data:\n  source: imagefolder\n  path: data\n  image_size: 8\ntracking:\n  enabled: false\n",
    )
    result = run_cxml("train", cwd=workdir)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert_no_outputs(workdir)


def test_imagefolder_with_a_torchvision_model(workdir: Path) -> None:
    make_folder_dataset(workdir / "data")
    write_params(
        workdir,
        "data:\n  source: imagefolder\n  path: data\n  image_size: 16\n  crop_padding: 2\n  flip: true\n"
        "model:\n  architecture: mobilenet_v3_small\ntrain:\n  epochs: 1\n  batch_size: 4\n"
        "tracking:\n  enabled: false\n",
    )
    result = run_cxml("train", cwd=workdir)
    assert result.returncode == 0, result.stderr
    from cxml.ml.models import load_model_file

    _, metadata = load_model_file(workdir / "model/model.pt")
    assert metadata.class_names == ("blue", "red") and metadata.input_size == (3, 16, 16)


def test_nan_loss_stops_with_a_clear_error_and_no_model(workdir: Path) -> None:
    write_params(workdir, "train:\n  lr: 1.0e30\n  epochs: 2\ntracking:\n  enabled: false\n")
    result = run_cxml("train", cwd=workdir)
    assert result.returncode == 3, result.stdout + result.stderr  # a runtime failure, not input
    assert (
        "error: the training loss became nan" in result.stderr
        or "error: the training loss became inf" in result.stderr
    )
    assert "lower train.lr" in result.stderr
    assert_no_outputs(workdir)


def test_two_runs_give_identical_metrics(tmp_path: Path) -> None:
    outputs = []
    for name in ("a", "b"):
        directory = tmp_path / name
        directory.mkdir()
        write_params(directory, FAST_PARAMS)
        assert run_cxml("run", "--no-fail", cwd=directory).returncode == 0
        outputs.append(directory)
    a, b = outputs
    assert (a / "metrics/train.json").read_bytes() == (b / "metrics/train.json").read_bytes()
    eval_a = json.loads((a / "metrics/eval.json").read_text())
    eval_b = json.loads((b / "metrics/eval.json").read_text())
    for timing in ("latency_p50_ms", "latency_p95_ms"):  # wall-clock, never repeatable
        for name in (timing, f"{timing}_spread"):
            eval_a.pop(name), eval_b.pop(name)
    assert eval_a == eval_b
    assert (a / "plots/confusion.csv").read_bytes() == (b / "plots/confusion.csv").read_bytes()


def test_resume_after_kill(workdir: Path) -> None:
    epochs = 40
    write_params(
        workdir, f"train:\n  epochs: {epochs}\n  batch_size: 16\ntracking:\n  enabled: false\n"
    )
    process = subprocess.Popen(
        [PYTHON, "-m", "cxml.train"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
    )
    checkpoint = workdir / ".cxml/checkpoints/last.pt"
    try:
        wait_for_checkpoint_epoch(checkpoint, 2, process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert not (workdir / "model/model.pt").exists()
    import torch

    killed_at = torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"]
    assert 2 <= killed_at < epochs

    result = run_cxml("train", "--resume", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert f"resume: continuing after epoch {killed_at}" in result.stdout
    epochs_run = [
        line.split()[1] for line in result.stdout.splitlines() if line.startswith("epoch ")
    ]
    assert epochs_run[0] == f"{killed_at + 1}/{epochs}" and epochs_run[-1] == f"{epochs}/{epochs}"
    assert json.loads((workdir / "metrics/train.json").read_text())["epochs"] == epochs
    rows = list(csv.DictReader((workdir / "plots/train.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    from cxml.ml.models import load_model_file

    load_model_file(workdir / "model/model.pt")


def test_resume_refuses_a_checkpoint_from_other_params(workdir: Path) -> None:
    write_params(workdir, FAST_PARAMS)
    assert run_cxml("train", cwd=workdir).returncode == 0
    write_params(workdir, FAST_PARAMS + "data:\n  split_seed: 5\n")
    result = run_cxml("train", "--resume", cwd=workdir)
    assert result.returncode == 2
    assert "the checkpoint was made with other params" in result.stderr


def test_progress_flag_accepted(workdir: Path) -> None:
    write_params(workdir, FAST_PARAMS.replace("epochs: 3", "epochs: 1"))
    result = subprocess.run(
        [sys.executable, "-m", "cxml.train", "--progress"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    assert "epoch 1/1" in result.stderr  # tqdm draws on stderr


@pytest.mark.slow
def test_compile_caches_artifacts_in_a_persistent_place(workdir: Path) -> None:
    write_params(
        workdir,
        "train:\n  epochs: 1\n  compile: true\n  compile_mode: reduce-overhead\n"
        "tracking:\n  enabled: false\n",
    )
    cache = workdir / "runner-cache"
    result = run_cxml("train", cwd=workdir, env={"CXML_CACHE_DIR": str(cache)}, timeout=600)
    assert result.returncode == 0, result.stderr
    cached = [p for p in (cache / "inductor").rglob("*") if p.is_file()]
    assert cached, "torch.compile wrote nothing to CXML_CACHE_DIR"
    assert json.loads((workdir / "metrics/train.json").read_text())["epochs"] == 1


@pytest.mark.parametrize(
    ("evaluate", "message"),
    [
        (
            "  gate: ['acuracy >= 0.9']\n",
            "error: params.yaml: evaluate.gate: gate rule 'acuracy >= 0.9': unknown metric 'acuracy'",
        ),
        (
            "  gate: ['accuracy >= baseline -']\n",
            "error: params.yaml: evaluate.gate: gate rule 'accuracy >= baseline -'",
        ),
        ("  baseline: 'git:'\n", "error: params.yaml: evaluate.baseline: git: needs a ref"),
    ],
)
def test_gate_settings_are_checked_before_training(
    workdir: Path, evaluate: str, message: str
) -> None:
    """A typo in a gate rule fails `cxml train` at once, not `cxml evaluate` after training."""
    import time

    write_params(workdir, FAST_PARAMS + "evaluate:\n" + evaluate)
    started = time.monotonic()
    result = run_cxml("train", cwd=workdir, timeout=120)
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 30  # the interpreter's start, not an epoch
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert not any(line.startswith("epoch ") for line in result.stdout.splitlines())
    assert_no_outputs(workdir)

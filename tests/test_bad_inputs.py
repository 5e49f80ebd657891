"""Every entry point on a corpus of bad inputs: exit 2, one `error:` line naming the file or key
and the fix, and never a traceback.

Each case writes a small workspace (the files evaluate and train leave behind, written by hand,
so no case trains a model), spoils one input, and runs one step as a real subprocess. Most
cases fail while loading, before any training starts.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import PYTHON

Setup = Callable[[Path], None]

EVAL_METRICS = {
    "accuracy": 0.95,
    "precision_macro": 0.9,
    "recall_macro": 0.9,
    "f1_macro": 0.9,
    "latency_p50_ms": 1.0,
    "latency_p95_ms": 2.0,
    "num_test_images": 10,
    "per_class_accuracy": {"0": 1.0},
}
GATE = {
    "decision": "pass",
    "baseline": {"source": "none", "ref": None, "description": "no baseline", "metrics": None},
    "metrics": {"accuracy": 0.95},
    "rules": [
        {
            "rule": "accuracy >= 0.9",
            "metric": "accuracy",
            "op": ">=",
            "value": 0.95,
            "baseline": None,
            "threshold": 0.9,
            "result": "pass",
            "relative": False,
            "reason": None,
        }
    ],
}
PARAMS = "tracking:\n  enabled: false\nevaluate:\n  baseline: none\n"


def write_workspace(directory: Path) -> None:
    """params.yaml and what train + evaluate leave behind, valid: each case spoils one thing."""
    (directory / "params.yaml").write_text(PARAMS)
    (directory / "metrics").mkdir()
    (directory / "plots").mkdir()
    (directory / "metrics" / "eval.json").write_text(json.dumps(EVAL_METRICS))
    (directory / "gate.json").write_text(json.dumps(GATE))
    (directory / "run.json").write_text(json.dumps({"run_id": None, "epochs": 1}))
    (directory / "plots" / "train.csv").write_text(
        "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n1,0.5,0.8,0.5,0.8,0.05,1.0\n"
    )
    (directory / "plots" / "per_class.csv").write_text("class,accuracy,support\n0,1.0,10\n")
    (directory / "plots" / "confusion.csv").write_text("actual,predicted\n0,0\n")


def params(text: str) -> Setup:
    return lambda d: (d / "params.yaml").write_text(PARAMS + text)


def raw(name: str, content: bytes) -> Setup:
    return lambda d: (d / name).write_bytes(content)


def mkdir(name: str) -> Setup:
    return lambda d: (d / name).mkdir(parents=True, exist_ok=True)


def replace_dir_with_file(name: str) -> Setup:
    def setup(directory: Path) -> None:
        for child in (directory / name).iterdir():
            child.unlink()
        (directory / name).rmdir()
        (directory / name).write_text("a file where a folder should be")

    return setup


def crafted_model(directory: Path) -> None:
    import torch

    (directory / "model").mkdir()

    class RunsCode:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {directory / 'pwned'}",))

    torch.save({"format": "cxml-model/1", "state_dict": RunsCode()}, directory / "model/model.pt")


def bomb_dataset(directory: Path) -> None:
    """A tiny image folder plus one PNG that declares 10 gigapixels in 80 bytes."""
    for split in ("train", "test"):
        for name, colour in (("red", (220, 0, 0)), ("blue", (0, 0, 220))):
            folder = directory / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (6, 6), colour).save(folder / f"{i}.png")

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    (directory / "data" / "train" / "red" / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )
    params("data:\n  source: imagefolder\n  path: data\n  image_size: 8\n")(directory)


DEEP_JSON = b"[" * 100_000 + b"]" * 100_000
BIG_INT = b"1" * 5000
FLOAT_OVERFLOW = b"1" * 400  # an int Python parses, that no float can hold
UTF16_JSON = '{"accuracy": 0.9}'.encode("utf-16")


@dataclass(frozen=True)
class Case:
    step: list[str]
    setup: Setup
    expected: str
    """A fragment of the error line: the file or key it names."""


CASES: dict[str, Case] = {
    # params.yaml
    "params utf-16": Case(
        ["train"],
        raw("params.yaml", "train:\n  lr: 0.1\n".encode("utf-16")),
        "params.yaml: not UTF-8",
    ),
    "params latin-1": Case(
        ["evaluate"], raw("params.yaml", b"train:\n  lr: 0.1 # caf\xe9\n"), "params.yaml: not UTF-8"
    ),
    "params utf-16 (run)": Case(
        ["run"], raw("params.yaml", "train: {}\n".encode("utf-16")), "params.yaml: not UTF-8"
    ),
    "params nested 100k deep": Case(
        ["gate"],
        raw("params.yaml", b"train:\n  lr: " + DEEP_JSON),
        "params.yaml: nested too deeply",
    ),
    "params 5,000-digit integer": Case(
        ["train"],
        raw("params.yaml", b"train:\n  epochs: " + BIG_INT),
        "params.yaml: a number is too",
    ),
    "params lr beyond a float": Case(
        ["train"], params("train:\n  lr: " + "1" * 400 + "\n"), "train.lr: expected a finite number"
    ),
    "label_smoothing 5": Case(
        ["train"], params("train:\n  label_smoothing: 5\n"), "train.label_smoothing: must be"
    ),
    "label_smoothing 5 (run)": Case(
        ["run"], params("train:\n  label_smoothing: 5\n"), "train.label_smoothing: must be"
    ),
    "image_size 1000000": Case(
        ["train"], params("data:\n  image_size: 1000000\n"), "data.image_size: must be between"
    ),
    "image_size 1e6": Case(
        ["train"], params("data:\n  image_size: 1e6\n"), "data.image_size: expected an integer"
    ),
    "crop_padding 100000": Case(
        ["train"], params("data:\n  crop_padding: 100000\n"), "data.crop_padding: must not exceed"
    ),
    "momentum -1": Case(["train"], params("train:\n  momentum: -1\n"), "train.momentum: must be"),
    "split_seed -1": Case(["train"], params("data:\n  split_seed: -1\n"), "data.split_seed: must"),
    "seed 1e23": Case(["train"], params("train:\n  seed: " + "1" * 24 + "\n"), "train.seed: must"),
    "evaluate.batch_size 0": Case(
        ["evaluate"], params("evaluate:\n  batch_size: 0\n"), "evaluate.batch_size: must be"
    ),
    "model path is a directory": Case(
        ["train"], mkdir("model/model.pt"), "outputs.model: model/model.pt: is a directory"
    ),
    "metrics dir is a file": Case(
        ["train"], replace_dir_with_file("metrics"), "outputs.metrics_dir: metrics/train.json"
    ),
    # metrics/eval.json
    "eval.json utf-16": Case(
        ["gate"], raw("metrics/eval.json", UTF16_JSON), "eval.json: not UTF-8"
    ),
    "eval.json nested 100k deep": Case(
        ["gate"], raw("metrics/eval.json", DEEP_JSON), "eval.json: JSON nested too deeply"
    ),
    "eval.json 5,000-digit integer": Case(
        ["gate"],
        raw("metrics/eval.json", b'{"accuracy": ' + BIG_INT + b"}"),
        "eval.json: not usable",
    ),
    "eval.json float overflow (gate)": Case(
        ["gate"],
        raw("metrics/eval.json", b'{"accuracy": 0.9, "x": ' + FLOAT_OVERFLOW + b"}"),
        "eval.json",
    ),
    "eval.json float overflow (report)": Case(
        ["report", "--dry-run"],
        raw("metrics/eval.json", b'{"accuracy": 0.9, "x": ' + FLOAT_OVERFLOW + b"}"),
        "eval.json: not usable JSON",
    ),
    # gate.json and run.json, read by the report
    "gate.json latin-1": Case(
        ["report", "--dry-run"],
        raw("gate.json", b'{"decision": "pass", "x": "\xe9"}'),
        "gate.json: not UTF-8",
    ),
    "gate.json float overflow": Case(
        ["report", "--dry-run"],
        raw("gate.json", b'{"decision": "pass", "metrics": {"a": ' + FLOAT_OVERFLOW + b"}}"),
        "gate.json: not usable JSON",
    ),
    "run.json utf-16": Case(
        ["report", "--dry-run"], raw("run.json", UTF16_JSON), "run.json: not UTF-8"
    ),
    "run.json float overflow": Case(
        ["report", "--dry-run"],
        raw("run.json", b'{"train_seconds": ' + FLOAT_OVERFLOW + b"}"),
        "run.json: not usable JSON",
    ),
    # plots/*.csv, read by the report
    "train.csv field over the CSV limit": Case(
        ["report", "--dry-run"],
        raw("plots/train.csv", b"epoch,loss\n1," + b"x" * (17 * 1024 * 1024) + b"\n"),
        "plots/train.csv: not a usable CSV file",
    ),
    "per_class.csv infinite support": Case(
        ["report", "--dry-run"],
        raw("plots/per_class.csv", b"class,accuracy,support\n0,1.0,inf\n"),
        "plots/per_class.csv: row 2",
    ),
    # gate rules
    "rule divides by zero": Case(
        ["gate", "--gate", "accuracy >= 1/0"],
        lambda d: None,
        "cannot be evaluated: division by zero",
    ),
    "rule overflows": Case(
        ["gate"], params("  gate: ['accuracy >= 1e308 * 10']\n"), "cannot be evaluated: the result"
    ),
    "rule nested 50k deep": Case(
        # 100k characters: as deep as one command-line argument can be (128 KiB)
        ["gate", "--gate", "accuracy >= " + "(" * 50_000 + "1" + ")" * 50_000],
        lambda d: None,
        "characters long",
    ),
    "rule nested 20 deep (evaluate)": Case(
        ["evaluate"],
        params("  gate: ['accuracy >= " + "(" * 20 + "1" + ")" * 20 + "']\n"),
        "nest more than 16 deep",
    ),
    # model files and checkpoints
    "model file that would run code": Case(
        ["evaluate"], crafted_model, "model/model.pt: refused: it holds Python objects"
    ),
    "damaged checkpoint": Case(
        ["train", "--resume"],
        lambda d: (mkdir(".cxml/checkpoints")(d), raw(".cxml/checkpoints/last.pt", b"junk")(d)),
        ".cxml/checkpoints/last.pt: checkpoint refused",
    ),
    # training data
    "decompression bomb (on_bad_image: fail)": Case(
        ["train"], bomb_dataset, "1 unreadable image file(s): data/train/red/bomb.png"
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_error(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    write_workspace(tmp_path)
    case.setup(tmp_path)
    module, *args = case.step
    result = subprocess.run(
        [PYTHON, "-m", f"cxml.{module}", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=180,
        check=False,
    )
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-3000:]
    assert case.expected in errors[0], errors[0][:1000]
    # the fix: after a semicolon, or what the value must be
    fixes = ("; ", ": must ", ": expected ")
    assert any(fix in errors[0] for fix in fixes), f"the error names no fix: {errors[0][:1000]}"
    assert result.returncode == 2, output[-3000:]
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("stages: {}".encode("utf-16"), "dvc.lock: not UTF-8 text"),
        (b"stages:\n  train:\n    outs: " + DEEP_JSON, "dvc.lock: nested too deeply"),
    ],
)
def test_an_unreadable_dvc_lock_is_a_config_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    from cxml.core.errors import ConfigError
    from cxml.repro import locked_model_hash

    lock = tmp_path / "dvc.lock"
    lock.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        locked_model_hash(lock, "model/model.pt")

"""params.yaml -> typed config: defaults, and one clear error per bad key or type."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxml.core.config import Params, load_params, params_from_mapping, validate_ranges
from cxml.core.errors import ConfigError


def test_missing_file_gives_the_builtin_example(tmp_path: Path) -> None:
    params = load_params(tmp_path / "params.yaml")
    assert params.data.source == "digits"
    assert params.model.architecture == "small_cnn"
    assert params.train.epochs >= 1


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("")
    assert load_params(path) == Params()


def test_values_are_typed(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: 1\n  epochs: 2\nevaluate:\n  gate: accuracy >= 0.5\n")
    params = load_params(path)
    assert params.train.lr == 1.0 and isinstance(params.train.lr, float)
    assert params.evaluate.gate == ("accuracy >= 0.5",)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"train": {"lr": "fast"}}, "params.yaml: train.lr: expected a number, got 'fast'"),
        ({"train": {"epochs": 2.5}}, "params.yaml: train.epochs: expected an integer, got 2.5"),
        ({"train": {"epochs": True}}, "params.yaml: train.epochs: expected an integer, got True"),
        (
            {"train": {"compile": "yes"}},
            "params.yaml: train.compile: expected true or false, got 'yes'",
        ),
        (
            {"trian": {}},
            "params.yaml: trian: unknown key; known keys in the top level: data, model",
        ),
        (
            {"train": {"learning_rate": 0.1}},
            "params.yaml: train.learning_rate: unknown key; known keys in train:",
        ),
        (
            {"data": {"source": "cifar"}},
            "params.yaml: data.source: expected one of 'digits', 'imagefolder', 'csv', 'breast_cancer', got 'cifar'",
        ),
        ({"evaluate": {"gate": [1]}}, "params.yaml: evaluate.gate[0]: expected a string, got 1"),
        ({"model": "resnet18"}, "params.yaml: model: expected a mapping, got 'resnet18'"),
    ],
)
def test_bad_values_name_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        params_from_mapping(raw)
    assert str(caught.value).startswith(message)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: [0.1\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_params(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections, got a list"):
        load_params(path)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"train": {"epochs": 0}}, "train.epochs: must be at least 1"),
        ({"train": {"lr": -1}}, "train.lr: must be greater than 0"),
        (
            {"data": {"source": "imagefolder"}},
            "data.path: required when data.source is imagefolder",
        ),
        ({"data": {"val_fraction": 0.6, "test_fraction": 0.5}}, "must leave some data to train on"),
    ],
)
def test_out_of_range_values(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_ranges(params_from_mapping(raw))


def test_digest_changes_with_params_and_flat_names() -> None:
    base = params_from_mapping({})
    changed = params_from_mapping({"train": {"lr": 0.01}})
    assert base.digest() != changed.digest()
    assert base.digest() == params_from_mapping({}).digest()
    assert changed.flat()["train.lr"] == 0.01


def test_exponent_floats_are_numbers(tmp_path: Path) -> None:
    # PyYAML alone reads `1e-3` as a string; params.yaml follows YAML 1.2 here.
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: 1e-3\n  weight_decay: 5.0E-4\n")
    params = load_params(path)
    assert params.train.lr == 0.001 and params.train.weight_decay == 0.0005


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"train": {"label_smoothing": 5}},
            "train.label_smoothing: must be at least 0 and below 1",
        ),
        ({"data": {"image_size": 1_000_000}}, "data.image_size: must be between 4 and 1024"),
        ({"data": {"crop_padding": 100_000}}, "data.crop_padding: must not exceed the image size"),
        ({"train": {"momentum": -1}}, "train.momentum: must be at least 0 and below 1"),
        ({"train": {"weight_decay": -1}}, "train.weight_decay: must not be negative"),
        ({"data": {"split_seed": -1}}, "data.split_seed: must be between 0 and 4294967295"),
        ({"train": {"seed": 10**23}}, "train.seed: must be between 0 and 4294967295"),
        ({"evaluate": {"batch_size": 0}}, "evaluate.batch_size: must be at least 1"),
    ],
)
def test_values_that_would_crash_training_are_refused(raw: dict[str, object], message: str) -> None:
    """Each of these ended in a traceback (label_smoothing: 5, an allocation of 7.2e15 bytes)."""
    with pytest.raises(ConfigError, match=message):
        validate_ranges(params_from_mapping(raw))


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 10**400])
def test_numbers_must_be_finite(value: object) -> None:
    with pytest.raises(ConfigError, match=r"train\.lr: expected a finite number"):
        params_from_mapping({"train": {"lr": value}})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("train:\n  lr: 0.1\n".encode("utf-16"), "params.yaml: not UTF-8 text; save it as UTF-8"),
        (b"train:\n  lr: 0.1 # caf\xe9\n", "params.yaml: not UTF-8 text"),
        (b"train:\n  lr: " + b"[" * 100_000 + b"]" * 100_000, "params.yaml: nested too deeply"),
        (b"train:\n  epochs: " + b"1" * 5000 + b"\n", "params.yaml: a number is too long"),
        (
            b"train:\n  lr: " + b"1" * 400 + b"\n",
            "train.lr: expected a finite number, got a 400-digit",
        ),
    ],
)
def test_unreadable_params_files_are_one_config_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_utf8_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes("train:\n  epochs: 2\n".encode("utf-8-sig"))
    assert load_params(path).train.epochs == 2


@pytest.mark.parametrize("key", ["model", "run_info", "gate"])
def test_an_output_path_that_is_a_directory_is_refused_up_front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.chdir(tmp_path)
    params = params_from_mapping({"outputs": {key: "taken"}})
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConfigError, match=f"outputs.{key}: taken: is a directory"):
        params.outputs.check_writable()


def test_an_output_under_a_file_is_refused_up_front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics").write_text("a file where the folder should be")
    with pytest.raises(
        ConfigError, match=r"outputs\.metrics_dir: metrics/train\.json: metrics is a file"
    ):
        Params().outputs.check_writable()

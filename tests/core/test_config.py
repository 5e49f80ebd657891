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
            "params.yaml: data.source: expected one of 'digits', 'imagefolder', got 'cifar'",
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

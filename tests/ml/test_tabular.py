"""Tabular data: CSV reading (every bad cell one clear error), the breast-cancer example, the
feature standardisation through the one pixel normaliser, the MLP and ROC AUC."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from cxml.core.config import DataConfig, ModelConfig, Params, params_from_mapping, validate_ranges
from cxml.core.errors import ConfigError, DataError
from cxml.ml import models
from cxml.ml.data import load_dataset
from cxml.ml.pixels import FEATURE_INPUT_SCALE, IMAGE_INPUT_SCALE, normalise_with
from cxml.ml.tabular import (
    BREAST_CANCER_FEATURES,
    feature_stats,
    roc_auc,
)
from tests.support.tabular import mlp_metadata

HEADER = "height,weight,kind\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def csv_cfg(path: Path, **changes: object) -> DataConfig:
    return dataclasses.replace(
        DataConfig(source="csv", path=str(path), label_column="kind"), **changes
    )


def table_text(rows: int = 40) -> str:
    lines = [f"{1.5 + i % 7 * 0.1:.2f},{50 + i},{'cat' if i % 2 else 'dog'}" for i in range(rows)]
    return HEADER + "\n".join(lines) + "\n"


# --- the built-in example --------------------------------------------------------------------------


def test_breast_cancer_loads_without_network_with_sklearn_names() -> None:
    from sklearn.datasets import load_breast_cancer

    data = load_dataset(DataConfig(source="breast_cancer"))
    reference = load_breast_cancer()
    assert data.feature_names == tuple(str(n) for n in reference.feature_names)
    assert data.feature_names == BREAST_CANCER_FEATURES
    assert data.class_names == tuple(str(n) for n in reference.target_names)
    assert len(data.train) + len(data.val) + len(data.test) == 569
    assert data.train.images.shape[1:] == (30, 1, 1)
    assert data.train.images.dtype == torch.float32
    assert data.input_size == (30, 1, 1)
    # both classes in every split (stratified), and the same split every time
    assert set(data.test.labels.tolist()) == {0, 1}
    again = load_dataset(DataConfig(source="breast_cancer"))
    assert torch.equal(again.test.images, data.test.images)
    assert again.content_hash == data.content_hash


def test_standardisation_through_the_one_normaliser_is_exact() -> None:
    """The true feature stats with input_scale 1 make the one normaliser compute (x - mean) / std."""
    data = load_dataset(DataConfig(source="breast_cancer"))
    mean, std = data.channel_stats()
    inputs = normalise_with(data.train.images, mean, std, FEATURE_INPUT_SCALE).flatten(1).double()
    raw = data.train.images.flatten(1).double()
    expected = (raw - raw.mean(0)) / raw.std(0)
    assert torch.allclose(inputs, expected, atol=1e-4)
    assert torch.allclose(inputs.mean(0), torch.zeros(30, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(inputs.std(0), torch.ones(30, dtype=torch.float64), atol=1e-4)


def test_a_constant_feature_is_centred_not_divided_by_zero() -> None:
    features = torch.tensor([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]]).view(3, 2, 1, 1)
    mean, std = feature_stats(features)
    out = normalise_with(features, mean, std, FEATURE_INPUT_SCALE)
    assert torch.isfinite(out).all()
    assert out[:, 1].abs().max() == 0


# --- CSV files -------------------------------------------------------------------------------------


def test_one_csv_is_split_by_the_fractions(tmp_path: Path) -> None:
    data = load_dataset(csv_cfg(write(tmp_path / "t.csv", table_text(40))))
    assert data.feature_names == ("height", "weight")
    assert data.class_names == ("cat", "dog")
    assert len(data.train) + len(data.val) + len(data.test) == 40
    assert len(data.test) == 6 and len(data.val) == 6


def test_feature_columns_choose_and_order_the_inputs(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", table_text(20))
    data = load_dataset(csv_cfg(path, feature_columns=("weight",)))
    assert data.feature_names == ("weight",)
    assert data.input_size == (1, 1, 1)


def test_a_folder_of_split_csvs(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", table_text(30))
    write(tmp_path / "test.csv", table_text(10))
    data = load_dataset(csv_cfg(tmp_path))
    assert len(data.test) == 10
    assert len(data.train) + len(data.val) == 30 and len(data.val) > 0
    write(tmp_path / "val.csv", table_text(8))
    assert len(load_dataset(csv_cfg(tmp_path)).val) == 8


def test_numeric_labels_sort_as_numbers(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i % 3 * 5}\n" for i in range(30))
    path = write(tmp_path / "t.csv", "x,label\n" + rows)
    data = load_dataset(DataConfig(source="csv", path=str(path)))
    assert data.class_names == ("0", "5", "10")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HEADER + "1.7,abc,cat\n", "row 2, column 'weight': 'abc' is not a finite number"),
        (HEADER + "1.7,60,cat\n1.8,,dog\n", "row 3, column 'weight': '' is not a finite number"),
        (HEADER + "1.7,nan,cat\n", "row 2, column 'weight': 'nan' is not a finite number"),
        (HEADER + "1.7,1e999,cat\n", "row 2, column 'weight': '1e999' is not a finite number"),
        ("height,weight\n1,2\n", "no label column 'kind' in the header (height, weight)"),
        (HEADER + "1.7,60\n", "row 2 has 2 cells, the header 3"),
        (HEADER + "1.7,60,\n", "row 2, column 'kind': empty label"),
        (HEADER, "only a header, no data rows"),
        ("", "the file is empty"),
        ("a,a,kind\n1,2,x\n", "column 'a' appears twice"),
        ('height,weight,kind\n"1.7,60,cat\n', "not valid CSV"),
    ],
)
def test_bad_csv_is_one_data_error_naming_file_row_column(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError) as caught:
        load_dataset(csv_cfg(path))
    message = str(caught.value)
    assert str(path) in message and expected in message
    assert "\n" not in message
    assert caught.value.exit_code == 2


def test_not_utf8_and_missing_feature_column_and_unknown_class(tmp_path: Path) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes("h\u00e9ight,weight,kind\n1,2,x\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_dataset(csv_cfg(latin))
    path = write(tmp_path / "t.csv", table_text(10))
    with pytest.raises(DataError, match=r"feature column 'age'.*data\.feature_columns"):
        load_dataset(csv_cfg(path, feature_columns=("age",)))
    write(tmp_path / "train.csv", table_text(10))
    write(tmp_path / "test.csv", HEADER + "1,2,bird\n")
    with pytest.raises(DataError, match="class 'bird' is not in the training data"):
        load_dataset(csv_cfg(tmp_path))
    with pytest.raises(DataError, match="neither a CSV file nor a folder"):
        load_dataset(csv_cfg(tmp_path / "nowhere.csv"))


def test_split_csvs_must_share_columns(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", table_text(10))
    write(tmp_path / "test.csv", "height,kind\n1,cat\n")
    with pytest.raises(DataError, match="feature columns differ"):
        load_dataset(csv_cfg(tmp_path))


# --- params ------------------------------------------------------------------------------------


def test_params_take_the_tabular_keys() -> None:
    params = params_from_mapping(
        {
            "data": {
                "source": "csv",
                "path": "t.csv",
                "label_column": "y",
                "feature_columns": ["a"],
            },
            "model": {"architecture": "mlp", "hidden_sizes": [16]},
        }
    )
    validate_ranges(params)
    assert params.data.feature_columns == ("a",)
    assert params.model.hidden_sizes == (16,)


@pytest.mark.parametrize(
    ("data", "model", "expected"),
    [
        ({"source": "csv"}, {"architecture": "mlp"}, "data.path: required when data.source is csv"),
        ({"source": "breast_cancer"}, {}, "model.architecture: tabular data"),
        ({"source": "digits"}, {"architecture": "mlp"}, "model.architecture: tabular data"),
        (
            {"source": "breast_cancer"},
            {"architecture": "mlp", "hidden_sizes": [0]},
            "model.hidden_sizes: each width",
        ),
        (
            {"source": "breast_cancer", "flip": True},
            {"architecture": "mlp"},
            "tabular data .* takes neither",
        ),
        (
            {"source": "breast_cancer", "crop_padding": 2},
            {"architecture": "mlp"},
            "tabular data .* takes neither",
        ),
    ],
)
def test_params_refuse_mismatches(
    data: dict[str, object], model: dict[str, object], expected: str
) -> None:
    params = params_from_mapping({"data": data, "model": model})
    with pytest.raises(ConfigError, match=expected):
        validate_ranges(params)


# --- the model -----------------------------------------------------------------------------------


def test_mlp_round_trips_through_the_model_file(tmp_path: Path) -> None:
    data = load_dataset(DataConfig(source="breast_cancer"))
    model_cfg = ModelConfig(architecture="mlp", hidden_sizes=(8, 4))
    network = models.build_model("mlp", 2, 30, model_cfg.hidden_sizes)
    metadata = mlp_metadata(data, model_cfg)
    assert metadata.tabular and metadata.hidden_sizes == (8, 4)
    assert metadata.feature_min[0] == pytest.approx(float(data.train.images[:, 0].min()), abs=1e-5)
    path = tmp_path / "model.pt"
    models.save_model_file(path, network, metadata)
    loaded, read = models.load_model_file(path)
    assert read == metadata
    network.eval()
    batch = models.preprocess(data.test.images[:5], read)
    assert torch.equal(loaded(batch), network(batch))
    assert Params().model.hidden_sizes == (64, 32)


def test_the_model_file_holds_the_true_feature_statistics(tmp_path: Path) -> None:
    """Anyone reading the model file sees each feature's mean/std in its own units."""
    data = load_dataset(DataConfig(source="breast_cancer"))
    rows = data.train.images.flatten(1).double()
    metadata = mlp_metadata(data, ModelConfig(architecture="mlp"))
    assert metadata.input_scale == 1.0
    assert metadata.mean[3] == pytest.approx(float(rows[:, 3].mean()), rel=1e-9)  # mean area
    assert metadata.mean[3] > 500 and metadata.std[3] == pytest.approx(float(rows[:, 3].std()))
    path = tmp_path / "model.pt"
    models.save_model_file(path, models.build_model("mlp", 2, 30, (4,)), metadata)
    stored = torch.load(path, weights_only=True)["metadata"]
    assert stored["input_scale"] == 1.0 and stored["mean"][3] == metadata.mean[3]


def test_a_model_file_without_input_scale_reads_as_an_image_model() -> None:
    """Files written before input_scale existed hold image statistics of pixels / 255."""
    fields = {
        "architecture": "small_cnn",
        "num_classes": 2,
        "class_names": ["a", "b"],
        "input_size": [1, 8, 8],
        "mean": [0.5],
        "std": [0.25],
        "cxml_version": "0.1",
    }
    metadata = models.ModelMetadata.from_dict(fields)
    assert metadata.input_scale == IMAGE_INPUT_SCALE
    pixels = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
    assert models.preprocess(pixels, metadata).flatten().tolist() == [-2.0, 2.0]
    with pytest.raises(ValueError, match="input_scale"):
        models.ModelMetadata.from_dict({**fields, "input_scale": 0})


def test_old_tabular_files_with_pixel_convention_statistics_still_answer_alike() -> None:
    """A tabular file from before input_scale (stats / 255, no input_scale) normalises as
    before: the default scale of 255 undoes the division."""
    data = load_dataset(DataConfig(source="breast_cancer"))
    mean, std = data.channel_stats()
    old_mean, old_std = [v / 255 for v in mean], [v / 255 for v in std]
    rows = data.test.images[:8]
    new = normalise_with(rows, mean, std, FEATURE_INPUT_SCALE)
    old = normalise_with(rows, old_mean, old_std)
    assert torch.allclose(new, old, atol=1e-4)


def test_roc_auc_matches_scikit_learn() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200).tolist()
    scores = np.round(rng.random(200), 1).tolist()  # rounded: many ties
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert roc_auc([0, 1, 1], [0.1, 0.9, 0.8]) == 1.0


def test_evaluating_other_columns_is_refused() -> None:
    from cxml.ml.tabular import check_features_match

    metadata = models.ModelMetadata(
        architecture="mlp",
        num_classes=2,
        class_names=("a", "b"),
        input_size=(2, 1, 1),
        mean=(0.0, 0.0),
        std=(1.0, 1.0),
        cxml_version="test",
        feature_names=("x", "y"),
    )
    check_features_match(metadata, ("x", "y"))
    with pytest.raises(DataError, match=r"feature columns \(y, x\) are not the model's \(x, y\)"):
        check_features_match(metadata, ("y", "x"))
    with pytest.raises(DataError, match="the model is a tabular model and the data is not"):
        check_features_match(metadata, ())
    image_model = dataclasses.replace(metadata, feature_names=())
    with pytest.raises(DataError, match="the model is an image model"):
        check_features_match(image_model, ("x", "y"))

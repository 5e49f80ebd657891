"""A trained tabular model file (the breast-cancer MLP) for tests that serve or check one."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cxml.core.config import ModelConfig
    from cxml.ml.data import Dataset
    from cxml.ml.models import ModelMetadata

TABULAR_PARAMS = (
    "data: {source: breast_cancer}\n"
    "model: {architecture: mlp, hidden_sizes: [16, 8]}\n"
    "train: {device: cpu}\n"
    "tracking: {enabled: false}\n"
)
"""params.yaml of the model `trained_tabular_model_file` writes."""


def trained_tabular_model_file(path: Path, *, seed: int = 0, steps: int = 150) -> Path:
    """The breast-cancer MLP trained full-batch in-process (well under a second), through the
    one normaliser with the statistics its model file stores, and saved by cxml."""
    import torch

    from cxml.core.config import DataConfig, ModelConfig
    from cxml.ml import models
    from cxml.ml.data import load_dataset

    data = load_dataset(DataConfig(source="breast_cancer"))
    torch.manual_seed(seed)
    network = models.build_model("mlp", data.num_classes, len(data.feature_names), (16, 8))
    metadata = mlp_metadata(data, ModelConfig(architecture="mlp", hidden_sizes=(16, 8)))
    inputs = models.preprocess(data.train.images, metadata)
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    network.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(network(inputs), data.train.labels)
        loss.backward()
        optimizer.step()
    network.eval()
    models.save_model_file(path, network, metadata)
    return path


def mlp_metadata(data: Dataset, model_cfg: ModelConfig) -> ModelMetadata:
    """What a model file of `model_cfg` (an MLP) trained on the tabular `data` records."""
    from cxml.ml import models
    from cxml.ml.tabular import metadata_fields

    mean, std = data.channel_stats()
    return models.ModelMetadata(
        architecture="mlp",
        num_classes=data.num_classes,
        class_names=data.class_names,
        input_size=data.input_size,
        mean=mean,
        std=std,
        cxml_version="test",
        data_hash=data.content_hash,
        **metadata_fields(model_cfg, data),
    )


def skewed_tabular_model_file(original: Path, path: Path) -> Path:
    """The same weights with the features left unstandardised: a serving side that
    preprocesses rows differently from training."""
    from cxml.ml import models

    network, metadata = models.load_model_file(str(original))
    features = len(metadata.feature_names)
    models.save_model_file(
        path, network, replace(metadata, mean=(0.0,) * features, std=(1.0,) * features)
    )
    return path

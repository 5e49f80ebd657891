"""Online = offline: an image gives the same logits through training's batches and through serve."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from cxml.core.config import TrainConfig
from cxml.ml import models
from cxml.ml.batches import BatchSource, normalise
from cxml.ml.data import Split
from cxml.ml.distributed import DistContext
from cxml.ml.nets import PixelClassifier
from cxml.serve.requests import decode_image
from cxml.serve.service import PredictionService
from cxml.serve.settings import ServeSettings

STATS = {1: ((0.3,), (0.35,)), 3: ((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))}


def model_file(path: Path, channels: int) -> Path:
    torch.manual_seed(channels)
    network = models.build_model("small_cnn", 4, channels)
    with torch.no_grad():  # BatchNorm statistics that are not the identity, as after training
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    mean, std = STATS[channels]
    metadata = models.ModelMetadata(
        architecture="small_cnn",
        num_classes=4,
        class_names=("a", "b", "c", "d"),
        input_size=(channels, 12, 12),
        mean=mean,
        std=std,
        cxml_version="test",
    )
    models.save_model_file(path, network, metadata)
    return path


def png(image: torch.Tensor) -> bytes:
    """A C,H,W uint8 tensor as the PNG file a client would send."""
    array = image.permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def training_logits(
    model: torch.nn.Module,
    images: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> torch.Tensor:
    """The training path: a resident split, shuffled into batches, normalised, through the model."""
    split = Split(images, torch.arange(len(images)))  # labels = positions, to undo the shuffle
    config = TrainConfig(batch_size=3, seed=5)
    source = BatchSource(split, "resident", torch.device("cpu"), config, DistContext())
    mean_tensor = torch.tensor(mean).view(1, -1, 1, 1)
    std_tensor = torch.tensor(std).view(1, -1, 1, 1)
    logits = torch.empty(len(images), 4)
    with torch.inference_mode():
        for batch, positions in source.epoch(0):
            logits[positions] = model(normalise(batch, mean_tensor, std_tensor))
    return logits


@pytest.mark.parametrize("channels", [1, 3])
def test_training_and_serving_give_the_same_logits(tmp_path: Path, channels: int) -> None:
    path = model_file(tmp_path / "model.pt", channels)
    model, metadata = models.load_model_file(path)
    images = torch.randint(0, 256, (7, channels, 12, 12), dtype=torch.uint8)

    offline = training_logits(model, images, metadata.mean, metadata.std)

    settings = ServeSettings(model_path=path, release=None, device="cpu")
    service = PredictionService(settings)
    decoded = [
        decode_image(png(image), i, service.metadata, settings) for i, image in enumerate(images)
    ]
    assert torch.equal(torch.stack(decoded), images)  # the request decoding loses nothing
    online = service.logits(torch.stack(decoded))
    # serve folds batch norms into the convolutions: the same function, rounded differently
    assert torch.allclose(online, offline, atol=1e-5), (online - offline).abs().max()


def test_the_mlflow_model_normalises_as_training_does(tmp_path: Path) -> None:
    model, metadata = models.load_model_file(model_file(tmp_path / "model.pt", 3))
    images = torch.randint(0, 256, (5, 3, 12, 12), dtype=torch.uint8)
    mean = torch.tensor(metadata.mean).view(1, -1, 1, 1)
    std = torch.tensor(metadata.std).view(1, -1, 1, 1)
    pixel_model = PixelClassifier(model, metadata.mean, metadata.std).eval()
    with torch.inference_mode():  # the MLflow model takes raw 0..255 pixels as floats
        assert torch.equal(pixel_model(images.float()), model(normalise(images, mean, std)))


def test_serve_predictions_are_the_softmax_of_the_training_logits(tmp_path: Path) -> None:
    path = model_file(tmp_path / "model.pt", 3)
    model, metadata = models.load_model_file(path)
    images = torch.randint(0, 256, (2, 3, 12, 12), dtype=torch.uint8)
    service = PredictionService(ServeSettings(model_path=path, release=None, device="cpu"))

    answer = service.predict([png(image) for image in images])

    expected = torch.softmax(training_logits(model, images, metadata.mean, metadata.std), dim=1)
    got = torch.tensor([p["probabilities"] for p in answer["predictions"]])
    assert torch.allclose(got, expected, atol=2e-6)

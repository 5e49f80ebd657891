"""Architectures by name, local pretrained weights, and the model file round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from cxml.core.errors import ConfigError, CxmlError
from cxml.ml.models import (
    ModelMetadata,
    build_model,
    image_to_input,
    load_model_file,
    load_weights_file,
    save_model_file,
)


def metadata(architecture: str = "small_cnn", channels: int = 1) -> ModelMetadata:
    return ModelMetadata(
        architecture=architecture,
        num_classes=3,
        class_names=("a", "b", "c"),
        input_size=(channels, 16, 16),
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
        cxml_version="test",
    )


@pytest.mark.parametrize(
    "architecture", ["small_cnn", "resnet18", "mobilenet_v3_small", "efficientnet_b0"]
)
@pytest.mark.parametrize("channels", [1, 3])
def test_any_architecture_takes_any_channel_count(architecture: str, channels: int) -> None:
    model = build_model(architecture, num_classes=3, in_channels=channels).eval()
    with torch.no_grad():
        assert model(torch.randn(2, channels, 32, 32)).shape == (2, 3)


def test_unknown_architecture_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown architecture 'resnet1800'"):
        build_model("resnet1800", 3, 3)


def test_local_weights_load_and_a_different_head_is_skipped(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    pretrained = resnet18(num_classes=1000)  # an ImageNet-shaped head, as downloaded weights are
    path = tmp_path / "resnet18.pth"
    torch.save(pretrained.state_dict(), path)
    model = build_model("resnet18", num_classes=3, in_channels=3)
    load_weights_file(model, path)
    assert torch.equal(model.state_dict()["conv1.weight"], pretrained.state_dict()["conv1.weight"])
    assert model.state_dict()["fc.weight"].shape == (3, 512)
    # a grey-input model wraps resnet18; the same plain state dict still fits
    grey = build_model("resnet18", num_classes=3, in_channels=1)
    load_weights_file(grey, path)
    assert torch.equal(grey.state_dict()["1.conv1.weight"], pretrained.state_dict()["conv1.weight"])


def test_weights_for_another_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "cnn.pth"
    torch.save(build_model("small_cnn", 3, 1).state_dict(), path)
    with pytest.raises(ConfigError, match=r"has no weights matching model\.architecture"):
        load_weights_file(build_model("resnet18", 3, 3), path)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="is not a readable torch state dict"):
        load_weights_file(build_model("small_cnn", 3, 1), tmp_path / "junk.pth")


def test_model_file_round_trip(tmp_path: Path) -> None:
    model = build_model("small_cnn", 3, 1).eval()
    path = tmp_path / "model" / "model.pt"
    save_model_file(path, model, metadata())
    loaded, meta = load_model_file(path)
    assert meta == metadata()
    sample = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(sample), loaded(sample))
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left


def test_not_a_model_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"something": 1}, path)
    with pytest.raises(CxmlError, match="not a cxml model file"):
        load_model_file(path)


def test_image_to_input_converts_mode_and_size() -> None:
    image = Image.new("RGBA", (40, 20), (255, 0, 0, 255))
    grey = image_to_input(image, metadata(channels=1))
    rgb = image_to_input(image, metadata("resnet18", channels=3))
    assert grey.shape == (1, 16, 16) and grey.dtype == torch.uint8
    assert rgb.shape == (3, 16, 16) and rgb[:, 0, 0].tolist() == [255, 0, 0]

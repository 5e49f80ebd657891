"""The nn.Module classes cxml defines (imported lazily: this module imports torch)."""

from __future__ import annotations

import typing
from collections.abc import Sequence

import torch
from torch import nn

from cxml.ml.pixels import IMAGE_INPUT_SCALE, channel_values, normalise


def _conv_block(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Sequential):
    """A small conv net for tiny inputs (digits 8x8, CIFAR 32x32)."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__(
            *_conv_block(in_channels, 32),
            *_conv_block(32, 64),
            nn.MaxPool2d(2),
            *_conv_block(64, 128),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.1),
            nn.Linear(128, num_classes),
        )


class TabularMLP(nn.Sequential):
    """A small MLP for tabular rows; takes the N,F,1,1 standardised features of ml/tabular.py."""

    def __init__(self, num_classes: int, num_features: int, hidden_sizes: Sequence[int]) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        width = num_features
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(0.1)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


class RepeatChannels(nn.Module):
    """Feed 1-channel images to a 3-channel torchvision model."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, self.channels, -1, -1) if x.shape[1] == 1 else x


class PixelClassifier(nn.Module):
    """A model that takes raw pixels (0..255, float, N,C,H,W), or tabular rows (N,F or N,F,1,1),
    and returns logits.

    This is what goes to the MLflow registry, so `mlflow models serve` needs no cxml preprocessing.
    """

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        input_scale: float = IMAGE_INPUT_SCALE,
    ) -> None:
        super().__init__()
        self.model = model
        self.input_scale = float(input_scale)
        self.register_buffer("mean", channel_values(mean, "cpu"))
        self.register_buffer("std", channel_values(std, "cpu"))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dim() == 2:  # tabular rows N,F: as N,F,1,1, never broadcast against 1,F,1,1
            pixels = pixels[:, :, None, None]
        mean = typing.cast(torch.Tensor, self.mean)
        std = typing.cast(torch.Tensor, self.std)
        logits: torch.Tensor = self.model(normalise(pixels, mean, std, self.input_scale))
        return logits

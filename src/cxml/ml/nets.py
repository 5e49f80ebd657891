"""The nn.Module classes cxml defines (imported lazily: this module imports torch)."""

from __future__ import annotations

import typing
from collections.abc import Sequence

import torch
from torch import nn

from cxml.ml.pixels import channel_values, normalise


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


class RepeatChannels(nn.Module):
    """Feed 1-channel images to a 3-channel torchvision model."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, self.channels, -1, -1) if x.shape[1] == 1 else x


class PixelClassifier(nn.Module):
    """A model that takes raw pixels (0..255, float, N,C,H,W) and returns logits.

    This is what goes to the MLflow registry, so `mlflow models serve` needs no cxml preprocessing.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", channel_values(mean, "cpu"))
        self.register_buffer("std", channel_values(std, "cpu"))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        mean = typing.cast(torch.Tensor, self.mean)
        std = typing.cast(torch.Tensor, self.std)
        logits: torch.Tensor = self.model(normalise(pixels, mean, std))
        return logits

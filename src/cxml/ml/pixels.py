"""The one input normaliser: raw model inputs -> the float input every cxml model is trained on.

An image model takes raw 0..255 pixels and a tabular model raw feature values; both are divided
by the model file's `input_scale` (255 for images, 1 for features) and standardised with its
`mean` and `std`, which are statistics of `input / input_scale`:

    (x / input_scale - mean) / std

Training, evaluation, the MLflow model (nets.PixelClassifier) and `cxml serve` all call
`normalise`, so what a model sees online cannot drift from what it saw offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

IMAGE_INPUT_SCALE = 255.0
"""Pixels are scaled to 0..1 before standardising; a model file without `input_scale` is this."""
FEATURE_INPUT_SCALE = 1.0
"""Tabular features are standardised in their own units."""


def channel_values(values: Sequence[float], device: torch.device | str) -> torch.Tensor:
    """Per-channel mean or std as a 1,C,1,1 tensor that broadcasts over an N,C,H,W batch."""
    import torch

    return torch.tensor(list(values), device=device).view(1, -1, 1, 1)


def normalise(
    pixels: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    input_scale: float = IMAGE_INPUT_SCALE,
) -> torch.Tensor:
    """uint8 (or float) N,C,H,W -> float, divided by `input_scale` and standardised per channel."""
    inputs = pixels.float()
    if input_scale != 1.0:  # features are used as they are: not even a division by one
        inputs = inputs / input_scale
    return (inputs - mean) / std


def normalise_with(
    pixels: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    input_scale: float = IMAGE_INPUT_SCALE,
) -> torch.Tensor:
    """`normalise` with the statistics as plain numbers (a model file's metadata)."""
    return normalise(
        pixels,
        channel_values(mean, pixels.device),
        channel_values(std, pixels.device),
        input_scale,
    )

"""The one pixel normaliser: raw 0..255 pixels -> the float input every cxml model is trained on.

Training, evaluation, the MLflow model (nets.PixelClassifier) and `cxml serve` all call
`normalise`, so what a model sees online cannot drift from what it saw offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def channel_values(values: Sequence[float], device: torch.device | str) -> torch.Tensor:
    """Per-channel mean or std as a 1,C,1,1 tensor that broadcasts over an N,C,H,W batch."""
    import torch

    return torch.tensor(list(values), device=device).view(1, -1, 1, 1)


def normalise(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (or float 0..255) N,C,H,W -> float, scaled to 0..1 and standardised per channel."""
    return (pixels.float() / 255.0 - mean) / std


def normalise_with(
    pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """`normalise` with the statistics as plain numbers (a model file's metadata)."""
    return normalise(
        pixels, channel_values(mean, pixels.device), channel_values(std, pixels.device)
    )

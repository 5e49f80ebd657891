"""Batches from device-resident uint8 tensors: shuffle, shard per rank, augment on the device.

Everything here runs on whatever device the tensors live on and never reads a value back to
the host, so a GPU step is not stalled by a sync.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def epoch_order(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The same permutation on every rank and every device for a given (seed, epoch)."""
    import torch

    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator).to(device, non_blocking=True)


def batch_indices(
    order: torch.Tensor, batch_size: int, rank: int = 0, world_size: int = 1
) -> Iterator[torch.Tensor]:
    """Global batches of `batch_size`, each cut into this rank's interleaved share.

    With several ranks a final global batch smaller than the number of ranks is dropped,
    since every rank must take the same number of steps.
    """
    n = int(order.shape[0])
    for start in range(0, n, batch_size):
        global_batch = order[start : start + batch_size]
        if world_size > 1:
            if global_batch.shape[0] < world_size:
                return
            global_batch = global_batch[rank::world_size]
        yield global_batch


def num_batches(n: int, batch_size: int, world_size: int = 1) -> int:
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= max(1, world_size) else 0)


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pad by `padding` (zeros) and crop back to the original size at a random offset per image."""
    import torch
    import torch.nn.functional as F

    if padding <= 0:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    device = images.device
    dy = torch.randint(0, 2 * padding + 1, (n,), device=device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=device)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=device)[None, :])[:, None, None, :]
    batch = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    import torch

    flip = torch.rand(images.shape[0], device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 -> float, scaled to 0..1 and standardised per channel."""
    return (images.float() / 255.0 - mean) / std

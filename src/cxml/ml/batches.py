"""Batches from device-resident uint8 tensors: shuffle, shard per rank, augment on the device.

Everything here runs on whatever device the tensors live on and never reads a value back to
the host, so a GPU step is not stalled by a sync.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# Training normalises its batches with the one normaliser serving uses (see ml/pixels.py).
from cxml.ml.pixels import normalise as normalise

if TYPE_CHECKING:
    import torch

    from cxml.core.config import TrainConfig
    from cxml.ml.data import Dataset, Split
    from cxml.ml.distributed import DistContext


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


# --- where batches come from: the resident split or a DataLoader --------------------------------


RESIDENT_SHARE_OF_FREE_MEMORY = 0.5


def choose_data_path(cfg: TrainConfig, data: Dataset, device: torch.device) -> tuple[str, str]:
    """`resident` (uint8 split kept on the device, augmented there) or `loader` (DataLoader)."""
    if cfg.data_path == "loader":
        return "loader", "train.data_path: loader"
    if device.type != "cuda":
        return "resident", f"{device.type}: the decoded dataset is already in memory"
    import torch

    needed = sum(s.images.numel() + s.labels.numel() * 8 for s in (data.train, data.val))
    free, _ = torch.cuda.mem_get_info(device)
    size = f"{needed / 2**20:.0f} MiB as uint8"
    if cfg.data_path == "gpu":
        return "resident", f"train.data_path: gpu; {size}"
    if needed <= RESIDENT_SHARE_OF_FREE_MEMORY * free:
        return "resident", f"the dataset ({size}) fits in GPU memory ({free / 2**30:.1f} GiB free)"
    return (
        "loader",
        f"the dataset ({size}) does not fit in half the free GPU memory ({free / 2**30:.1f} GiB)",
    )


@dataclass
class EpochBatches:
    """One epoch's (images, labels) batches on the device, and how many there are."""

    batches: Iterator[tuple[torch.Tensor, torch.Tensor]]
    count: int

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches


class BatchSource:
    """Shuffled, rank-sharded training batches from a resident split or a DataLoader."""

    def __init__(
        self, split: Split, path: str, device: torch.device, cfg: TrainConfig, ctx: DistContext
    ) -> None:
        self.path, self.device, self.cfg, self.ctx = path, device, cfg, ctx
        self.count = num_batches(len(split), cfg.batch_size, ctx.world_size)
        self.split = to_device(split, device) if path == "resident" else split
        self.loader: Any = None
        if path == "loader":
            from cxml.ml.loader import EpochBatchSampler, make_loader

            self.sampler = EpochBatchSampler(
                len(split), cfg.batch_size, cfg.seed, ctx.rank, ctx.world_size
            )
            self.loader = make_loader(
                split.images,
                split.labels,
                self.sampler,
                cfg.num_workers,
                pin_memory=device.type == "cuda",
            )

    def epoch(self, epoch: int) -> EpochBatches:
        return EpochBatches(self._batches(epoch), self.count)

    def _batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.loader is None:
            order = epoch_order(len(self.split), self.cfg.seed, epoch, self.split.images.device)
            for index in batch_indices(
                order, self.cfg.batch_size, self.ctx.rank, self.ctx.world_size
            ):
                yield self.split.images[index], self.split.labels[index]
            return
        self.sampler.set_epoch(epoch)
        for images, labels in self.loader:
            yield (
                images.to(self.device, non_blocking=True),
                labels.to(self.device, non_blocking=True),
            )


def to_device(split: Split, device: torch.device) -> Split:
    """Keep the whole split resident on the device as uint8 (decoded once, no loader workers)."""
    from cxml.ml.data import Split

    return Split(
        split.images.to(device, non_blocking=True), split.labels.to(device, non_blocking=True)
    )

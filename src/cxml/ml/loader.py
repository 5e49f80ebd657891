"""The DataLoader path, for datasets too large to keep on the GPU (this module imports torch)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cxml.ml.batches import batch_indices, epoch_order, num_batches


class SplitDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A decoded uint8 split; whole batches are fetched with one indexing operation."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


class EpochBatchSampler(Sampler[list[int]]):
    """The same batches, in the same order and per-rank shares, as the resident path."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world_size: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_order(self.n, self.seed, self.epoch, torch.device("cpu"))
        for index in batch_indices(order, self.batch_size, self.rank, self.world_size):
            yield index.tolist()

    def __len__(self) -> int:
        return num_batches(self.n, self.batch_size, self.world_size)


def _keep_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return batch


def make_loader(
    images: torch.Tensor,
    labels: torch.Tensor,
    sampler: EpochBatchSampler,
    num_workers: int,
    pin_memory: bool,
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    workers = {"persistent_workers": True, "prefetch_factor": 4} if num_workers > 0 else {}
    return DataLoader(
        SplitDataset(images, labels),
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=_keep_batch,  # type: ignore[arg-type]
        # Its own generator: seeding workers must not consume the global RNG that dropout uses,
        # or the loader path would train differently from the resident path.
        generator=torch.Generator(),
        **workers,  # type: ignore[arg-type]
    )

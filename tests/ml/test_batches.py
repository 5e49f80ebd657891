"""Device-side batching and augmentation, and the DataLoader path giving the same training."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from cxml.ml.batches import batch_indices, epoch_order, num_batches, random_crop, random_flip
from tests.conftest import run_cxml, write_params


def test_epoch_order_is_a_seeded_permutation() -> None:
    cpu = torch.device("cpu")
    first = epoch_order(100, seed=1, epoch=1, device=cpu)
    assert sorted(first.tolist()) == list(range(100))
    assert torch.equal(first, epoch_order(100, 1, 1, cpu))
    assert not torch.equal(first, epoch_order(100, 1, 2, cpu))


def test_ranks_share_each_global_batch_without_overlap() -> None:
    order = torch.arange(10)
    rank0 = list(batch_indices(order, 4, rank=0, world_size=2))
    rank1 = list(batch_indices(order, 4, rank=1, world_size=2))
    assert len(rank0) == len(rank1) == num_batches(10, 4, 2) == 3
    for a, b, start in zip(rank0, rank1, (0, 4, 8), strict=True):
        assert sorted(a.tolist() + b.tolist()) == list(range(start, min(start + 4, 10)))
    # a last global batch smaller than the number of ranks is dropped on every rank
    assert len(list(batch_indices(torch.arange(9), 4, rank=1, world_size=2))) == 2


def test_random_crop_is_a_window_of_the_padded_image() -> None:
    images = torch.randint(0, 255, (16, 3, 8, 8), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)
    cropped = random_crop(images, 2, generator)
    padded = F.pad(images, (2, 2, 2, 2))
    assert cropped.shape == images.shape and cropped.dtype == torch.uint8
    for i in range(16):
        windows = [padded[i, :, y : y + 8, x : x + 8] for y in range(5) for x in range(5)]
        assert any(torch.equal(cropped[i], w) for w in windows)
    assert random_crop(images, 0, generator) is images


def test_random_flip_flips_about_half() -> None:
    images = torch.arange(2 * 1 * 2 * 3, dtype=torch.uint8).view(2, 1, 2, 3).repeat(50, 1, 1, 1)
    flipped = random_flip(images, torch.Generator().manual_seed(0))
    same = sum(torch.equal(a, b) for a, b in zip(flipped, images, strict=True))
    mirrored = sum(torch.equal(a, b.flip(2)) for a, b in zip(flipped, images, strict=True))
    assert same + mirrored == 100 and 30 < mirrored < 70


def test_loader_path_trains_exactly_like_the_resident_path(tmp_path: Path) -> None:
    results = []
    for path in ("gpu", "loader"):
        directory = tmp_path / path
        directory.mkdir()
        write_params(
            directory,
            f"train:\n  epochs: 2\n  batch_size: 128\n  data_path: {path}\n  num_workers: 2\n"
            "tracking:\n  enabled: false\n",
        )
        result = run_cxml("train", cwd=directory)
        assert result.returncode == 0, result.stderr
        results.append((directory / "metrics/train.json").read_text())
        assert "data path: " in result.stdout
    assert results[0] == results[1]

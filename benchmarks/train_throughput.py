"""Training throughput: a plain DataLoader reference loop vs cxml's training path, same GPU, one run.

Claim (to be measured on the GPU machine; see benchmarks/README.md for recorded figures):
  hardware: 1x NVIDIA H100 80GB, torch 2.11 / torchvision 0.26
  ResNet-18 at 32x32, batch 512: cxml's whole path (resident uint8 data, GPU augmentation,
  bf16, channels_last, fused SGD) >= 10x the reference loop (PIL-decoding DataLoader, fp32);
  ResNet-50 at 224x224, batch 256: within 5% of the pure bf16 step rate.
  Each figure is the median of `--repeats` timed windows of `--steps` steps after warm-up.

MFU = achieved model FLOP/s / peak dense bf16 FLOP/s. FLOPs (not MACs) per image are counted
with torch.utils.flop_counter on one forward pass; a training step is taken as 3x forward.

    python benchmarks/train_throughput.py                        # both models, both paths
    python benchmarks/train_throughput.py --model resnet18 --size 32 --batch 512
    python benchmarks/train_throughput.py --device cpu --size 32 --batch 32 --steps 3   # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image

# Dense (no sparsity) bf16 tensor-core peaks, in FLOP/s.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


@dataclasses.dataclass
class Figure:
    name: str
    images_per_second: float
    mfu: float | None


def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def flops_per_image(model: torch.nn.Module, size: int, device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    sample = torch.randn(1, 3, size, size, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(sample)
    model.train()
    return float(counter.get_total_flops())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    step: Callable[[], None], steps: int, repeats: int, batch: int, device: torch.device
) -> float:
    for _ in range(3):  # warm-up: cudnn autotuning, allocator, lazy init
        step()
    synchronize(device)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        rates.append(steps * batch / (time.perf_counter() - start))
    return statistics.median(rates)


# --- (a) the reference: what a plain torchvision tutorial loop does ------------------------------


class PilImages(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Synthetic uint8 images of real shape, decoded through PIL like an image folder would be."""

    def __init__(self, count: int, size: int) -> None:
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
        self.labels = rng.integers(0, 10, count)
        self.transform = torchvision.transforms.Compose(
            [
                torchvision.transforms.RandomCrop(size, padding=size // 8),
                torchvision.transforms.RandomHorizontalFlip(),
                torchvision.transforms.ToTensor(),
                torchvision.transforms.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(self.images[index])
        return self.transform(image), int(self.labels[index])


def reference_step_fn(args: argparse.Namespace, device: torch.device) -> Callable[[], None]:
    model = torchvision.models.get_model(args.model, num_classes=10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = torch.utils.data.DataLoader(
        PilImages(args.batch * 8, args.size),
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=args.workers > 0,
    )
    batches = iter(loader)

    def step() -> None:
        nonlocal batches
        try:
            images, labels = next(batches)
        except StopIteration:
            batches = iter(loader)
            images, labels = next(batches)
        images, labels = images.to(device), labels.to(device)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


# --- (b) cxml's training path --------------------------------------------------------------------


def cxml_step_fn(args: argparse.Namespace, device: torch.device) -> Callable[[], None]:
    from cxml.core.config import DataConfig, Params, TrainConfig
    from cxml.ml.batches import BatchSource, EpochBatches
    from cxml.ml.data import Dataset, Split
    from cxml.ml.device import choose_precision
    from cxml.ml.distributed import DistContext
    from cxml.ml.fit import make_optimizer, train_one_epoch
    from cxml.ml.models import build_model

    count = args.batch * 8
    images = torch.randint(0, 256, (count, 3, args.size, args.size), dtype=torch.uint8)
    labels = torch.randint(0, 10, (count,))
    split = Split(images, labels)
    data = Dataset(split, split, split, tuple(str(i) for i in range(10)), "synthetic", "synthetic")
    params = Params(
        data=DataConfig(crop_padding=args.size // 8, flip=True),
        train=TrainConfig(batch_size=args.batch, compile=bool(args.compile)),
    )
    model = build_model(args.model, 10, 3).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    train_model: Any = torch.compile(model, mode=args.compile) if args.compile else model
    optimizer = make_optimizer(params.train, model, device)
    precision = choose_precision(params.train, device)
    ctx = DistContext()
    source = BatchSource(data.train, "resident", device, params.train, ctx)
    mean = torch.full((1, 3, 1, 1), 0.5, device=device)
    std = torch.full((1, 3, 1, 1), 0.25, device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def endless_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = 0
        while True:
            epoch += 1
            yield from source.epoch(epoch)

    stream = endless_batches()

    def step() -> None:
        # One batch through the very function `cxml train` runs for every epoch.
        train_one_epoch(
            train_model,
            EpochBatches(itertools.islice(stream, 1), 1),
            params,
            1,
            optimizer,
            None,
            precision,
            loss_fn,
            mean,
            std,
            device,
            ctx,
            progress=False,
        )

    return step


def pure_bf16_step_fn(args: argparse.Namespace, device: torch.device) -> Callable[[], None]:
    """The ceiling for large models: data already normalised on the GPU, bf16, channels_last."""
    model = torchvision.models.get_model(args.model, num_classes=10).to(device)
    model = model.to(memory_format=torch.channels_last)
    fused = True if device.type == "cuda" else None
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, fused=fused)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(
        memory_format=torch.channels_last
    )
    labels = torch.randint(0, 10, (args.batch,), device=device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def time_to_accuracy(target: float, device: torch.device) -> str:
    """Seconds of training until the digits example first reaches `target` validation accuracy."""
    import tempfile
    from pathlib import Path

    from cxml.core.config import Params, TrackingConfig, TrainConfig
    from cxml.ml.data import load_dataset
    from cxml.ml.distributed import DistContext
    from cxml.ml.fit import fit
    from cxml.train import build_metadata

    params = Params(train=TrainConfig(device=device.type), tracking=TrackingConfig(enabled=False))
    data = load_dataset(params.data)
    with tempfile.TemporaryDirectory() as tmp:
        params = dataclasses.replace(
            params,
            outputs=dataclasses.replace(params.outputs, checkpoint_dir=str(Path(tmp) / "ckpt")),
        )
        result = fit(
            params,
            data,
            build_metadata(params, data),
            device,
            DistContext(),
            resume=False,
            show_progress=False,
        )
    elapsed = 0.0
    for stats in result.history:
        elapsed += stats.seconds
        if stats.val_accuracy >= target:
            return f"{elapsed:.2f} s (epoch {stats.epoch}, val_accuracy {stats.val_accuracy:.4f})"
    return f"not reached in {len(result.history)} epochs ({elapsed:.2f} s)"


def figure(name: str, rate: float, flops: float, peak: float | None) -> Figure:
    mfu = (rate * 3 * flops / peak) if peak else None
    return Figure(name, rate, mfu)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", action="append", help="torchvision model (default: resnet18 and resnet50)"
    )
    parser.add_argument(
        "--size", type=int, action="append", help="image side per model (default 32, 224)"
    )
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8, help="reference DataLoader workers")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        help="torch.compile cxml's model, optionally with a mode (reduce-overhead: CUDA graphs)",
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s if not known"
    )
    parser.add_argument("--skip-tta", action="store_true", help="skip time-to-accuracy on digits")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    models = args.model or ["resnet18", "resnet50"]
    sizes = args.size or [32, 224][: len(models)]
    peak = peak_flops(device, args.peak_tflops)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(f"device: {name}; torch {torch.__version__}, torchvision {torchvision.__version__}")
    print(f"peak bf16: {peak / 1e12:.0f} TFLOP/s" if peak else "peak bf16: unknown (MFU not shown)")
    for model_name, size in zip(models, sizes, strict=True):
        run_args = argparse.Namespace(**{**vars(args), "model": model_name, "size": size})
        run_args.batch = args.batch or (512 if size <= 64 else 256)
        flops = flops_per_image(
            torchvision.models.get_model(model_name, num_classes=10).to(device), size, device
        )
        print(
            f"\n{model_name} {size}x{size}, batch {run_args.batch}: {flops / 1e9:.3f} GFLOPs/image forward"
        )
        paths = [
            ("reference DataLoader loop (PIL, fp32)", reference_step_fn),
            ("pure bf16 step (data on GPU)", pure_bf16_step_fn),
            ("cxml training path", cxml_step_fn),
        ]
        rows = [
            figure(
                label,
                time_steps(
                    make(run_args, device), args.steps, args.repeats, run_args.batch, device
                ),
                flops,
                peak,
            )
            for label, make in paths
        ]
        for row in rows:
            mfu = f"  MFU {row.mfu * 100:5.1f}%" if row.mfu is not None else ""
            print(f"  {row.name:<40} {row.images_per_second:>12,.0f} img/s{mfu}")
        print(
            f"  cxml / reference: {rows[2].images_per_second / rows[0].images_per_second:.1f}x;"
            f" cxml / pure bf16 step: {rows[2].images_per_second / rows[1].images_per_second:.2f}"
        )
    if not args.skip_tta:
        print(f"\ntime to 95% val accuracy on the digits example: {time_to_accuracy(0.95, device)}")


if __name__ == "__main__":
    main()

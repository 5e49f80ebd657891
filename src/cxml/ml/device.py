"""Which device trains, with which precision, and the torch settings that go with it."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxml.core.config import TrainConfig
from cxml.core.errors import ConfigError

if TYPE_CHECKING:
    import torch


def choose_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"train.device: unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "train.device: cuda was asked for but no CUDA GPU is visible; use auto or cpu"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "train.device: mps was asked for but is not available here; use auto or cpu"
        )
    return device


def describe_device(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({torch.get_num_threads()} threads)"


def configure_torch(cfg: TrainConfig, device: torch.device) -> None:
    import torch

    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        # Bit-for-bit repeatable CPU runs: same params + seed -> same metrics files. The public
        # call also imports torch._inductor's config (~1 s) for a flag only torch.compile reads.
        if cfg.compile:
            torch.use_deterministic_algorithms(True, warn_only=True)
        else:
            torch._C._set_deterministic_algorithms(True, warn_only=True)


def use_compile_cache(cfg: TrainConfig) -> None:
    """Point torch.compile's caches at a persistent folder (call before torch is imported:
    inductor fixes its cache directory on first use)."""
    if not cfg.compile:
        return
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache_dir()))
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")


def compile_cache_dir() -> Path:
    """A persistent place for torch.compile artifacts, so a self-hosted runner compiles once."""
    from cxml.core import env

    base = env.get(env.CXML_CACHE_DIR) or os.path.join(os.path.expanduser("~"), ".cache", "cxml")
    path = Path(base) / "inductor"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Precision:
    autocast_dtype: Any | None
    """torch.bfloat16 / torch.float16 under autocast, or None for fp32."""
    use_grad_scaler: bool

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)


def choose_precision(cfg: TrainConfig, device: torch.device) -> Precision:
    import torch

    if device.type != "cuda" or not cfg.mixed_precision:
        return Precision(None, False)
    if torch.cuda.is_bf16_supported():
        return Precision(torch.bfloat16, False)
    return Precision(torch.float16, True)

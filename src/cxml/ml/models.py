"""Model architectures by name, and the cxml model file (weights + metadata) they are saved in."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxml.core.errors import ConfigError, RecordError
from cxml.records.release import MODEL_FILE_FORMAT

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

TABULAR_KEYS = ("feature_names", "feature_min", "feature_max", "hidden_sizes")

BUILTIN_ARCHITECTURES = ("small_cnn", "mlp")


@dataclass(frozen=True)
class ModelMetadata:
    architecture: str
    num_classes: int
    class_names: tuple[str, ...]
    input_size: tuple[int, int, int]
    """C, H, W the model expects."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    cxml_version: str
    git_commit: str | None = None
    params_hash: str | None = None
    data_hash: str | None = None
    created_at: str | None = None
    feature_names: tuple[str, ...] = ()
    """A tabular model's input columns, in order (ml/tabular.py); () for an image model."""
    feature_min: tuple[float, ...] = ()
    feature_max: tuple[float, ...] = ()
    """Each feature's range in the training split (hints for a form, not limits)."""
    hidden_sizes: tuple[int, ...] = ()
    """`mlp`: the widths of its hidden layers."""
    input_scale: float = 255.0
    """Inputs are divided by this before `mean`/`std` apply (ml/pixels.py): 255 for pixels, 1
    for features; a model file without it is an image model's (255)."""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("class_names", "input_size", "mean", "std", *TABULAR_KEYS):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMetadata:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("class_names", "input_size", "mean", "std"):
            values[key] = tuple(values[key])
        for key in TABULAR_KEYS:
            values[key] = tuple(values.get(key) or ())
        if "input_scale" in values:
            values["input_scale"] = float(values["input_scale"])
            if not 0 < values["input_scale"] < float("inf"):
                raise ValueError("input_scale must be a positive number")
        return cls(**values)

    @property
    def tabular(self) -> bool:
        return bool(self.feature_names)


def torchvision_architectures() -> list[str]:
    from torchvision import models

    return sorted(models.list_models(module=models))


def build_model(
    architecture: str, num_classes: int, in_channels: int, hidden_sizes: Sequence[int] = ()
) -> torch.nn.Module:
    """A freshly initialised classifier; torchvision models get a channel adapter for grey input.
    For `mlp`, `in_channels` is the number of features."""
    import torch

    from cxml.ml.nets import RepeatChannels, SmallCNN, TabularMLP

    if architecture == "small_cnn":
        return SmallCNN(num_classes, in_channels)
    if architecture == "mlp":
        return TabularMLP(num_classes, in_channels, hidden_sizes)
    known = torchvision_architectures()
    if architecture not in known:
        sample = ", ".join(
            ["small_cnn", "mlp", "resnet18", "mobilenet_v3_small", "efficientnet_b0"]
        )
        raise ConfigError(
            f"model.architecture: unknown architecture {architecture!r}; "
            f"use one of {sample} or another torchvision classifier name"
        )
    from torchvision import models

    network: torch.nn.Module = models.get_model(architecture, weights=None, num_classes=num_classes)
    if in_channels == 3:
        return network
    return torch.nn.Sequential(RepeatChannels(3), network)


def load_weights_file(model: torch.nn.Module, path: str | Path) -> None:
    """Load local pretrained weights, skipping the classifier head when its shape differs."""
    import torch

    weights_path = Path(path)
    if not weights_path.is_file():
        raise ConfigError(
            f"model.weights: {weights_path} not found; give a local state-dict file or null"
        )
    try:
        loaded = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for a bad file; its messages span many lines
        raise ConfigError(
            f"model.weights: {weights_path} is not a readable torch state dict of tensors; "
            "give a state-dict file saved with torch.save(model.state_dict(), path)"
        ) from None
    if isinstance(loaded, dict) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"model.weights: {weights_path} is not a state dict (name -> tensor); "
            "save one with torch.save(model.state_dict(), path)"
        )
    loaded = {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    target = model.state_dict()
    # A plain torchvision state dict fits the wrapped model under the "1." prefix.
    if not set(loaded) & set(target) and all(f"1.{k}" in target for k in list(loaded)[:5]):
        loaded = {f"1.{k}": v for k, v in loaded.items()}
    compatible = {k: v for k, v in loaded.items() if k in target and target[k].shape == v.shape}
    if not compatible:
        raise ConfigError(
            f"model.weights: {weights_path} has no weights matching model.architecture"
        )
    model.load_state_dict(compatible, strict=False)


def save_model_file(path: str | Path, model: torch.nn.Module, metadata: ModelMetadata) -> None:
    """Write weights + metadata atomically, so a reader never sees half a model."""
    import torch

    from cxml.core import files

    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    with files.atomic_path(path) as tmp:
        torch.save(
            {"format": MODEL_FILE_FORMAT, "state_dict": state, "metadata": metadata.to_dict()}, tmp
        )


def read_model_file(path: str | Path) -> tuple[dict[str, Any], ModelMetadata]:
    import pickle

    import torch

    model_path = Path(path)
    if not model_path.is_file():
        raise RecordError(
            f"{model_path}: model file not found; run `cxml train` first or pass --model PATH"
        )
    try:
        payload = torch.load(model_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only=True: code in the file is never run
        raise RecordError(
            f"{model_path}: refused: it holds Python objects other than tensors and plain data; "
            "use a model file written by `cxml train`"
        ) from None
    except Exception:  # torch raises many types for a damaged file
        raise RecordError(
            f"{model_path}: not a readable cxml model file (damaged or not a torch file); "
            "re-run `cxml train`"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FILE_FORMAT:
        raise RecordError(
            f"{model_path}: not a cxml model file (format {MODEL_FILE_FORMAT} expected)"
        )
    try:
        state_dict = payload["state_dict"]
        metadata = ModelMetadata.from_dict(payload["metadata"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise RecordError(
            f"{model_path}: the model file's weights or metadata are malformed; re-run `cxml train`"
        ) from None
    if not isinstance(state_dict, dict):
        raise RecordError(f"{model_path}: the model file holds no weights; re-run `cxml train`")
    return state_dict, metadata


def load_model_file(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, ModelMetadata]:
    """Rebuild the saved model, weights loaded, in eval mode on `device`."""
    state_dict, metadata = read_model_file(path)
    try:
        model = build_model(
            metadata.architecture,
            metadata.num_classes,
            metadata.input_size[0],
            metadata.hidden_sizes,
        )
        model.load_state_dict(state_dict)
    except (ConfigError, RuntimeError, TypeError, ValueError, IndexError):
        raise RecordError(
            f"{path}: the model file's weights do not fit its metadata; re-run `cxml train`"
        ) from None
    model.eval()
    return model.to(device), metadata


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP / torch.compile wrappers."""
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    return inner


def preprocess(images: torch.Tensor, metadata: ModelMetadata) -> torch.Tensor:
    """uint8 N,C,H,W (at the model's input size), or N,F,1,1 feature rows -> normalised float
    batch (ml/pixels.py)."""
    from cxml.ml.pixels import normalise_with

    return normalise_with(images, metadata.mean, metadata.std, metadata.input_scale)


def image_to_input(image: Image, metadata: ModelMetadata) -> torch.Tensor:
    """One PIL image of any size and mode -> uint8 C,H,W tensor at the model's input size."""
    import numpy as np
    import torch

    channels, height, width = metadata.input_size
    converted = image.convert("L" if channels == 1 else "RGB")
    if converted.size != (width, height):
        converted = converted.resize((width, height))
    array = np.asarray(converted, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()

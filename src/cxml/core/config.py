"""params.yaml -> typed, frozen config objects, validated once with errors that name the key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cxml.core import env
from cxml.core.errors import ConfigError

DEFAULT_PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class DataConfig:
    source: Literal["digits", "imagefolder"] = "digits"
    """`digits`: scikit-learn's built-in 8x8 digits; `imagefolder`: a directory of split folders."""
    path: str | None = None
    """Root of an imagefolder dataset (split folders `train/val/test` or `training/validation/evaluation`)."""
    image_size: int | None = None
    """Side of the square images the model sees; default: 8 for digits, 64 for imagefolder."""
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_seed: int = 0
    on_bad_image: Literal["fail", "skip"] = "fail"
    crop_padding: int = 0
    """Random-crop augmentation: pad by this many pixels, crop back (0 = off)."""
    flip: bool = False
    """Random horizontal flip augmentation (off by default: digits are not mirror-symmetric)."""


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = "small_cnn"
    """`small_cnn` or any torchvision classification model name (`resnet18`, ...)."""
    weights: str | None = None
    """Optional local file of pretrained weights (a state dict); never downloaded."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.05
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    scheduler: Literal["cosine", "none"] = "cosine"
    label_smoothing: float = 0.0
    seed: int = 42
    device: str = "auto"
    """`auto` (cuda -> mps -> cpu), `cpu`, `cuda`, `cuda:1`, `mps`."""
    mixed_precision: bool = True
    """bf16 autocast on GPU (fp16 + GradScaler where bf16 is missing); ignored on CPU."""
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    """torch.compile mode; `reduce-overhead` replays CUDA graphs (small, launch-bound nets)."""
    data_path: Literal["auto", "gpu", "loader"] = "auto"
    """How batches reach the model on GPU: resident uint8 tensor (`gpu`) or a DataLoader."""
    num_workers: int = 2


@dataclass(frozen=True)
class EvaluateConfig:
    baseline: str = "auto"
    """`auto` (git base ref, then registry champion), `git:<ref>`, `champion`, or `none`."""
    gate: tuple[str, ...] = ("accuracy >= 0.9", "accuracy >= baseline - 0.005")
    latency_samples: int = 100
    batch_size: int = 256


@dataclass(frozen=True)
class TrackingConfig:
    enabled: bool = True
    uri: str | None = None
    """Tracking URI; default `MLFLOW_TRACKING_URI`, else `sqlite:///<cwd>/mlflow.db`."""
    experiment: str = "cxml"
    model_name: str = "cxml-model"
    register: bool = True


@dataclass(frozen=True)
class OutputsConfig:
    model: str = "model/model.pt"
    metrics_dir: str = "metrics"
    plots_dir: str = "plots"
    checkpoint_dir: str = ".cxml/checkpoints"
    run_info: str = "run.json"
    gate: str = "gate.json"
    report: str = "report.md"

    @property
    def train_metrics(self) -> Path:
        return Path(self.metrics_dir) / "train.json"

    @property
    def eval_metrics(self) -> Path:
        return Path(self.metrics_dir) / "eval.json"

    @property
    def train_plot(self) -> Path:
        return Path(self.plots_dir) / "train.csv"

    @property
    def confusion_plot(self) -> Path:
        return Path(self.plots_dir) / "confusion.csv"

    @property
    def per_class_plot(self) -> Path:
        return Path(self.plots_dir) / "per_class.csv"


@dataclass(frozen=True)
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    source: str = field(default=DEFAULT_PARAMS_FILE, compare=False)
    """Where these params were read from (for messages); not a params.yaml key."""

    def to_dict(self) -> dict[str, Any]:
        """The params as plain data (every section, defaults filled in), as logged and hashed."""
        out = dataclasses.asdict(self)
        out.pop("source")
        plain: dict[str, Any] = _lists_not_tuples(out)
        return plain

    def flat(self) -> dict[str, Any]:
        """`section.key -> value`, the way MLflow and `dvc params diff` show params."""
        flat: dict[str, Any] = {}
        for section, values in self.to_dict().items():
            for key, value in values.items():
                flat[f"{section}.{key}"] = value
        return flat

    def digest(self) -> str:
        """A short stable hash of the effective params (recorded in the model file)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _lists_not_tuples(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists_not_tuples(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists_not_tuples(v) for v in value]
    return value


def default_params_path() -> Path:
    return Path(env.get(env.CXML_PARAMS) or DEFAULT_PARAMS_FILE)


def load_params(path: str | Path | None = None, *, required: bool = False) -> Params:
    """Read and validate params.yaml; a missing file gives the defaults unless `required`."""
    import yaml

    params_path = Path(path) if path is not None else default_params_path()
    label = str(params_path)
    if not params_path.exists():
        if required:
            raise ConfigError(f"{label}: file not found; create it or pass --params PATH")
        return Params(source=label)
    try:
        raw = yaml.load(params_path.read_text(encoding="utf-8"), Loader=_yaml_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{label}: not valid YAML{where}; fix the syntax") from None
    return params_from_mapping(raw or {}, source=label)


def _yaml_loader() -> type[Any]:
    """PyYAML's safe loader, plus YAML 1.2 floats: `lr: 1e-3` is a number, not a string."""
    import re

    import yaml

    class ParamsLoader(yaml.SafeLoader):
        pass

    ParamsLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    return ParamsLoader


def params_from_mapping(raw: object, *, source: str = DEFAULT_PARAMS_FILE) -> Params:
    """Build `Params` from already-parsed YAML, checking every key and type."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a mapping of sections, got {_describe(raw)}")
    built: Params = _build_dataclass(Params, raw, source, prefix="", skip={"source"})
    return dataclasses.replace(built, source=source)


def _build_dataclass(
    cls: type[Any], raw: Mapping[Any, Any], source: str, prefix: str, skip: set[str] | None = None
) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in (skip or set())}
    unknown = [str(k) for k in raw if k not in fields]
    if unknown:
        key = f"{prefix}{unknown[0]}"
        known = ", ".join(fields)
        where = prefix.rstrip(".") or "the top level"
        raise ConfigError(f"{source}: {key}: unknown key; known keys in {where}: {known}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        values[name] = _coerce(hints[name], value, source, f"{prefix}{name}")
    return cls(**values)


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if value is None:
            return hint()
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: {key}: expected a mapping, got {_describe(value)}")
        return _build_dataclass(hint, value, source, prefix=f"{key}.")
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, source, key)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{source}: {key}: expected one of {choices}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key}: expected a list, got {_describe(value)}")
        return tuple(_coerce(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key}: expected true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key}: expected an integer, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {key}: expected a number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key}: expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"config field {key} has an unsupported type {hint!r}")  # programming error


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def validate_ranges(params: Params) -> None:
    """Checks beyond types: values that would fail late and obscurely if let through."""
    src = params.source
    checks: list[tuple[bool, str]] = [
        (params.train.epochs >= 1, "train.epochs: must be at least 1"),
        (params.train.batch_size >= 1, "train.batch_size: must be at least 1"),
        (params.train.lr > 0, "train.lr: must be greater than 0"),
        (0 < params.data.val_fraction < 1, "data.val_fraction: must be between 0 and 1"),
        (0 < params.data.test_fraction < 1, "data.test_fraction: must be between 0 and 1"),
        (
            params.data.val_fraction + params.data.test_fraction < 1,
            "data.val_fraction + data.test_fraction: must leave some data to train on",
        ),
        (
            params.data.image_size is None or params.data.image_size >= 4,
            "data.image_size: must be at least 4",
        ),
        (params.data.crop_padding >= 0, "data.crop_padding: must not be negative"),
        (params.train.num_workers >= 0, "train.num_workers: must not be negative"),
        (params.evaluate.latency_samples >= 1, "evaluate.latency_samples: must be at least 1"),
        (
            params.data.source != "imagefolder" or bool(params.data.path),
            "data.path: required when data.source is imagefolder",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{src}: {message}")

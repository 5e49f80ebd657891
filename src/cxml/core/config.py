"""params.yaml -> typed, frozen config objects, validated once with errors that name the key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cxml.core import env, files
from cxml.core.errors import ConfigError

DEFAULT_PARAMS_FILE = "params.yaml"
DIGITS_SIZE = 8
IMAGEFOLDER_DEFAULT_SIZE = 64
MAX_IMAGE_SIZE = 1024
"""Largest image side: a decoded dataset is N x 3 x size² bytes, and 1e6 asked for petabytes."""
MAX_PARAMS_BYTES = 1024 * 1024
"""params.yaml is a page of settings; a megabyte is already far more than any needs."""


@dataclass(frozen=True)
class DataConfig:
    source: Literal["digits", "imagefolder", "csv", "breast_cancer"] = "digits"
    """`digits`: scikit-learn's built-in 8x8 digits; `imagefolder`: a directory of split folders;
    `csv`: a table (docs/tabular.md); `breast_cancer`: scikit-learn's built-in tabular example."""
    path: str | None = None
    """Root of an imagefolder dataset (split folders `train/val/test` or `training/validation/evaluation`);
    for `csv`, one CSV file (split by the fractions) or a folder of train.csv/val.csv/test.csv."""
    label_column: str = "label"
    """`csv`: the column that holds the class of each row."""
    feature_columns: tuple[str, ...] = ()
    """`csv`: the feature columns, in the order the model takes them; empty: all but the label."""
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
    hidden_sizes: tuple[int, ...] = (64, 32)
    """`mlp`: the widths of its hidden layers."""


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
    gate: tuple[str, ...] = ("accuracy >= 0.9", "accuracy >= baseline - 0.01")
    require_baseline: bool = False
    """True: no baseline is an error (exit 2) instead of skipping the relative rules."""
    latency_samples: int = 100
    """Timed single-image calls per latency trial."""
    latency_trials: int = 5
    """Latency trials: the metric is the median trial's, `<metric>_spread` their max - min."""
    latency_budget_s: float = 0.5
    """Seconds for the latency measurement (warm-up included): once they have passed, no further
    trial starts if 3 (or all `latency_trials`, if fewer) are done."""
    batch_size: int = 256
    directions: dict[str, Literal["higher", "lower"]] = field(default_factory=dict)
    """Which way is better per metric (`rmse: lower`); default: from the name (core/metrics.py)."""


@dataclass(frozen=True)
class TrackingConfig:
    enabled: bool = True
    required: bool = True
    """An unreachable tracking server stops training (exit 3); false: warn and train untracked."""
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

    def output_files(self) -> list[tuple[str, Path]]:
        """Every file the steps write, with the params key that places it."""
        return [
            ("outputs.model", Path(self.model)),
            ("outputs.metrics_dir", self.train_metrics),
            ("outputs.metrics_dir", self.eval_metrics),
            ("outputs.plots_dir", self.train_plot),
            ("outputs.plots_dir", self.confusion_plot),
            ("outputs.plots_dir", self.per_class_plot),
            ("outputs.checkpoint_dir", Path(self.checkpoint_dir) / "last.pt"),
            ("outputs.run_info", Path(self.run_info)),
            ("outputs.gate", Path(self.gate)),
            ("outputs.report", Path(self.report)),
        ]

    def check_writable(self) -> None:
        """Refuse output paths that cannot be files (a directory, a path under a file) up front,
        so a step fails in a second rather than after minutes of work."""
        for key, path in self.output_files():
            files.check_writable_file(path, key=key)


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

    params_path = Path(path) if path is not None else default_params_path()
    label = str(params_path)
    if not params_path.exists():
        if required:
            raise ConfigError(f"{label}: file not found; create it or pass --params PATH")
        return Params(source=label)
    text = files.read_utf8(params_path, fix="fix the file", error=ConfigError, label=label)
    if len(text) > MAX_PARAMS_BYTES:
        raise ConfigError(
            f"{label}: larger than {MAX_PARAMS_BYTES} bytes; keep only settings in it"
        )
    return params_from_mapping(parse_yaml(text, label), source=label)


def parse_yaml(text: str, label: str) -> Any:
    """YAML text -> data; syntax errors, nesting too deep and oversized numbers name the file."""
    import yaml

    try:
        raw = yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{label}: not valid YAML{where}; fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"{label}: nested too deeply; params are a few levels deep") from None
    except ValueError:  # PyYAML's int(): Python refuses integers of more than 4,300 digits
        raise ConfigError(f"{label}: a number is too long; fix the value") from None
    return raw or {}


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
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: {key}: expected a mapping, got {_describe(value)}")
        return {
            _coerce(args[0], k, source, f"{key} key"): _coerce(args[1], v, source, f"{key}.{k}")
            for k, v in value.items()
        }
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
        return _finite_float(value, source, key)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key}: expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"config field {key} has an unsupported type {hint!r}")  # programming error


def _finite_float(value: int | float, source: str, key: str) -> float:
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"{source}: {key}: expected a finite number, got {_describe(value)}")
    return number


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int) and len(str(abs(value))) > 20:
        return f"a {len(str(abs(value)))}-digit number"
    return repr(value)


SEED_LIMIT = 2**32
TABULAR_SOURCES = ("csv", "breast_cancer")
MAX_HIDDEN_WIDTH = 65_536
MAX_HIDDEN_LAYERS = 32
SEED_RANGE = f"must be between 0 and {SEED_LIMIT - 1}"


def effective_image_size(cfg: DataConfig) -> int:
    """data.image_size, or the source's default (8 for digits, 64 for image folders)."""
    if cfg.image_size is not None:
        return cfg.image_size
    return DIGITS_SIZE if cfg.source == "digits" else IMAGEFOLDER_DEFAULT_SIZE


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
            params.data.image_size is None or 4 <= params.data.image_size <= MAX_IMAGE_SIZE,
            f"data.image_size: must be between 4 and {MAX_IMAGE_SIZE} (pixels per side)",
        ),
        (params.data.crop_padding >= 0, "data.crop_padding: must not be negative"),
        (
            params.data.crop_padding <= effective_image_size(params.data),
            "data.crop_padding: must not exceed the image size; use a few pixels",
        ),
        (0 <= params.data.split_seed < SEED_LIMIT, f"data.split_seed: {SEED_RANGE}"),
        (0 <= params.train.seed < SEED_LIMIT, f"train.seed: {SEED_RANGE}"),
        (
            0 <= params.train.label_smoothing < 1,
            "train.label_smoothing: must be at least 0 and below 1 (typically 0.1)",
        ),
        (
            0 <= params.train.momentum < 1,
            "train.momentum: must be at least 0 and below 1 (typically 0.9)",
        ),
        (params.train.weight_decay >= 0, "train.weight_decay: must not be negative"),
        (params.train.num_workers >= 0, "train.num_workers: must not be negative"),
        (params.evaluate.latency_samples >= 1, "evaluate.latency_samples: must be at least 1"),
        (params.evaluate.latency_trials >= 1, "evaluate.latency_trials: must be at least 1"),
        (
            params.evaluate.latency_budget_s >= 0,
            "evaluate.latency_budget_s: must not be negative (seconds; default 0.5)",
        ),
        (params.evaluate.batch_size >= 1, "evaluate.batch_size: must be at least 1"),
        (
            not (params.evaluate.require_baseline and params.evaluate.baseline.strip() == "none"),
            "evaluate.require_baseline: true needs a baseline, but evaluate.baseline is none; "
            "set evaluate.baseline (auto, champion, git:<ref>) or require_baseline: false",
        ),
        (
            params.data.source != "imagefolder" or bool(params.data.path),
            "data.path: required when data.source is imagefolder",
        ),
        (
            params.data.source != "csv" or bool(params.data.path),
            "data.path: required when data.source is csv (a CSV file or a folder of split CSVs)",
        ),
        (
            (params.data.source in TABULAR_SOURCES) == (params.model.architecture == "mlp"),
            "model.architecture: tabular data (data.source csv or breast_cancer) takes mlp, and "
            "mlp takes tabular data; set the two together",
        ),
        (
            params.data.source not in TABULAR_SOURCES
            or (params.data.crop_padding == 0 and not params.data.flip),
            "data.crop_padding / data.flip: image augmentations; tabular data (data.source csv "
            "or breast_cancer) takes neither: set crop_padding: 0 and flip: false",
        ),
        (
            all(1 <= width <= MAX_HIDDEN_WIDTH for width in params.model.hidden_sizes),
            f"model.hidden_sizes: each width must be between 1 and {MAX_HIDDEN_WIDTH}",
        ),
        (
            len(params.model.hidden_sizes) <= MAX_HIDDEN_LAYERS,
            f"model.hidden_sizes: at most {MAX_HIDDEN_LAYERS} hidden layers",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{src}: {message}")

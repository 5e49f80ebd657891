"""The model service: the loaded model, ready to turn image files into predictions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cxml import __version__
from cxml.core.console import info
from cxml.core.errors import ConfigError, RecordError
from cxml.core.metrics import EVAL_METRICS
from cxml.serve.metrics import ServiceMetrics
from cxml.serve.requests import decode_image
from cxml.serve.settings import ServeSettings

if TYPE_CHECKING:
    import torch

    from cxml.ml.models import ModelMetadata
    from cxml.serve.layout import LayoutChoice

SUMMARY_METRICS = EVAL_METRICS


class PredictionService:
    """The loaded model and what a request needs to be turned into predictions."""

    def __init__(self, settings: ServeSettings, metrics: ServiceMetrics | None = None) -> None:
        import torch

        self.settings = settings
        self.device = resolve_device(settings.device)
        # Loading is single-threaded, so a pre-fork supervisor has no torch thread pool to pass to
        # its workers; each sets its own thread count in warm_up, after the fork.
        torch.set_num_threads(1)
        self.model, self.metadata = load_pixel_model(settings, self.device)
        self.layout, self.channels_last_model = self.choose_layout()
        self.ready = False
        self.metrics = metrics if metrics is not None else ServiceMetrics()

    def warm_up(self) -> None:
        """Run one batch through the model, so the first request is not the slow one."""
        import torch

        torch.set_num_threads(self.settings.threads)
        channels, height, width = self.metadata.input_size
        blank = torch.zeros((2, channels, height, width), dtype=torch.uint8)
        self.classify(blank)
        if self.channels_last_model is not None:  # its own first pass is slow too
            self.classify(blank[:1])
        self.ready = True

    def choose_layout(self) -> tuple[LayoutChoice, torch.nn.Module | None]:
        """The memory layout per batch size (serve/layout.py), and the channels-last copy of the
        model when some batches use it; logged once, before any worker forks."""
        from cxml.serve.layout import LayoutChoice, channels_last_copy, choose_layout

        input_size = self.metadata.input_size
        if self.settings.layout == "standard":
            return LayoutChoice(), None
        if self.settings.layout == "channels-last":
            return LayoutChoice(self.settings.max_batch), channels_last_copy(self.model)
        choice, copy = choose_layout(self.model, input_size, self.device)
        if choice.timings_ms:
            info(f"forward passes: {choice.describe()}")
        return choice, copy

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 N,C,H,W -> logits, normalised by the one normaliser training uses."""
        import torch

        model = self.model
        if self.channels_last_model is not None and len(batch) <= self.layout.channels_last_up_to:
            from cxml.serve.layout import to_channels_last

            model, batch = self.channels_last_model, to_channels_last(batch)
        with torch.inference_mode():
            logits: torch.Tensor = model(batch.to(self.device, non_blocking=True))
        return logits

    def classify(self, batch: torch.Tensor) -> list[list[float]]:
        """uint8 N,C,H,W -> class probabilities per image."""
        import torch

        with torch.inference_mode():
            probabilities = torch.softmax(self.logits(batch).float(), dim=1)
        rows: list[list[float]] = probabilities.cpu().tolist()
        return rows

    def predict(self, images: list[bytes]) -> dict[str, Any]:
        """Image files -> the /predict answer, in the calling thread (the app splits the two)."""
        return self.answer(self.decode(images))

    def decode(self, images: list[bytes]) -> torch.Tensor:
        """Image files -> one uint8 N,C,H,W batch at the model's input size, or a RequestError."""
        import torch

        tensors = [
            decode_image(data, index, self.metadata, self.settings)
            for index, data in enumerate(images)
        ]
        return torch.stack(tensors)

    def decode_features(self, content_type: str, body: bytes) -> torch.Tensor:
        """A tabular model's JSON rows -> float32 N,F,1,1 (serve/features.py), or a RequestError."""
        from cxml.serve.features import features_from_json
        from cxml.serve.requests import RequestError

        if content_type != "application/json":
            raise RequestError(
                415,
                f"content type {content_type or 'none'!r}: this model takes feature rows as "
                'application/json ({"features": [...]}, {"rows": [...]} or {"records": [...]})',
            )
        return features_from_json(body, self.metadata, self.settings.max_batch)

    def input_summary(self, batch: torch.Tensor) -> list[float]:
        """One number per decoded input, for drift monitoring (/metrics): an image's mean pixel
        value (0-255), or a tabular row's mean standardised feature value."""
        if not self.metadata.feature_names:
            return [float(v) for v in batch.float().mean(dim=(1, 2, 3)).tolist()]
        from cxml.ml.pixels import normalise_with

        metadata = self.metadata
        scores = normalise_with(batch, metadata.mean, metadata.std, metadata.input_scale)
        return [float(v) for v in scores.flatten(1).mean(dim=1).tolist()]

    def reference_brightness(self) -> float | None:
        """The training images' mean pixel value (0-255), from the normaliser's channel means;
        None for a tabular model."""
        metadata = self.metadata
        if metadata.feature_names or not metadata.mean:
            return None
        return sum(metadata.mean) / len(metadata.mean) * metadata.input_scale

    def answer(self, batch: torch.Tensor) -> dict[str, Any]:
        """A decoded batch -> the /predict answer: the class and probabilities of each image."""
        return self.answer_rows(self.classify(batch))

    def answer_rows(self, rows: list[list[float]]) -> dict[str, Any]:
        """Class probabilities (one row per image) -> the /predict answer."""
        names = self.metadata.class_names
        predictions = []
        for row in rows:
            best = max(range(len(row)), key=row.__getitem__)
            predictions.append(
                {"class": names[best], "index": best, "probabilities": [round(p, 6) for p in row]}
            )
        return {
            "model_version": self.settings.model_version,
            "release": self.settings.release_name,
            "classes": list(names),
            "predictions": predictions,
        }

    def version(self) -> dict[str, Any]:
        release = self.settings.release
        metrics = release.metrics if release else {}
        return {
            "model_version": self.settings.model_version,
            "release": self.settings.release_name,
            "model_name": release.model_name if release else None,
            "run_id": release.run_id if release else None,
            "git_commit": (release.git_commit if release else None) or self.metadata.git_commit,
            "created_at": release.created_at if release else self.metadata.created_at,
            "architecture": self.metadata.architecture,
            "input_size": list(self.metadata.input_size),
            "classes": list(self.metadata.class_names),
            "metrics": {k: metrics[k] for k in SUMMARY_METRICS if k in metrics},
            "device": self.device,
            "cxml_version": __version__,
            **self.feature_description(),
        }

    def feature_description(self) -> dict[str, Any]:
        """A tabular model's inputs for /version: names in order, and each feature's training
        min, mean and max (hints for a form); {} for an image model."""
        metadata = self.metadata
        if not metadata.feature_names:
            return {}
        from cxml.ml.tabular import feature_means

        means = feature_means(metadata.mean, metadata.input_scale)
        return {
            "input": "features",
            "feature_names": list(metadata.feature_names),
            "features": [
                {"name": name, "min": low, "mean": mean, "max": high}
                for name, low, mean, high in zip(
                    metadata.feature_names,
                    metadata.feature_min,
                    means,
                    metadata.feature_max,
                    strict=False,
                )
            ],
        }


def fuse_for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """Fold batch norms into the convolutions before them (same outputs, fewer ops per request)."""
    import torch
    from torch.fx.experimental.optimization import fuse

    try:
        with torch.inference_mode():
            fused: torch.nn.Module = fuse(model)
    except Exception:  # a model torch.fx cannot trace is served as it is
        return model
    return fused


def resolve_device(requested: str) -> str:
    import torch

    if requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"--device {requested}: CUDA is not available here; use --device cpu or auto"
            )
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_pixel_model(settings: ServeSettings, device: str) -> tuple[torch.nn.Module, ModelMetadata]:
    """The model file as the MLflow model is: raw pixels in, logits out (nets.PixelClassifier)."""
    from cxml.ml import models
    from cxml.ml.nets import PixelClassifier

    try:
        model, metadata = models.load_model_file(settings.model_path, device)
    except RuntimeError as exc:  # weights that do not fit the architecture in the metadata
        first = str(exc).strip().splitlines()[0]
        raise RecordError(
            f"{settings.model_path}: the weights do not fit the model ({first}); retrain it"
        ) from None
    pixel_model = PixelClassifier(
        fuse_for_inference(model), metadata.mean, metadata.std, metadata.input_scale
    )
    return pixel_model.to(device).eval(), metadata

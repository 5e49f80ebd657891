"""MLflow runs: the training run (params, epochs, the model and its registered version)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxml.core.errors import TrackingError
from cxml.core.redact import redact_uri
from cxml.tracking.client import client, quiet_mlflow, resolve_tracking_uri
from cxml.tracking.registry import CANDIDATE, set_model_alias

if TYPE_CHECKING:
    import torch

    from cxml.core.config import Params
    from cxml.ml.data import Dataset
    from cxml.ml.models import ModelMetadata


class RunLogger:
    """Logs one training run to MLflow. A tracking failure stops training (TrackingError) while
    `tracking.required` holds; with `tracking.required: false` it warns and training carries on."""

    def __init__(self, params: Params, *, enabled: bool) -> None:
        self.params = params
        self.enabled = enabled
        self.run_id: str | None = None
        self.experiment_id: str | None = None

    def _warn_and_disable(self, what: str, exc: BaseException) -> None:
        from cxml.core import console

        detail = redact_uri(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        if self.run_id is not None:
            with contextlib.suppress(Exception):
                import mlflow

                mlflow.end_run(status="FAILED")
        if self.params.tracking.required:
            raise TrackingError(
                f"MLflow: {what} failed ({detail}); fix the tracking server or "
                "MLFLOW_TRACKING_URI, or set tracking.required: false in params.yaml to train "
                "without tracking"
            ) from None
        console.warn(f"MLflow: {what} failed ({detail}); training goes on without tracking")
        self.enabled = False
        self.run_id = None

    def start(self, resume_run_id: str | None = None) -> None:
        if not self.enabled:
            return
        cfg = self.params.tracking
        try:
            quiet_mlflow()
            import mlflow

            mlflow.set_tracking_uri(resolve_tracking_uri(cfg.uri))
            mlflow.set_experiment(cfg.experiment)
            if resume_run_id:
                run = mlflow.start_run(run_id=resume_run_id)
            else:
                run = mlflow.start_run()
                mlflow.log_params({k: _param_value(v) for k, v in self.params.flat().items()})
            self.run_id = run.info.run_id
            self.experiment_id = run.info.experiment_id
        except Exception as exc:
            self._warn_and_disable("starting the run", exc)

    def log_epoch(self, stats: dict[str, float]) -> None:
        if not self.enabled:
            return
        try:
            import mlflow

            step = int(stats["epoch"])
            mlflow.log_metrics({k: float(v) for k, v in stats.items() if k != "epoch"}, step=step)
        except Exception as exc:
            self._warn_and_disable("logging epoch metrics", exc)

    def finish(self, model: torch.nn.Module, metadata: ModelMetadata, data: Dataset) -> str | None:
        """Log the model, register a version with alias `candidate`; returns the version."""
        if not self.enabled:
            return None
        cfg = self.params.tracking
        try:
            import mlflow

            version = log_pixel_model(
                model, metadata, data, cfg.model_name if cfg.register else None
            )
            mlflow.set_tags(
                {
                    "cxml.data_hash": metadata.data_hash or "",
                    "cxml.params_hash": metadata.params_hash or "",
                }
            )
            if version is not None:
                set_model_alias(cfg.uri, cfg.model_name, version, CANDIDATE)
            mlflow.end_run()
            return version
        except Exception as exc:
            self._warn_and_disable("logging the model", exc)
            return None


def _param_value(value: Any) -> Any:
    return ",".join(str(v) for v in value) if isinstance(value, list) else value


def log_pixel_model(
    model: torch.nn.Module, metadata: ModelMetadata, data: Dataset, registered_name: str | None
) -> str | None:
    """Log the model as an MLflow pytorch model taking raw 0..255 pixels (any batch size)."""
    import copy

    import mlflow.pytorch

    import cxml
    from cxml.ml.models import unwrap
    from cxml.ml.nets import PixelClassifier

    pixel_model = PixelClassifier(
        copy.deepcopy(unwrap(model)).cpu().float().eval(), metadata.mean, metadata.std
    )
    example = data.test.images[:2].float().numpy()
    info = mlflow.pytorch.log_model(
        pixel_model,
        name="model",
        input_example=example,
        serialization_format="pickle",
        code_paths=[str(Path(cxml.__file__).parent)],
        pip_requirements=["torch", "torchvision", "numpy"],
        registered_model_name=registered_name,
        metadata={"cxml": metadata.to_dict()},
    )
    version = getattr(info, "registered_model_version", None)
    return str(version) if version is not None else None


def log_eval_metrics(tracking_uri: str | None, run_id: str, metrics: Mapping[str, float]) -> None:
    """Add `eval.<name>` metrics to a finished run, so its registered version carries them."""
    mlflow_client = client(tracking_uri)
    for name, value in metrics.items():
        mlflow_client.log_metric(run_id, f"eval.{name}", value)

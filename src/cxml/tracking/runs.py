"""MLflow at the edges: the tracking URI, the run, the registry and its aliases."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxml.core import env

if TYPE_CHECKING:
    import torch
    from mlflow.tracking import MlflowClient

    from cxml.core.config import Params, TrackingConfig
    from cxml.ml.data import Dataset
    from cxml.ml.models import ModelMetadata

CANDIDATE = "candidate"
CHAMPION = "champion"


def resolve_tracking_uri(configured: str | None = None) -> str:
    """params.yaml `tracking.uri`, else `MLFLOW_TRACKING_URI`, else a SQLite file in the cwd."""
    uri = configured or env.get(env.MLFLOW_TRACKING_URI)
    if uri:
        return uri
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


_USERINFO = re.compile(r"//[^/@\s]*@")
_SECRET_QUERY_VALUE = re.compile(
    r"([?&][^=&#\s]*(?:password|passwd|secret|token|key|signature|sig)[^=&#\s]*=)[^&#\s]*",
    re.IGNORECASE,
)


def redact_uri(text: str) -> str:
    """`text` (a URI, or a message quoting one) without credentials: `user:pass@` dropped,
    secret-looking query values masked. For run.json, release.json (world-readable on the
    serving host) and error messages."""
    return _SECRET_QUERY_VALUE.sub(r"\1***", _USERINFO.sub("//", text))


def quiet_mlflow() -> None:
    """Keep MLflow's start-up chatter out of CI logs (cxml prints what matters itself)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import logging
    import warnings

    import mlflow  # noqa: F401  (configures its loggers on import; adjust them afterwards)

    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # cxml logs pickled models on purpose: pt2 export fixes the batch size of the served model.
    warnings.filterwarnings("ignore", message=".*Pickle or CloudPickle.*")


def client(tracking_uri: str | None) -> MlflowClient:
    quiet_mlflow()
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def set_model_alias(tracking_uri: str | None, model_name: str, version: str, alias: str) -> None:
    """Point registry alias `alias` (candidate, champion) at `model_name` version `version`."""
    client(tracking_uri).set_registered_model_alias(model_name, alias, str(version))


def alias_version(tracking_uri: str | None, model_name: str, alias: str) -> Any | None:
    """The ModelVersion behind an alias, or None when the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client(tracking_uri).get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None


def champion_metrics(cfg: TrackingConfig) -> dict[str, Any] | None:
    """The eval metrics logged on the run of the `champion` version, if there is one."""
    if not cfg.enabled:
        return None
    try:
        return _champion_metrics(cfg)
    except Exception as exc:
        from cxml.core import console

        console.warn(
            f"MLflow: reading the champion failed ({redact_uri(str(exc).splitlines()[0])})"
        )
        return None


def _champion_metrics(cfg: TrackingConfig) -> dict[str, Any] | None:
    version = alias_version(cfg.uri, cfg.model_name, CHAMPION)
    if version is None or not version.run_id:
        return None
    run = client(cfg.uri).get_run(version.run_id)
    prefix = "eval."
    metrics = {k[len(prefix) :]: v for k, v in run.data.metrics.items() if k.startswith(prefix)}
    return metrics or None


class RunLogger:
    """Logs one training run to MLflow; a tracking failure warns and training carries on."""

    def __init__(self, params: Params, *, enabled: bool) -> None:
        self.params = params
        self.enabled = enabled
        self.run_id: str | None = None

    def _warn_and_disable(self, what: str, exc: BaseException) -> None:
        from cxml.core import console

        detail = redact_uri(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
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
            with contextlib.suppress(Exception):
                import mlflow

                mlflow.end_run(status="FAILED")
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

"""The MLflow model registry: aliases (`candidate`, `champion`) and the champion's metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cxml.core.redact import redact_uri
from cxml.tracking.client import client

if TYPE_CHECKING:
    from cxml.core.config import TrackingConfig

CANDIDATE = "candidate"
"""The alias train moves to every version it registers."""
CHAMPION = "champion"
"""The alias redeploy moves to the version it put in production; a baseline for the gate."""


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

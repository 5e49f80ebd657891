"""The MLflow model registry: aliases (`candidate`, one per environment, `champion`) and the
champion's metrics."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxml.core import env
from cxml.core.console import info, warn
from cxml.core.errors import CxmlError, TrackingError
from cxml.core.redact import redact_uri
from cxml.tracking.client import client

if TYPE_CHECKING:
    from cxml.core.config import TrackingConfig

CANDIDATE = "candidate"
"""The alias train moves to every version it registers."""
CHAMPION = "champion"
"""The alias redeploy moves to the version it put in production; a baseline for the gate."""
PRODUCTION = "production"
"""The environment whose deploys also move `champion`."""


def deploy_aliases(environment: str | None, alias: str | None = None) -> tuple[str, ...]:
    """The aliases a deploy moves: the environment's own (`staging`, `production`), `champion`
    for production or a deploy without an environment, and `alias` when one is asked for."""
    aliases = [environment] if environment else []
    if environment is None or environment == PRODUCTION:
        aliases.append(CHAMPION)
    if alias and alias not in aliases:
        aliases.append(alias)
    return tuple(aliases)


def move_aliases(
    tracking_uri: str | None, model_name: str, version: str, aliases: tuple[str, ...]
) -> None:
    """Point each alias at `model_name` version `version` (the first failure raises)."""
    for alias in aliases:
        set_model_alias(tracking_uri, model_name, version, alias)


def move_release_aliases(
    record: Mapping[str, Any], aliases: tuple[str, ...], *, required: bool = True
) -> bool:
    """After a deploy: point `aliases` at the version a release record (release.json) names.
    A release without a registered version is only noted; a registry that fails is an error
    when tracking is required (params.yaml `tracking.required`), else a warning: the release is
    live either way. True when the aliases moved."""
    alias = ", ".join(aliases)
    name, version = record.get("model_name"), record.get("model_version")
    if not name or not version or version == "local":
        info(f"registry alias {alias} not moved: the release names no registered model version")
        return False
    uri = env.get(env.MLFLOW_TRACKING_URI) or record.get("tracking_uri")
    try:
        move_aliases(uri, str(name), str(version), aliases)
    except Exception as exc:  # mlflow raises many types
        message = (
            f"release {record.get('release')} is live, but moving registry alias {alias} to "
            f"{name} version {version} failed ({redact_uri(str(exc).splitlines()[0])}); set the "
            "alias by hand"
        )
        if required:
            raise TrackingError(message) from None
        warn(message + " (tracking.required is false: carrying on)")
        return False
    info(f"registry alias {alias} -> {name} version {version}")
    return True


def tracking_required(params_file: str | Path | None) -> bool:
    """params.yaml's tracking.required (true when there is no readable params.yaml): whether a
    registry that fails after a deploy or a promotion is an error or a warning."""
    from cxml.core.config import load_params

    try:
        return load_params(params_file).tracking.required
    except CxmlError:
        return True


def aliases_of(tracking_uri: str | None, model_name: str, version: str) -> tuple[str, ...]:
    """The aliases that point at `model_name` version `version` now."""
    found = client(tracking_uri).get_model_version(model_name, str(version))
    return tuple(sorted(found.aliases or ()))


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

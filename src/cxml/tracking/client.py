"""The MLflow connection: which tracking URI, a quiet mlflow, and a client for it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from cxml.core import env

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def resolve_tracking_uri(configured: str | None = None) -> str:
    """params.yaml `tracking.uri`, else `MLFLOW_TRACKING_URI`, else a SQLite file in the cwd."""
    uri = configured or env.get(env.MLFLOW_TRACKING_URI)
    if uri:
        return uri
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


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

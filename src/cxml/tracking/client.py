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


PROBE_TIMEOUT_S = 4.0
"""A tracking server answers /health in milliseconds; 4 s covers a loaded runner, not a stall."""
PROBE_ATTEMPTS = 2
"""Only a timeout is tried again (a busy server); a refused connection is an answer."""


def unreachable_reason(tracking_uri: str, *, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why an HTTP tracking server cannot be reached (None when it answers, or is not HTTP).

    A GET of `/health` without MLflow's retries: any HTTP answer (even 401 or 404) means a
    server is there; a refused connection, an unknown host or repeated timeouts mean none is."""
    for _ in range(PROBE_ATTEMPTS - 1):
        reason = _probe_once(tracking_uri, timeout)
        if reason is None or not reason.startswith("no answer"):
            return reason
    return _probe_once(tracking_uri, timeout)


def _probe_once(tracking_uri: str, timeout: float) -> str | None:
    import base64
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    try:
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:
        return "its port is not a number"
    url = urllib.parse.urlunsplit(
        (parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", "")
    )
    request = urllib.request.Request(url, method="GET")
    if parts.username is not None:  # userinfo travels as basic auth, never in the request line
        token = (
            f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        )
        request.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as exc:
        return _connection_problem(exc.reason)
    except (TimeoutError, OSError) as exc:
        return _connection_problem(exc)


def _connection_problem(reason: object) -> str:
    """The kind of failure, never its text (which may quote the URL and its credentials)."""
    if isinstance(reason, TimeoutError):
        return "no answer in time"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, OSError) and reason.__class__.__name__ == "gaierror":
        return "unknown host"
    return type(reason).__name__ if isinstance(reason, BaseException) else "not reachable"

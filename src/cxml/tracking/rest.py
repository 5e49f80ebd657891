"""MLflow's REST API for a tracking server: the evaluation metrics in one `runs/log-batch` call.

Milliseconds and the standard library, where the `mlflow` client costs a second of import. Auth
follows MLflow's own client (`mlflow.utils.credentials` / `rest_utils`):

- `MLFLOW_TRACKING_USERNAME` + `MLFLOW_TRACKING_PASSWORD` (each else from the `[mlflow]`
  section of `~/.mlflow/credentials`) -> `Authorization: Basic ...` (it wins when both it and a
  token are set, as in MLflow's Python client);
- `MLFLOW_TRACKING_TOKEN` -> `Authorization: Bearer ...`;
- `user:password@` in the URI -> basic auth (never sent in the request line, never printed);
- `MLFLOW_TRACKING_INSECURE_TLS=true` skips TLS verification, `MLFLOW_TRACKING_SERVER_CERT_PATH`
  is the CA bundle, `MLFLOW_TRACKING_CLIENT_CERT_PATH` a client certificate (.pem); setting
  both of the first two is an error, as in MLflow.

`MLFLOW_TRACKING_AUTH` (an auth plugin) and `MLFLOW_TRACKING_AWS_SIGV4` need the mlflow client
itself: `needs_mlflow_client` sends those setups down the mlflow path.

Like MLflow's client, 408, 429, 500, 502, 503 and 504 answers and lost connections are tried
again with an exponential back-off (bounded here: a PR waits on this call). NaN and +-inf
travel as the proto3 JSON strings `"NaN"`, `"Infinity"`, `"-Infinity"`, exactly as MLflow's
client sends them (MLflow 3.17's server also parses bare `NaN`); the server stores NaN as NaN
and infinity as +-1.7976931348623157e308.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cxml.core import env
from cxml.core.errors import ConfigError, TrackingError
from cxml.core.redact import redact_text

if TYPE_CHECKING:
    import ssl

LOG_BATCH_PATH = "/api/2.0/mlflow/runs/log-batch"
REQUEST_TIMEOUT_S = 10.0
"""One request; a tracking server answers log-batch in milliseconds."""
ATTEMPTS = 4
"""The first try and three more, 0.5 + 1 + 2 s apart (MLflow's client: 7 retries over minutes)."""
BACKOFF_S = 0.5
RETRY_AFTER_CAP_S = 5.0
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""MLflow's `_TRANSIENT_FAILURE_RESPONSE_CODES`."""
MAX_BATCH_METRICS = 1000
"""MLflow's limit for one log-batch request; more are sent in further requests."""


def is_server_uri(tracking_uri: str) -> bool:
    """Whether MLflow would talk REST to this URI (an http or https tracking server)."""
    return tracking_uri.split(":", 1)[0].lower() in ("http", "https")


def needs_mlflow_client() -> bool:
    """An auth plugin or AWS request signing is configured: only mlflow's client can do it."""
    sigv4 = (env.get(env.MLFLOW_TRACKING_AWS_SIGV4) or "").lower() in ("true", "1")
    return sigv4 or env.get(env.MLFLOW_TRACKING_AUTH) is not None


@dataclass(frozen=True)
class TrackingServer:
    """Where and how to reach one tracking server: its URL without credentials, the
    Authorization header value (None: anonymous) and the TLS settings."""

    base_url: str
    authorization: str | None = None
    verify_tls: bool = True
    ca_file: str | None = None
    client_cert_file: str | None = None

    def __repr__(self) -> str:  # the header holds a secret
        return f"TrackingServer({self.base_url!r})"


def tracking_server(tracking_uri: str) -> TrackingServer:
    """The server of an http(s) URI with MLflow's auth and TLS settings from the environment."""
    import urllib.parse

    parts = urllib.parse.urlsplit(tracking_uri)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"MLflow tracking URI {redact_text(tracking_uri)!r} is not an http(s) server URL; "
            "fix MLFLOW_TRACKING_URI or tracking.uri in params.yaml"
        )
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    try:
        netloc = host if parts.port is None else f"{host}:{parts.port}"
    except ValueError:
        raise ConfigError(
            "MLflow tracking URI: its port is not a number; fix MLFLOW_TRACKING_URI"
        ) from None
    base_url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    insecure = (env.get(env.MLFLOW_TRACKING_INSECURE_TLS) or "").lower() in ("true", "1")
    ca_file = env.get(env.MLFLOW_TRACKING_SERVER_CERT_PATH)
    if insecure and ca_file:
        raise ConfigError(
            "MLFLOW_TRACKING_INSECURE_TLS and MLFLOW_TRACKING_SERVER_CERT_PATH are both set; "
            "unset one of them (as MLflow requires)"
        )
    return TrackingServer(
        base_url=base_url,
        authorization=authorization_header(parts.username, parts.password),
        verify_tls=not insecure,
        ca_file=ca_file,
        client_cert_file=env.get(env.MLFLOW_TRACKING_CLIENT_CERT_PATH),
    )


def authorization_header(uri_username: str | None, uri_password: str | None) -> str | None:
    """MLflow's order: basic auth from the environment, then a bearer token, then the URI's
    own `user:password@` (which MLflow's requests session would send as basic auth)."""
    import base64
    import urllib.parse

    file_username, file_password = credentials_file()
    username = env.get(env.MLFLOW_TRACKING_USERNAME) or file_username
    password = env.get(env.MLFLOW_TRACKING_PASSWORD) or file_password
    token = env.get(env.MLFLOW_TRACKING_TOKEN)
    if username and password:
        pair = f"{username}:{password}"
    elif token:
        return f"Bearer {token}"
    elif uri_username is not None:
        pair = f"{urllib.parse.unquote(uri_username)}:{urllib.parse.unquote(uri_password or '')}"
    else:
        return None
    return "Basic " + base64.standard_b64encode(pair.encode()).decode()


def credentials_file() -> tuple[str | None, str | None]:
    """`mlflow_tracking_username` / `_password` of `~/.mlflow/credentials`'s `[mlflow]` section,
    where MLflow's client looks for them."""
    import configparser
    from pathlib import Path

    path = Path("~/.mlflow/credentials").expanduser()
    if not path.is_file():
        return None, None
    config = configparser.ConfigParser(interpolation=None)
    try:
        config.read(path, encoding="utf-8")
    except (OSError, configparser.Error, UnicodeDecodeError):
        return None, None
    if "mlflow" not in config:
        return None, None
    section = config["mlflow"]
    return section.get("mlflow_tracking_username"), section.get("mlflow_tracking_password")


def metric_value(value: float) -> float | str:
    """A metric's JSON value as MLflow's client writes it (proto3 JSON for NaN and infinity)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def log_batch_bodies(
    run_id: str, metrics: Mapping[str, float], timestamp_ms: int, *, step: int = 0
) -> list[dict[str, Any]]:
    """The request bodies (usually one) that log `metrics` under their own names."""
    entries = [
        {"key": key, "value": metric_value(float(value)), "timestamp": timestamp_ms, "step": step}
        for key, value in metrics.items()
    ]
    chunks = [entries[i : i + MAX_BATCH_METRICS] for i in range(0, len(entries), MAX_BATCH_METRICS)]
    return [{"run_id": run_id, "metrics": chunk} for chunk in chunks or [[]]]


def log_metrics(
    server: TrackingServer,
    run_id: str,
    metrics: Mapping[str, float],
    *,
    sleep: Callable[[float], None] | None = None,
) -> None:
    """Log `metrics` (step 0, now) to the run in one log-batch request (more only past MLflow's
    1,000-metric limit). Raises TrackingError with one redacted line."""
    import time

    timestamp_ms = int(time.time() * 1000)
    for body in log_batch_bodies(run_id, metrics, timestamp_ms):
        post_json(server, LOG_BATCH_PATH, body, sleep=sleep or time.sleep)


def post_json(
    server: TrackingServer,
    path: str,
    body: Mapping[str, Any],
    *,
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    """POST `body` to the server, tried again on MLflow's transient answers; the answer's JSON."""
    import json
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if server.authorization:
        headers["Authorization"] = server.authorization
    context = ssl_context(server)
    for attempt in range(1, ATTEMPTS + 1):
        request = urllib.request.Request(
            server.base_url + path, data=data, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S, context=context) as r:
                answer = json.loads(r.read() or b"{}")
                return answer if isinstance(answer, dict) else {}
        except urllib.error.HTTPError as exc:
            if exc.code not in RETRY_STATUSES or attempt == ATTEMPTS:
                answer = read_error_body(exc)
                line = http_error_line(exc.code, answer)
                if answer.get("error_code") == "RESOURCE_DOES_NOT_EXIST":
                    raise TrainingRunNotFound(line) from None
                raise TrackingError(line) from None
            sleep(retry_delay(attempt, exc.headers.get("Retry-After")))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            if attempt == ATTEMPTS or isinstance(exc, ValueError):
                raise TrackingError(connection_error_line(server, exc)) from None
            sleep(retry_delay(attempt, None))
    raise AssertionError("unreachable")  # pragma: no cover


def ssl_context(server: TrackingServer) -> ssl.SSLContext | None:
    if not server.base_url.lower().startswith("https:"):
        return None
    import ssl

    try:
        context = ssl.create_default_context(cafile=server.ca_file)
        if not server.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if server.client_cert_file:
            context.load_cert_chain(server.client_cert_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"MLflow TLS settings: cannot load a certificate ({type(exc).__name__}); fix "
            "MLFLOW_TRACKING_SERVER_CERT_PATH or MLFLOW_TRACKING_CLIENT_CERT_PATH"
        ) from None
    return context


def retry_delay(attempt: int, retry_after: str | None) -> float:
    """Exponential back-off, or the server's Retry-After (seconds) when it names one, capped."""
    if retry_after and retry_after.strip().isdigit():
        return min(float(retry_after.strip()), RETRY_AFTER_CAP_S)
    return float(BACKOFF_S * 2 ** (attempt - 1))


def read_error_body(exc: Any) -> dict[str, Any]:
    import json

    try:
        answer = json.loads(exc.read(64 * 1024) or b"{}")
    except (OSError, ValueError):
        return {}
    return answer if isinstance(answer, dict) else {}


class TrainingRunNotFound(TrackingError):
    """The store answers but has no run with run.json's id: the model was trained against
    another store (e.g. DVC reused a model trained elsewhere). Evaluate warns, whatever
    `tracking.required` says: tracking works, there is just no run here to add `eval.*` to."""


def http_error_line(status: int, answer: Mapping[str, Any]) -> str:
    """`HTTP 404 RESOURCE_DOES_NOT_EXIST: Run 'abc' not found` and what to do, on one line."""
    error_code = str(answer.get("error_code") or "no error_code")
    message = " ".join(str(answer.get("message") or "").split())[:300]
    hint = {
        401: "check MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD",
        403: "the credentials may not write to this experiment; check their permissions",
        404: "check the run id in run.json and MLFLOW_TRACKING_URI (the same server as training)",
    }.get(status, "check the tracking server")
    detail = f"HTTP {status} {error_code}" + (f": {message}" if message else "")
    return redact_text(f"the tracking server answered {detail}; {hint}")


def connection_error_line(server: TrackingServer, exc: BaseException) -> str:
    """The kind of failure and the server's redacted URL, never the exception's own text (it may
    quote a URL with credentials)."""
    reason = getattr(exc, "reason", exc)
    kind = {
        "ConnectionRefusedError": "connection refused",
        "gaierror": "unknown host",
        "TimeoutError": f"no answer within {REQUEST_TIMEOUT_S:.0f} s",
        "timeout": f"no answer within {REQUEST_TIMEOUT_S:.0f} s",
        "SSLCertVerificationError": "its TLS certificate is not trusted (set "
        "MLFLOW_TRACKING_SERVER_CERT_PATH to its CA bundle)",
        "JSONDecodeError": "its answer is not JSON (is this an MLflow server?)",
    }.get(type(reason).__name__, type(reason).__name__)
    return redact_text(f"the tracking server at {server.base_url} failed: {kind}")


class RestEvalMetrics:
    """`eval.*` metrics for an http(s) tracking server: `send` makes the one REST call (a few
    ms: no child process, no mlflow import) and `wait` returns what went wrong (None when
    logged) — the same two calls as `runs.EarlyEvalMetrics`, the child-process path for SQLite
    and file stores. A bad URI or TLS setting surfaces in `wait`, per `tracking.required`."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.run_id = run_id
        self._error: BaseException | None = None
        self._server: TrackingServer | None = None
        try:
            self._server = tracking_server(tracking_uri)
        except ConfigError as exc:
            self._error = exc

    def send(self, metrics: Mapping[str, float]) -> None:
        if self._server is None:
            return
        try:
            log_metrics(self._server, self.run_id, {f"eval.{k}": v for k, v in metrics.items()})
        except (TrackingError, ConfigError) as exc:
            self._error = exc

    def wait(self, timeout: float) -> BaseException | None:
        del timeout  # `send` is bounded by itself (attempts x REQUEST_TIMEOUT_S)
        return self._error

    @property
    def in_background(self) -> bool:
        return False  # milliseconds: always logged before the step exits

    @property
    def runs_beside(self) -> bool:
        return False

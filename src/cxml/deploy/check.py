"""Staging checks against an environment's public URL: online = offline, and a bounded load test.

Both talk HTTP with the standard library only (no torch: the held-out examples, images or a
tabular model's feature rows, and their offline classes are handed in by the `cxml check`
step), and both return plain results that pure functions judge, so the thresholds are tested
without a service::

    check_online(url, examples, model_sha256) -> OnlineResult   online_failures(result)
    run_load_test(url, body, settings)      -> LoadResult       load_failures(result, settings)
"""

from __future__ import annotations

import base64
import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from cxml.core.errors import DeployError
from cxml.deploy.config import CheckSettings

REQUEST_TIMEOUT_S = 30.0
ONLINE_BATCH = 16
"""Examples per /predict request of the online = offline comparison (the service's limit is 64)."""
MAX_LOAD_THREADS = 64
MAX_ANSWER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class HeldOutExample:
    """One held-out test example as the offline evaluation saw it, and the class it gave: an
    image (sent as a PNG) or a tabular model's feature row (sent as numbers)."""

    name: str
    """How the report names it: the file, `test[i]` or `test row i` (its place in the split)."""
    offline_class: int
    png: bytes = b""
    row: tuple[float, ...] | None = None
    """A tabular model's features, in the model's order; None for an image."""

    @property
    def kind(self) -> str:
        return "row" if self.row is not None else "image"


@dataclass(frozen=True)
class Mismatch:
    image: str
    """The example's name (kept as `image` for rows too: checks/<env>.json's key)."""
    offline_class: str
    online_class: str


@dataclass(frozen=True)
class OnlineResult:
    compared: int
    mismatches: int
    first_mismatch: Mismatch | None
    served_release: str | None
    served_model_sha256: str | None
    expected_model_sha256: str
    examples: str = "images"
    """What was compared: `images`, or `rows` for a tabular model."""


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    duration_s: float
    rps: float
    """Requests answered with 200 per second of the test."""
    p50_ms: float
    p99_ms: float
    first_error: str | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


# --- HTTP ---------------------------------------------------------------------------------------


def endpoint(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


def predict_body(examples: Sequence[HeldOutExample]) -> bytes:
    """A /predict JSON body: `{"images": [base64 PNG, ...]}`, or a tabular model's
    `{"rows": [[x1, ..., xF], ...]}`, in order."""
    if examples and examples[0].row is not None:
        return json.dumps({"rows": [list(example.row or ()) for example in examples]}).encode()
    images = [base64.b64encode(example.png).decode("ascii") for example in examples]
    return json.dumps({"images": images}).encode("utf-8")


def request_json(url: str, body: bytes | None = None) -> dict[str, Any]:
    """GET (or POST a JSON body to) `url`; any failure is a DeployError naming the URL."""
    headers = {"content-type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            answer = json.loads(response.read(MAX_ANSWER_BYTES))
    except urllib.error.HTTPError as exc:
        raise DeployError(
            f"{url} answered HTTP {exc.code}; check that the environment is deployed and healthy"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeployError(
            f"{url} is unreachable ({reason}); check the environment's proxy.public_url and "
            "that its hosts are serving (cxml redeploy --env NAME --status)"
        ) from None
    except ValueError:
        raise DeployError(f"{url} did not answer JSON; is it a cxml service?") from None
    if not isinstance(answer, dict):
        raise DeployError(f"{url} did not answer a JSON object; is it a cxml service?")
    return answer


# --- online = offline ---------------------------------------------------------------------------


def served_classes(
    base_url: str, examples: Sequence[HeldOutExample], batch: int = ONLINE_BATCH
) -> list[int]:
    """The class index the service predicts for each example, in order."""
    url = endpoint(base_url, "/predict")
    classes: list[int] = []
    for start in range(0, len(examples), batch):
        chunk = examples[start : start + batch]
        answer = request_json(url, predict_body(chunk))
        predictions = answer.get("predictions")
        if not isinstance(predictions, list) or len(predictions) != len(chunk):
            raise DeployError(f"{url}: the answer does not hold one prediction per {chunk[0].kind}")
        classes += [int(p["index"]) for p in predictions if isinstance(p, dict)]
    return classes


def find_first_mismatch(
    examples: Sequence[HeldOutExample], online: Sequence[int], class_names: Sequence[str]
) -> tuple[int, Mismatch | None]:
    """How many examples differ, and the first of them."""

    def name(index: int) -> str:
        return class_names[index] if 0 <= index < len(class_names) else str(index)

    differing = [
        (example, served)
        for example, served in zip(examples, online, strict=True)
        if example.offline_class != served
    ]
    if not differing:
        return 0, None
    example, served = differing[0]
    return len(differing), Mismatch(example.name, name(example.offline_class), name(served))


def check_online(
    base_url: str,
    examples: Sequence[HeldOutExample],
    model_sha256: str,
    class_names: Sequence[str] = (),
) -> OnlineResult:
    """Send the held-out examples to /predict and compare with the offline classes."""
    version = request_json(endpoint(base_url, "/version"))
    online = served_classes(base_url, examples)
    mismatches, first = find_first_mismatch(examples, online, class_names)
    return OnlineResult(
        compared=len(examples),
        mismatches=mismatches,
        first_mismatch=first,
        served_release=_text_or_none(version.get("release")),
        served_model_sha256=_text_or_none(version.get("model_sha256")),
        expected_model_sha256=model_sha256,
        examples=f"{examples[0].kind}s" if examples else "images",
    )


def online_failures(result: OnlineResult) -> list[str]:
    """What the online = offline check found wrong, one sentence each."""
    failures = []
    if result.first_mismatch is not None:
        first = result.first_mismatch
        failures.append(
            f"online != offline: {result.mismatches} of {result.compared} held-out "
            f"{result.examples} get "
            f"another class; the first is {first.image} (offline class {first.offline_class}, "
            f"online class {first.online_class}): preprocessing skew between training and "
            "serving, fix the serving side before promoting"
        )
    if result.served_model_sha256 != result.expected_model_sha256:
        served = result.served_model_sha256 or "none (the service runs without a release)"
        failures.append(
            f"release {result.served_release} serves model sha256 {served}, not the evaluated "
            f"model {result.expected_model_sha256}; deploy this model (cxml redeploy --env NAME) "
            "or check with --model set to the deployed one"
        )
    return failures


# --- load test ----------------------------------------------------------------------------------


def run_load_test(base_url: str, body: bytes, settings: CheckSettings) -> LoadResult:
    """Open loop: one /predict every 1/rate s for `duration` s, however slow the answers are,
    so a slow service shows in the latencies instead of slowing the test down."""
    url = endpoint(base_url, "/predict")
    total = max(1, round(settings.rate * settings.duration))
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def one_request() -> None:
        started = time.perf_counter()
        problem = _post(url, body)
        elapsed_ms = (time.perf_counter() - started) * 1000
        with lock:
            latencies.append(elapsed_ms)
            if problem is not None:
                errors.append(problem)

    threads = min(MAX_LOAD_THREADS, max(4, math.ceil(settings.rate)))
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cxml-load") as pool:
        for number in range(total):
            delay = began + number / settings.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one_request)
    elapsed = max(time.perf_counter() - began, settings.duration)
    answered = len(latencies) - len(errors)
    return LoadResult(
        requests=len(latencies),
        errors=len(errors),
        duration_s=round(elapsed, 3),
        rps=round(answered / elapsed, 2),
        p50_ms=round(percentile(latencies, 50), 2),
        p99_ms=round(percentile(latencies, 99), 2),
        first_error=errors[0] if errors else None,
    )


def _post(url: str, body: bytes) -> str | None:
    """One /predict; None when answered 200, else what went wrong."""
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            response.read(MAX_ANSWER_BYTES)
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"no answer ({getattr(exc, 'reason', exc)})"
    return None


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def load_failures(result: LoadResult, settings: CheckSettings) -> list[str]:
    """The load test's thresholds (deploy.yaml `checks:`) that the measurement broke."""
    failures = []
    if result.error_rate > settings.max_error_rate:
        failures.append(
            f"load test: {result.errors} of {result.requests} requests failed (error rate "
            f"{result.error_rate:.2%}, limit {settings.max_error_rate:.2%}; first: "
            f"{result.first_error})"
        )
    if result.p99_ms > settings.max_p99_ms:
        failures.append(
            f"load test: p99 latency {result.p99_ms:g} ms is over max_p99_ms {settings.max_p99_ms:g}"
        )
    if settings.min_rps is not None and result.rps < settings.min_rps:
        failures.append(
            f"load test: {result.rps:g} answered requests/s is under min_rps {settings.min_rps:g}"
        )
    return failures


# --- the report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UrlResult:
    """Both checks against one public URL (an environment whose hosts have their own proxies
    has several)."""

    url: str
    online: OnlineResult
    load: LoadResult | None


def report_dict(
    env_name: str, results: Sequence[UrlResult], settings: CheckSettings, failures: Sequence[str]
) -> dict[str, Any]:
    """What checks/<env>.json records."""
    return {
        "environment": env_name,
        "passed": not failures,
        "failures": list(failures),
        "urls": [
            {
                "url": result.url,
                "online": asdict(result.online),
                "load": None
                if result.load is None
                else {**asdict(result.load), "error_rate": result.load.error_rate},
            }
            for result in results
        ],
        "thresholds": asdict(settings),
    }


def summary_markdown(report: dict[str, Any]) -> str:
    """The job summary's section: the verdict, the numbers per URL, each failure."""
    verdict = "passed" if report["passed"] else "FAILED"
    lines = [f"### cxml check `{report['environment']}`: {verdict}", ""]
    for result in report["urls"]:
        online, load = result["online"], result["load"]
        lines.append(f"- `{result['url']}`, release `{online['served_release']}`:")
        same = online["compared"] - online["mismatches"]
        skew = "" if online["mismatches"] == 0 else " (skew)"
        lines.append(
            f"  - online = offline: {same}/{online['compared']} held-out "
            f"{online.get('examples', 'images')} match{skew}"
        )
        if load:
            lines.append(
                f"  - load test: {load['requests']} requests in {load['duration_s']:g} s, "
                f"{load['rps']:g} req/s, p50 {load['p50_ms']:g} ms, p99 {load['p99_ms']:g} ms, "
                f"{load['errors']} errors"
            )
    lines += [f"- **{failure}**" for failure in report["failures"]]
    return "\n".join(lines) + "\n"


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None

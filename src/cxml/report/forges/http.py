"""JSON-over-HTTP for the GitHub and GitLab clients: bounded retries, Retry-After, no secret leaks."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cxml.core.errors import EXIT_INPUT, EXIT_RUNTIME, ReportError
from cxml.core.redact import redact_text, redact_uri
from cxml.report.forges.tokens import check_api_url_has_no_credentials

RETRYABLE_STATUSES = (429, 500, 502, 503, 504)
"""5xx and 429 are retried; a 403 is retried only when it is a rate limit (see `is_rate_limited`)."""


@dataclass(frozen=True)
class RetryPolicy:
    deadline_s: float = 120.0
    """Budget of a client made without a TimeBudget: all its requests and retries together."""
    max_attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    data: Any
    """Parsed JSON body, or None when the body is empty or not JSON."""


class TimeBudget:
    """Seconds for a whole report delivery: every request, retry and pause of it together.

    One budget is shared by every client of one delivery (images, then the comment), so a run
    that makes many requests still ends within `--timeout`. The clock starts at the first request.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends_at: float | None = None

    def remaining(self) -> float:
        now = time.monotonic()
        if self._ends_at is None:
            self._ends_at = now + self.seconds
        return self._ends_at - now


@dataclass(frozen=True)
class ApiUrlSetting:
    """Where a client's base URL comes from, for the message when it is not a usable URL."""

    name: str
    """The variable or option a person sets, e.g. `GITHUB_API_URL / --api-url`."""
    example: str


class HttpStatusError(ReportError):
    """The server answered with an error status that retrying cannot fix.

    A 4xx refuses what was asked (token, permissions, repository, number): the user's to fix,
    exit 2; a server error that retrying cannot fix is the forge's failure, exit 3.
    """

    def __init__(self, message: str, *, status: int, api_message: str) -> None:
        super().__init__(message, exit_code=EXIT_INPUT if status < 500 else EXIT_RUNTIME)
        self.status = status
        self.api_message = api_message


class AmbiguousRequestError(ReportError):
    """A non-idempotent request may or may not have been applied (connection lost, 5xx)."""


def retry_after_seconds(headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or HTTP date) or an exhausted rate limit."""
    value = headers.get("Retry-After") or headers.get("retry-after")
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None
        return max(0.0, when - now)
    if headers.get("X-RateLimit-Remaining") == "0" and (reset := headers.get("X-RateLimit-Reset")):
        try:
            return max(0.0, float(reset) - now)
        except ValueError:
            return None
    return None


def is_rate_limited(status: int, headers: Mapping[str, str], api_message: str) -> bool:
    if status == 429:
        return True
    if status != 403:
        return False
    return (
        "Retry-After" in headers
        or headers.get("X-RateLimit-Remaining") == "0"
        or "rate limit" in api_message.lower()
    )


def backoff_delay(attempt: int, policy: RetryPolicy) -> float:
    return float(min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1)))


def transport_errors() -> tuple[type[Exception], ...]:
    """Failures after which the request may or may not have reached the server and been applied.

    ChunkedEncodingError is an answer cut off mid-body: the server got the request, so a POST
    may have been applied exactly like when the connection drops.
    """
    import requests

    return (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ContentDecodingError,
    )


def bad_url_reason(error: Exception) -> str | None:
    """Why requests could not use the base URL, in words; None when `error` is not about the URL."""
    import requests

    if isinstance(error, requests.exceptions.MissingSchema):
        return "no https:// in front"
    if isinstance(error, requests.exceptions.InvalidSchema):
        return "only http:// and https:// work"
    if isinstance(error, requests.exceptions.InvalidURL):
        return "no valid host name"
    if isinstance(error, requests.exceptions.TooManyRedirects):
        return "it redirects in a loop"
    return None


def request_problem(error: Exception) -> str:
    """What went wrong preparing or sending a request, in words that quote nothing of it.

    requests' own messages quote the URL and header values (`Bearer <token>`), so they are
    never shown; the exception's type names the problem well enough.
    """
    import requests

    if isinstance(error, requests.exceptions.InvalidHeader):
        return "a request header is not valid (check the token for stray characters)"
    return f"the request could not be sent ({type(error).__name__})"


class JsonHttpClient:
    """One authenticated JSON API (GitHub REST, GitLab v4) with retries bounded in time.

    `secret` is scrubbed from every message this client produces, and URLs in them are redacted,
    so a token can never reach a log line, an annotation or a traceback text through it. A base
    URL with credentials in it is refused (ConfigError) before anything is sent.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        secret: str,
        service: str,
        url_setting: ApiUrlSetting,
        policy: RetryPolicy | None = None,
        budget: TimeBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import requests

        check_api_url_has_no_credentials(base_url, setting=url_setting.name)
        self.given_url = base_url
        self.base_url = base_url.rstrip("/")
        self.service = service
        self.url_setting = url_setting
        self.policy = policy or RetryPolicy()
        self.budget = budget or TimeBudget(self.policy.deadline_s)
        self._secret = secret
        self._sleep = sleep
        self._session = requests.Session()
        self._session.headers.update(headers)

    def close(self) -> None:
        self._session.close()

    def pause(self, attempt: int, *, before: str) -> None:
        """Back off before trying a non-idempotent step again (after a fresh look), within budget."""
        delay = backoff_delay(attempt, self.policy)
        if delay > self.budget.remaining():
            raise ReportError(self.describe_out_of_time(before))
        self._sleep(delay)

    def scrub(self, text: str) -> str:
        """`text` without the token and without credentials in any URL it quotes."""
        text = text.replace(self._secret, "***") if self._secret else text
        return redact_text(text)

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc.rpartition("@")[2]

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        idempotent: bool = True,
    ) -> HttpResponse:
        """Send one request; retry what is safe to retry until the deadline, else raise.

        A non-idempotent request (`idempotent=False`, a POST that creates something) is never
        repeated blindly after a lost connection or a 5xx: AmbiguousRequestError lets the caller
        look first whether it was applied. A rate-limit answer means nothing was done, so it is
        retried after the wait the server asks for.
        """
        import requests

        policy = self.policy
        url = f"{self.base_url}{path}"
        last_problem = "no attempt made"
        attempts = 0
        for attempt in range(1, policy.max_attempts + 1):
            remaining = self.budget.remaining()
            if remaining <= 0:
                break
            timeout = (
                min(policy.connect_timeout_s, remaining),
                min(policy.read_timeout_s, remaining),
            )
            attempts = attempt
            try:
                response = self._session.request(
                    method, url, params=params, json=json, timeout=timeout
                )
            except transport_errors() as exc:
                last_problem = f"{type(exc).__name__}"
                if not idempotent:
                    raise AmbiguousRequestError(
                        self.describe_unreachable(method, path, last_problem, attempts)
                    ) from None
                delay = backoff_delay(attempt, policy)
                asked_to_wait = False
            except requests.RequestException as exc:
                reason = bad_url_reason(exc)
                if reason is None:
                    raise ReportError(
                        self.scrub(f"{self.service} API: {method} {path}: {request_problem(exc)}"),
                        exit_code=EXIT_INPUT,
                    ) from None
                raise ReportError(self.describe_bad_url(reason), exit_code=EXIT_INPUT) from None
            else:
                result = self._parse(response)
                if result.status < 400:
                    return result
                api_message = self.api_message(result)
                wait = retry_after_seconds(result.headers, now=time.time())
                asked_to_wait = wait is not None
                if is_rate_limited(result.status, result.headers, api_message):
                    last_problem = f"HTTP {result.status} rate limited"
                    delay = wait if wait is not None else backoff_delay(attempt, policy)
                elif result.status in RETRYABLE_STATUSES:
                    last_problem = f"HTTP {result.status}"
                    if not idempotent:
                        raise AmbiguousRequestError(
                            self.describe_unreachable(method, path, last_problem, attempts)
                        )
                    delay = wait if wait is not None else backoff_delay(attempt, policy)
                else:
                    raise HttpStatusError(
                        self.scrub(
                            f"{self.service} API: {method} {path} answered {result.status}: {api_message}"
                        ),
                        status=result.status,
                        api_message=self.scrub(api_message),
                    )
            if attempt == policy.max_attempts:
                break
            if delay > self.budget.remaining():
                if not asked_to_wait:
                    break
                raise ReportError(
                    self.scrub(
                        f"{self.service} API: {method} {path}: {last_problem}; the next retry would "
                        f"come after {delay:.0f} s, past the {self.budget.seconds:g} s budget; "
                        "re-run the job later"
                    )
                )
            self._sleep(delay)
        if attempts == 0:
            raise ReportError(self.describe_out_of_time(f"{method} {path}"))
        raise ReportError(self.describe_unreachable(method, path, last_problem, attempts))

    def describe_unreachable(self, method: str, path: str, problem: str, attempts: int) -> str:
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        return self.scrub(
            f"{self.service} API at {self.host} did not complete {method} {path} ({problem}) after "
            f"{tries}, within the {self.budget.seconds:g} s budget for posting the report "
            "(--timeout); check the API URL and the network, then re-run the job"
        )

    def describe_out_of_time(self, step: str) -> str:
        return self.scrub(
            f"{self.service} API at {self.host}: no time left for {step}: earlier requests and "
            f"retries used up the {self.budget.seconds:g} s budget for posting the report "
            "(--timeout); check the API URL and the network, then re-run the job or raise --timeout"
        )

    def describe_bad_url(self, reason: str) -> str:
        setting = self.url_setting
        return self.scrub(
            f"{setting.name} is {redact_uri(self.given_url)!r}, which is not a usable API URL "
            f"({reason}): it must be a full URL like {setting.example}"
        )

    def _parse(self, response: Any) -> HttpResponse:
        data: Any = None
        if response.content:
            try:
                data = response.json()
            except ValueError:
                data = None
        return HttpResponse(status=response.status_code, headers=response.headers, data=data)

    def api_message(self, response: HttpResponse) -> str:
        data = response.data
        message = ""
        if isinstance(data, dict):
            message = str(data.get("message") or data.get("error") or "")
            errors = data.get("errors")
            if isinstance(errors, list) and errors:
                message += f" ({'; '.join(str(e) for e in errors[:3])})"
        return self.scrub(" ".join(message.split())[:300]) or "no message"

"""Whether a started release answers: /healthz and /version, directly and through the proxy."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from cxml.core.errors import DeployError
from cxml.deploy.host.services import Service, exit_reason
from cxml.deploy.host.settings import HostSettings


def get_json(url: str, timeout_s: float = 2.0) -> tuple[int, dict[str, Any] | None]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def wait_until_serving(settings: HostSettings, service: Service) -> None:
    """Poll /healthz, then check /version names the release; raise with the cause otherwise."""
    base = f"http://127.0.0.1:{service.port}"
    deadline = time.monotonic() + settings.health_timeout_s
    last_problem = "no answer on /healthz"
    while time.monotonic() < deadline:
        reason = exit_reason(settings, service)
        if reason is not None:
            raise DeployError(f"release {service.release} failed its health check: {reason}")
        status, _ = get_json(f"{base}/healthz")
        if status == 200:
            _, version = get_json(f"{base}/version")
            served = (version or {}).get("release")
            if served == service.release:
                return
            raise DeployError(
                f"release {service.release} failed its health check: /version reports "
                f"release {served!r}"
            )
        last_problem = f"/healthz answered {status}" if status else "no answer on /healthz"
        time.sleep(0.2)
    raise DeployError(
        f"release {service.release} failed its health check: not healthy within "
        f"{settings.health_timeout_s:g} s ({last_problem})"
    )


def wait_for_public(
    settings: HostSettings, release: str, timeout_s: float = 20.0, in_a_row: int = 10
) -> None:
    """Until the stable endpoint names the new release `in_a_row` times (old proxy workers gone)."""
    if settings.public_url is None:
        return
    url = settings.public_url.rstrip("/") + "/version"
    deadline = time.monotonic() + timeout_s
    served = None
    streak = 0
    while time.monotonic() < deadline:
        _, version = get_json(url)
        served = (version or {}).get("release")
        streak = streak + 1 if served == release else 0
        if streak >= in_a_row:
            return
        time.sleep(0.05)
    raise DeployError(
        f"the proxy at {settings.public_url} still serves {served!r}, not {release}, after "
        "the reload"
    )

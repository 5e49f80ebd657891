"""The proxy in front of the services: the nginx upstream file, `nginx -t`, the reload."""

from __future__ import annotations

import contextlib
import shlex
import subprocess
from collections.abc import Sequence

from cxml.core import files
from cxml.core.errors import DeployError
from cxml.deploy.host.settings import HostSettings

UPSTREAM_NAME = "cxml_serving"


def upstream_config(port: int) -> str:
    return (
        "# Written by `python -m cxml.deploy.host` on every deploy: do not edit.\n"
        f"upstream {UPSTREAM_NAME} {{\n"
        f"    server 127.0.0.1:{port};\n"
        "    keepalive 16;\n"
        "}\n"
    )


def weighted_upstream_config(stable_port: int, canary_port: int, canary_weight: int) -> str:
    """Both services in one upstream: nginx's weighted round robin sends `canary_weight` of
    every 100 requests to the canary (exact per worker, so the share is what was asked)."""
    if not 1 <= canary_weight <= 99:
        raise ValueError(f"canary weight {canary_weight}: expected 1 to 99")
    return (
        "# Written by `python -m cxml.deploy.host` during a canary: do not edit.\n"
        f"upstream {UPSTREAM_NAME} {{\n"
        f"    server 127.0.0.1:{stable_port} weight={100 - canary_weight};\n"
        f"    server 127.0.0.1:{canary_port} weight={canary_weight};\n"
        "    keepalive 16;\n"
        "}\n"
    )


def switch_proxy(settings: HostSettings, port: int) -> None:
    """Point the proxy's upstream at `port`, have the proxy validate its whole config, reload it.

    `nginx -s reload` exits 0 even when the master then rejects the new config and keeps the old
    one, so the config is tested first (`nginx -t` with the reload command's -c/-p); a rejected
    config puts the upstream file back as it was and nothing is reloaded.
    """
    write_and_reload(settings, upstream_config(port))


def split_proxy(settings: HostSettings, stable_port: int, canary_port: int, weight: int) -> None:
    """Send `weight` percent of the requests to `canary_port`, the rest to `stable_port`."""
    write_and_reload(settings, weighted_upstream_config(stable_port, canary_port, weight))


def write_and_reload(settings: HostSettings, text: str) -> None:
    """Write the upstream file, have the proxy check its whole config, reload (a graceful reload:
    old workers finish their requests); a rejected config is put back and nothing reloaded."""
    if settings.proxy_config is None:
        return
    before = read_proxy_config(settings)
    files.write_text(settings.proxy_config, text)
    try:
        check_proxy_config(settings)
    except DeployError:
        write_proxy_config(settings, before)
        raise
    run_proxy_command(settings.proxy_reload, "proxy reload")


def proxy_check_command(settings: HostSettings) -> tuple[str, ...] | None:
    """The configured check, or `<reload command without -s reload> -t` for an nginx reload."""
    if settings.proxy_check is not None:
        return settings.proxy_check or None
    reload = settings.proxy_reload
    for index in range(len(reload) - 1):
        if reload[index] == "-s" and reload[index + 1] == "reload":
            return (*reload[:index], *reload[index + 2 :], "-t")
    return None


def check_proxy_config(settings: HostSettings) -> None:
    command = proxy_check_command(settings)
    if command is not None:
        run_proxy_command(command, "proxy config check", rejected=True)


def run_proxy_command(argv: Sequence[str], what: str, *, rejected: bool = False) -> None:
    try:
        result = subprocess.run(
            list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise DeployError(
            f"{what} `{shlex.join(argv)}`: {argv[0]} not found on the host; set --proxy-reload "
            "(and --proxy-check) to commands that exist there"
        ) from None
    if result.returncode == 0:
        return
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()] or ["no output"]
    cause = next((line for line in lines if "[emerg]" in line), lines[-1])
    if rejected:
        raise DeployError(
            f"the proxy rejected its config: `{shlex.join(argv)}` failed: {cause}; fix the "
            "proxy config on the host, then deploy again"
        )
    raise DeployError(f"{what} `{shlex.join(argv)}` failed: {cause}")


def read_proxy_config(settings: HostSettings) -> str | None:
    if settings.proxy_config is None or not settings.proxy_config.exists():
        return None
    return settings.proxy_config.read_text(encoding="utf-8")


def write_proxy_config(settings: HostSettings, text: str | None) -> None:
    if settings.proxy_config is None:
        return
    if text is None:
        settings.proxy_config.unlink(missing_ok=True)
    else:
        files.write_text(settings.proxy_config, text)


def restore_proxy(settings: HostSettings, before: str | None) -> None:
    """Put the upstream file back as it was before this deploy and reload, if it was changed."""
    if settings.proxy_config is None or read_proxy_config(settings) == before:
        return
    with contextlib.suppress(DeployError, OSError):
        write_proxy_config(settings, before)
        check_proxy_config(settings)
        run_proxy_command(settings.proxy_reload, "proxy reload")

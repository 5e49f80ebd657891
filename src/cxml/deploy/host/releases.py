"""What the host does with releases: install a verified upload, swap to it, roll back, prune."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from cxml.core.errors import ConfigError, DeployError, RecordError
from cxml.deploy.host.health import wait_for_public, wait_until_serving
from cxml.deploy.host.lock import deploy_lock
from cxml.deploy.host.progress import log
from cxml.deploy.host.proxy import read_proxy_config, restore_proxy, switch_proxy
from cxml.deploy.host.services import (
    Service,
    forget_service,
    load_service,
    save_service,
    service_alive,
    start_service,
    stop_service,
)
from cxml.deploy.host.settings import HostSettings
from cxml.deploy.host.state import (
    HostState,
    after_switch,
    read_state,
    record_event,
    releases_to_prune,
    write_state,
)
from cxml.records.release import load_bundle, same_bundle, verify_bundle

STALE_UPLOAD_S = 3600.0


def prepare(settings: HostSettings) -> dict[str, Any]:
    """Make the layout, drop uploads abandoned long ago, report what is installed."""
    for directory in (
        settings.releases_dir,
        settings.incoming_dir,
        settings.services_dir,
        settings.logs_dir,
    ):
        directory.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - STALE_UPLOAD_S
    for upload in settings.incoming_dir.iterdir():
        if upload.stat().st_mtime < cutoff:
            shutil.rmtree(upload, ignore_errors=True)
    state = read_state(settings)
    return {
        "root": str(settings.root),
        "current": state.current,
        "previous": state.previous,
        "releases": state.releases,
    }


def install_upload(settings: HostSettings, release: str, staging: Path) -> None:
    """Check an upload's checksums, then rename it into releases/: a partial upload never is one."""
    target = settings.releases_dir / release
    staging = staging.resolve()
    if staging.parent != settings.incoming_dir.resolve():
        raise ConfigError(f"{staging}: uploads must be under {settings.incoming_dir}")
    try:
        verify_bundle(staging)
        uploaded = load_bundle(staging, verify=False)
        if uploaded.info.release != release:
            raise DeployError(
                f"{staging}: holds release {uploaded.info.release}, not {release}; deploy again"
            )
    except (DeployError, RecordError):
        shutil.rmtree(staging, ignore_errors=True)
        raise
    make_world_readable(staging)
    if target.exists():
        same = same_bundle(staging, target)
        shutil.rmtree(staging, ignore_errors=True)
        if not same:
            raise DeployError(
                f"{target} exists with other contents; remove it on the host or deploy "
                "another version"
            )
        verify_bundle(target)
        return
    os.rename(staging, target)


def make_world_readable(directory: Path) -> None:
    """The serving container runs as a non-root user: it must be able to read the release."""
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)


def swap_to(
    settings: HostSettings, state: HostState, release: str, action: str, **details: Any
) -> dict[str, Any]:
    """Start `release`, check it, switch the proxy to it, stop the old one; roll back on failure."""
    old_service = load_service(settings, state.current)
    if old_service is not None and not service_alive(settings, old_service):
        old_service = None
    if state.current == release and old_service is not None:
        log(f"release {release} is already serving on port {old_service.port}")
        return {
            "release": release,
            "previous": state.previous,
            "port": old_service.port,
            "changed": False,
        }
    log(f"starting release {release} ({settings.mode} mode)")
    proxy_before = read_proxy_config(settings)
    new_service: Service | None = None
    try:
        new_service = start_service(settings, release)  # in here: a failed build or run rolls back
        wait_until_serving(settings, new_service)
        log(f"release {release} is healthy on port {new_service.port}; switching the proxy")
        switch_proxy(settings, new_service.port)
        wait_for_public(settings, release)
    except (DeployError, OSError) as exc:
        if new_service is not None:
            stop_service(settings, new_service, grace_s=5.0)
        restore_proxy(settings, proxy_before)
        still = (
            f"release {state.current} still serving"
            if old_service
            else "nothing was serving before"
        )
        record_event(state, action, release, "rolled back", reason=str(exc), **details)
        write_state(settings, state)
        raise DeployError(f"{exc}; rolled back, {still}") from None
    save_service(settings, new_service)
    new_state = after_switch(state, release)
    record_event(new_state, action, release, "ok", **details)
    write_state(settings, new_state)
    if old_service is not None and old_service.release != release:
        time.sleep(settings.drain_s)
        log(f"stopping release {old_service.release} (port {old_service.port})")
        stop_service(settings, old_service)
        forget_service(settings, old_service.release)
    prune(settings, new_state)
    return {
        "release": release,
        "previous": new_state.previous,
        "port": new_service.port,
        "changed": True,
    }


def prune(settings: HostSettings, state: HostState) -> None:
    doomed = releases_to_prune(state, settings.keep)
    if not doomed:
        return
    for release in doomed:
        log(f"removing old release {release}")
        shutil.rmtree(settings.releases_dir / release, ignore_errors=True)
        forget_service(settings, release)
    state.releases = [r for r in state.releases if r not in doomed]
    write_state(settings, state)


def activate(
    settings: HostSettings, release: str, staging: Path | None, forced_reason: str | None
) -> dict[str, Any]:
    with deploy_lock(settings, f"deploy of {release}"):
        prepare(settings)
        if staging is not None:
            install_upload(settings, release, staging)
        if not (settings.releases_dir / release).is_dir():
            raise DeployError(f"release {release} is not installed on the host; deploy it first")
        state = read_state(settings)
        if release not in state.releases:
            state.releases.append(release)
        result = swap_to(settings, state, release, "deploy", forced_reason=forced_reason)
        result["record"] = load_bundle(settings.releases_dir / release, verify=False).info.to_dict()
        return result


def rollback(settings: HostSettings) -> dict[str, Any]:
    with deploy_lock(settings, "rollback"):
        state = read_state(settings)
        target = state.previous
        if target is None:
            raise DeployError("no previous release recorded on the host; nothing to roll back to")
        if not (settings.releases_dir / target).is_dir():
            raise DeployError(
                f"previous release {target} was removed from the host; deploy it again instead"
            )
        result = swap_to(settings, state, target, "rollback")
        result["record"] = load_bundle(settings.releases_dir / target, verify=False).info.to_dict()
        return result


def discard(settings: HostSettings, staging: Path) -> dict[str, Any]:
    staging = staging.resolve()
    if staging.parent == settings.incoming_dir.resolve():
        shutil.rmtree(staging, ignore_errors=True)
    return {"discarded": str(staging)}


def status(settings: HostSettings) -> dict[str, Any]:
    state = read_state(settings)
    service = load_service(settings, state.current)
    return {
        "current": state.current,
        "previous": state.previous,
        "releases": state.releases,
        "serving": bool(service and service_alive(settings, service)),
        "port": service.port if service else None,
        "history": state.history[-10:],
    }

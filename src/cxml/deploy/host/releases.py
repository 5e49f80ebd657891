"""What the host does with releases: install a verified upload, swap to it, roll back, prune."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import time
from pathlib import Path
from typing import Any

from cxml.core.errors import ConfigError, DeployError, RecordError
from cxml.deploy.host.health import wait_for_public, wait_until_serving
from cxml.deploy.host.journal import Journal, clear_journal, replay_journal, write_journal
from cxml.deploy.host.lock import deploy_lock
from cxml.deploy.host.progress import log
from cxml.deploy.host.proxy import read_proxy_config, restore_proxy, switch_proxy
from cxml.deploy.host.services import (
    Service,
    forget_service,
    load_service,
    orphans,
    recorded_services,
    save_service,
    service_alive,
    start_service,
    stop_orphan,
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
from cxml.records.release import is_release_name, load_bundle, same_bundle, verify_bundle

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
        if upload.lstat().st_mtime < cutoff:
            remove_upload(upload)
    state = read_state(settings)
    return {
        "root": str(settings.root),
        "current": state.current,
        "previous": state.previous,
        "releases": state.releases,
        "installed": installed_releases(settings),
    }


def installed_releases(settings: HostSettings) -> list[str]:
    """Release directories under releases/ (checked again before one is activated)."""
    return sorted(
        path.name
        for path in settings.releases_dir.iterdir()
        if is_release_name(path.name) and path.is_dir() and not path.is_symlink()
    )


def install_upload(settings: HostSettings, release: str, staging: Path) -> None:
    """Check an upload's checksums, then rename it into releases/: a partial upload never is one."""
    target = settings.releases_dir / release
    staging = upload_dir(settings, staging)
    if staging.is_symlink():
        staging.unlink()
        raise DeployError(f"{staging}: is a symbolic link, not an upload; refused, deploy again")
    try:
        verify_bundle(staging)  # also refuses links and anything else that is not a plain file
        uploaded = load_bundle(staging, verify=False)
        if uploaded.info.release != release:
            raise DeployError(
                f"{staging}: holds release {uploaded.info.release}, not {release}; deploy again"
            )
        make_world_readable(staging)
    except (DeployError, RecordError):
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        same = same_bundle(staging, target)
        shutil.rmtree(staging, ignore_errors=True)
        if not same:
            raise DeployError(
                f"{target} exists and serves something else (another model, serving config or "
                "version under the same name); remove it on the host or deploy another version"
            )
        verify_bundle(target)
        log(f"release {release} is already installed and verified; reusing it")
        return
    os.rename(staging, target)


def upload_dir(settings: HostSettings, staging: Path) -> Path:
    """`staging` as an entry directly under incoming/ (not resolved: it may be a planted link)."""
    incoming = settings.incoming_dir.resolve()
    absolute = Path(os.path.abspath(staging))
    if absolute.name in ("", ".", "..") or absolute.parent.resolve() != incoming:
        raise ConfigError(f"{staging}: uploads must be under {settings.incoming_dir}")
    return incoming / absolute.name


def remove_upload(upload: Path) -> None:
    """Remove an upload; a link is removed itself, never what it points to."""
    if upload.is_symlink() or not upload.is_dir():
        upload.unlink(missing_ok=True)
    else:
        shutil.rmtree(upload, ignore_errors=True)


def make_world_readable(directory: Path) -> None:
    """The serving container runs as a non-root user: it must be able to read the release."""
    chmod_no_follow(directory, 0o755, directory=True)
    for path in directory.iterdir():
        chmod_no_follow(path, 0o644)


def chmod_no_follow(path: Path, mode: int, *, directory: bool = False) -> None:
    """chmod through a descriptor opened with O_NOFOLLOW: a link swapped in is refused, never
    followed (the host agent may run as root; os.chmod(follow_symlinks=False) fails on Linux)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | (os.O_DIRECTORY if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise DeployError(
                f"{path}: is a symbolic link or not a plain file; refused, deploy again"
            ) from None
        raise
    try:
        kind = os.fstat(fd).st_mode
        if not (stat.S_ISDIR(kind) if directory else stat.S_ISREG(kind)):
            raise DeployError(f"{path}: is not a plain file; refused, deploy again")
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def swap_to(
    settings: HostSettings, state: HostState, release: str, action: str, **details: Any
) -> dict[str, Any]:
    """Start `release`, check it, switch the proxy to it, stop the old one; roll back on failure.

    Each step is written to the journal first, so a swap cut short is finished or undone by the
    next command (see cxml.deploy.host.journal)."""
    old_service = load_service(settings, state.current)
    if old_service is not None and not service_alive(settings, old_service):
        old_service = None
    if state.current == release and old_service is not None:
        message = f"release {release} is already serving on {socket.gethostname()}; nothing to do"
        log(f"{message} (port {old_service.port})")
        stop_stray_services(settings, state)
        return {
            "release": release,
            "previous": state.previous,
            "port": old_service.port,
            "changed": False,
            "message": message,
        }
    log(f"starting release {release} ({settings.mode} mode)")
    proxy_before = read_proxy_config(settings)
    journal = Journal(action, release, "starting", old=old_service, proxy_before=proxy_before)
    write_journal(settings, journal)
    new_service: Service | None = None
    try:
        new_service = start_service(settings, release)  # in here: a failed build or run rolls back
        journal = Journal(action, release, "started", old_service, new_service, proxy_before)
        write_journal(settings, journal)
        wait_until_serving(settings, new_service)
        log(f"release {release} is healthy on port {new_service.port}; switching the proxy")
        switch_proxy(settings, new_service.port)
        wait_for_public(settings, release)
    except (DeployError, OSError) as exc:
        if new_service is not None:
            stop_service(settings, new_service, grace_s=5.0)
        restore_proxy(settings, proxy_before)
        clear_journal(settings)
        still = (
            f"release {state.current} still serving"
            if old_service
            else "nothing was serving before"
        )
        record_event(state, action, release, "rolled back", reason=str(exc), **details)
        write_state(settings, state)
        raise DeployError(f"{exc}; rolled back, {still}") from None
    save_service(settings, new_service)
    # the journal says "switched" before state.json does: a crash between the two is undone
    write_journal(settings, Journal(action, release, "switched", old_service, new_service))
    new_state = after_switch(state, release)
    record_event(new_state, action, release, "ok", **details)
    write_state(settings, new_state)
    retire(settings, old_service, new_state)
    return {
        "release": release,
        "previous": new_state.previous,
        "port": new_service.port,
        "changed": True,
    }


def retire(settings: HostSettings, old_service: Service | None, new_state: HostState) -> None:
    """Once the proxy serves `new_state.current`: drain and stop the release it replaced, end
    the journal, and tidy the root."""
    if old_service is not None and old_service.release != new_state.current:
        time.sleep(settings.drain_s)
        log(f"stopping release {old_service.release} (port {old_service.port})")
        stop_service(settings, old_service)
        forget_service(settings, old_service.release)
    clear_journal(settings)
    stop_stray_services(settings, new_state)
    prune(settings, new_state)


def stop_stray_services(settings: HostSettings, state: HostState) -> None:
    """Stop what serves under this root besides the current release: services whose records
    name another release (left by an older cxml whose deploy died mid-drain) and `cxml serve`
    processes of this root that no record owns. Containers no record owns are only reported by
    `status`: their names do not say which root started them."""
    for service in recorded_services(settings):
        if service.release == state.current:
            continue
        if service_alive(settings, service):
            log(f"stopping release {service.release} (port {service.port}): it is not current")
            stop_service(settings, service)
        forget_service(settings, service.release)
    for orphan in orphans(settings):
        if "pid" in orphan:
            log(f"stopping a serving process of release {orphan['release']} that no record owns")
            stop_orphan(settings, orphan)


def prune(settings: HostSettings, state: HostState) -> None:
    """Keep the newest `keep` releases that were live; drop installs that never were (failed)."""
    doomed = releases_to_prune(state, settings.keep)
    never_live = [
        path.name
        for path in settings.releases_dir.iterdir()
        if path.name not in state.releases and path.name not in (state.current, state.previous)
    ]
    for release in [*doomed, *never_live]:
        log(f"removing old release {release}")
        shutil.rmtree(settings.releases_dir / release, ignore_errors=True)
        forget_service(settings, release)
    if doomed:
        state.releases = [r for r in state.releases if r not in doomed]
        write_state(settings, state)


def install_or_verify(settings: HostSettings, release: str, staging: Path | None) -> None:
    """Install `release` from its upload in `staging`, or, with none, check the installed one."""
    if staging is not None:
        install_upload(settings, release, staging)
    if not (settings.releases_dir / release).is_dir():
        raise DeployError(f"release {release} is not installed on the host; deploy it first")
    if staging is None:
        verify_bundle(settings.releases_dir / release)


def activate(
    settings: HostSettings, release: str, staging: Path | None, forced_reason: str | None
) -> dict[str, Any]:
    with deploy_lock(settings, f"deploy of {release}"):
        prepare(settings)
        replay_journal(settings)
        install_or_verify(settings, release, staging)
        if staging is None:
            log(f"release {release} is already installed; verified it again, reusing it")
        # a release joins state.releases (and takes a --keep slot) once it has served
        state = read_state(settings)
        result = swap_to(settings, state, release, "deploy", forced_reason=forced_reason)
        result["record"] = load_bundle(settings.releases_dir / release, verify=False).info.to_dict()
        return result


def rollback(settings: HostSettings) -> dict[str, Any]:
    with deploy_lock(settings, "rollback"):
        replay_journal(settings)
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
    upload = upload_dir(settings, staging)
    remove_upload(upload)
    return {"discarded": str(upload)}


def status(settings: HostSettings) -> dict[str, Any]:
    """The host's releases and every service; a swap cut short is ended first (waiting for one in
    flight), and serving processes or containers that no record owns are listed as orphans."""
    if settings.journal_file.exists():
        with deploy_lock(settings, "status"):
            replay_journal(settings)
    state = read_state(settings)
    service = load_service(settings, state.current)
    services = [
        {
            "release": s.release,
            "mode": s.mode,
            "port": s.port,
            "pid": s.pid,
            "container": s.container,
            "alive": service_alive(settings, s),
            "current": s.release == state.current,
        }
        for s in recorded_services(settings)
    ]
    return {
        "current": state.current,
        "previous": state.previous,
        "releases": state.releases,
        "serving": bool(service and service_alive(settings, service)),
        "port": service.port if service else None,
        "services": services,
        "orphans": orphans(settings),
        "history": state.history[-10:],
        "kept": kept_releases(settings, state),
    }


def kept_releases(settings: HostSettings, state: HostState) -> list[dict[str, Any]]:
    """The releases that served here and are still installed (oldest first), each with the model
    its record names: `cxml promote --version` looks for a registered version among them."""
    names = [*state.releases]
    names += [r for r in (state.previous, state.current) if r is not None and r not in names]
    kept = []
    for name in names:
        directory = settings.releases_dir / name
        if not is_release_name(name) or directory.is_symlink() or not directory.is_dir():
            continue
        try:
            info = load_bundle(directory, verify=False).info
        except (DeployError, RecordError, OSError):
            continue  # unreadable: not offered for promotion (a deploy verifies it anyway)
        kept.append(
            {
                "release": name,
                "model_name": info.model_name,
                "model_version": info.model_version,
                "run_id": info.run_id,
                "model_sha256": info.model_sha256,
            }
        )
    return kept

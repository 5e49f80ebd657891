"""The host's side of a canary: start a release next to the current one with a share of the
traffic, hand both services' /metrics to the client, then promote it to all the traffic or abort.

ROOT/canary.json records a canary while it runs (its release, the weight, both services and the
upstream file as it was before), so `canary-metrics`, `canary-promote` and `canary-abort` find it
from a later SSH command. It is the deploy lock's second half for the whole window: the client
that watches the canary renews a lease in it with every read of /metrics, and while the lease
holds, any other deploy, rollback or canary on the host is refused. A canary whose client died
(its lease ran out) is aborted by the next command that replays the journal (see
cxml.deploy.host.journal), which says so. Every step is recorded in state.json's history.
"""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cxml.core import files
from cxml.core.errors import DeployError, RecordError
from cxml.deploy.host.health import wait_for_public, wait_until_serving
from cxml.deploy.host.journal import Journal, replay_journal, write_journal
from cxml.deploy.host.lock import deploy_lock
from cxml.deploy.host.progress import log, now_iso
from cxml.deploy.host.proxy import read_proxy_config, restore_proxy, split_proxy, switch_proxy
from cxml.deploy.host.releases import install_or_verify, prepare, retire
from cxml.deploy.host.releases import status as releases_status
from cxml.deploy.host.services import (
    Service,
    exit_reason,
    forget_service,
    load_service,
    save_service,
    service_alive,
    start_service,
    stop_service,
)
from cxml.deploy.host.settings import HostSettings
from cxml.deploy.host.state import after_switch, read_state, record_event, write_state
from cxml.records.release import is_release_name, load_bundle

CANARY_FILE_NAME = "canary.json"
METRICS_TIMEOUT_S = 5.0
DEFAULT_LEASE_S = 60.0
MAX_METRICS_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Canary:
    """A canary under way: `canary` takes `weight` percent of the requests, `stable` the rest."""

    release: str
    weight: int
    stable: Service
    canary: Service
    proxy_before: str | None
    started_at: str
    lease_s: float = DEFAULT_LEASE_S
    """How long the canary stays reserved for its client without a read of /metrics."""
    watched_until: float = 0.0
    """Epoch seconds: the lease; past it, the client is taken to be gone."""

    def renewed(self) -> Canary:
        return replace(self, watched_until=time.time() + self.lease_s)


def canary_file(settings: HostSettings) -> Path:
    return settings.root / CANARY_FILE_NAME


def write_canary(settings: HostSettings, canary: Canary) -> None:
    files.write_json(canary_file(settings), asdict(canary))


def read_canary(settings: HostSettings) -> Canary | None:
    path = canary_file(settings)
    if not path.exists():
        return None
    data = files.read_json(path, what="canary record")
    try:
        canary = Canary(
            release=str(data["release"]),
            weight=int(data["weight"]),
            stable=Service(**data["stable"]),
            canary=Service(**data["canary"]),
            proxy_before=data.get("proxy_before"),
            started_at=str(data.get("started_at", "")),
            lease_s=float(data.get("lease_s", DEFAULT_LEASE_S)),
            watched_until=float(data.get("watched_until", 0.0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(
            f"{path}: not a canary record ({exc}); it was changed by hand, move it away and "
            "check the host's services with `status`"
        ) from None
    if not is_release_name(canary.release):
        raise RecordError(f"{path}: names release {canary.release!r}; move it away")
    return canary


def clear_canary(settings: HostSettings) -> None:
    canary_file(settings).unlink(missing_ok=True)


def settle_canary(settings: HostSettings, journal: Journal | None) -> str | None:
    """Under the deploy lock, before anything else changes the host: refuse while a canary's
    client holds its lease; abort a canary whose client is gone (and say so)."""
    canary = read_canary(settings)
    if canary is None:
        return None
    if read_state(settings).current == canary.release:
        clear_canary(settings)  # its promotion was recorded; the journal finishes the rest
        return None
    # a promotion cut short holds no lease: nobody else can be inside it, we hold the lock
    promoting = journal is not None and journal.action == "promote"
    if not promoting and time.time() <= canary.watched_until:
        left = max(1, round(canary.watched_until - time.time()))
        raise DeployError(
            f"a canary of release {canary.release} is under way on this host ({canary.weight}% "
            f"of the traffic since {canary.started_at}, watched by `cxml promote`); wait for "
            "that promotion to end and retry (if its client is gone, the canary is aborted by "
            f"the first deploy or promote after its lease runs out, in {left} s)"
        )
    gone = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(canary.watched_until))
    end_canary(settings, canary, f"stale: its promotion stopped watching it at {gone}")
    done = (
        f"aborted a stale canary of release {canary.release} (started {canary.started_at}; the "
        f"promotion that watched it stopped at {gone}): {canary.stable.release} serves all the "
        "traffic again"
    )
    log(done)
    return done


# --- start ------------------------------------------------------------------------------------


def start(
    settings: HostSettings, release: str, staging: Path | None, weight: int, lease_s: float
) -> dict[str, Any]:
    """Install `release`, start it next to the current one and give it `weight` percent."""
    if not 1 <= weight <= 99:
        raise DeployError(f"--weight {weight}: a canary takes 1 to 99 percent of the traffic")
    if not 1.0 <= lease_s <= 3600.0:
        raise DeployError(f"--lease {lease_s:g}: expected 1 to 3600 seconds")
    with deploy_lock(settings, f"canary of {release}"):
        prepare(settings)
        settled = replay_journal(settings)
        install_or_verify(settings, release, staging)
        state = read_state(settings)
        stable = load_service(settings, state.current)
        if stable is None or not service_alive(settings, stable):
            raise DeployError(
                "nothing is serving on the host to compare a canary with; deploy a release "
                "first (cxml redeploy), or promote without a canary"
            )
        record = load_bundle(settings.releases_dir / release, verify=False).info.to_dict()
        if state.current == release:
            log(f"release {release} is already serving; no canary needed")
            return {"release": release, "changed": False, "record": record, "settled": settled}
        canary = launch(settings, release, stable, weight, lease_s)
        record_event(state, "canary", release, "started", weight=weight, stable=stable.release)
        write_state(settings, state)
        return {
            "release": release,
            "changed": True,
            "stable": stable.release,
            "weight": weight,
            "stable_port": stable.port,
            "canary_port": canary.canary.port,
            "record": record,
            "settled": settled,
        }


def launch(
    settings: HostSettings, release: str, stable: Service, weight: int, lease_s: float
) -> Canary:
    """Start the canary's service, check it, split the proxy; on a failure nothing is left."""
    log(f"starting release {release} as a canary next to {stable.release} ({settings.mode} mode)")
    proxy_before = read_proxy_config(settings)
    service: Service | None = None
    try:
        service = start_service(settings, release)
        canary = Canary(release, weight, stable, service, proxy_before, now_iso(), lease_s)
        canary = canary.renewed()
        write_canary(settings, canary)  # before the split: an abort can always undo it
        save_service(settings, service)
        wait_until_serving(settings, service)
        log(f"release {release} is healthy on port {service.port}; sending it {weight}%")
        split_proxy(settings, stable.port, service.port, weight)
    except (DeployError, OSError) as exc:
        if service is not None:
            stop_service(settings, service, grace_s=5.0)
            forget_service(settings, release)
        restore_proxy(settings, proxy_before)
        clear_canary(settings)
        state = read_state(settings)
        record_event(state, "canary", release, "failed to start", reason=str(exc))
        write_state(settings, state)
        raise DeployError(
            f"{exc}; the canary was not started, {stable.release} serves all"
        ) from None
    return canary


# --- watch ------------------------------------------------------------------------------------


def metrics(settings: HostSettings) -> dict[str, Any]:
    """Both services' /metrics as they are now (read on the host: they listen on loopback); each
    read renews the client's lease on the canary."""
    with deploy_lock(settings, "canary watch"):
        canary = read_canary(settings)
        if canary is None:
            raise DeployError(
                "no canary is running on the host (it was aborted or promoted by another "
                "command); promote again"
            )
        write_canary(settings, canary.renewed())
    return {
        "release": canary.release,
        "weight": canary.weight,
        "stable": service_metrics(settings, canary.stable),
        "canary": service_metrics(settings, canary.canary),
    }


def service_metrics(settings: HostSettings, service: Service) -> dict[str, Any]:
    reason = exit_reason(settings, service)
    if reason is not None:
        return {"release": service.release, "text": None, "problem": reason}
    url = f"http://127.0.0.1:{service.port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=METRICS_TIMEOUT_S) as response:
            text = response.read(MAX_METRICS_BYTES).decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return {"release": service.release, "text": None, "problem": f"{url}: {exc}"}
    return {"release": service.release, "text": text, "problem": None}


# --- promote or abort -------------------------------------------------------------------------


def promote(settings: HostSettings) -> dict[str, Any]:
    """All the traffic to the canary, then drain and stop the release it replaces."""
    with deploy_lock(settings, "canary promotion"):
        canary = read_canary(settings)
        if canary is None:
            raise DeployError("no canary is running on the host; nothing to promote")
        state = read_state(settings)
        log(f"promoting release {canary.release}: all the traffic to port {canary.canary.port}")
        try:
            switch_proxy(settings, canary.canary.port)
            wait_for_public(settings, canary.release)
        except (DeployError, OSError) as exc:
            end_canary(settings, canary, f"promotion failed: {exc}")
            raise DeployError(
                f"{exc}; the canary was aborted, {canary.stable.release} serves all"
            ) from None
        old = canary.stable
        write_journal(
            settings,
            Journal("promote", canary.release, "switched", old, canary.canary, canary.proxy_before),
        )
        new_state = after_switch(state, canary.release)
        record_event(new_state, "promote", canary.release, "ok", weight=canary.weight)
        write_state(settings, new_state)
        clear_canary(settings)
        retire(settings, old, new_state)
        return {
            "release": canary.release,
            "previous": new_state.previous,
            "port": canary.canary.port,
            "changed": True,
            "record": load_bundle(
                settings.releases_dir / canary.release, verify=False
            ).info.to_dict(),
        }


def abort(settings: HostSettings, reason: str) -> dict[str, Any]:
    """Weight back to 0 (the proxy on the current release alone), then stop the canary."""
    with deploy_lock(settings, "canary abort"):
        canary = read_canary(settings)
        if canary is None:
            return {"aborted": None}
        end_canary(settings, canary, reason)
        return {"aborted": canary.release, "release": canary.stable.release}


def end_canary(settings: HostSettings, canary: Canary, reason: str) -> None:
    """Put every request back on the stable service, drain and stop the canary, record why."""
    log(f"aborting the canary of {canary.release}: all the traffic back to {canary.stable.release}")
    if service_alive(settings, canary.stable):
        switch_proxy(settings, canary.stable.port)
    else:
        with contextlib.suppress(OSError):
            restore_proxy(settings, canary.proxy_before)
    time.sleep(settings.drain_s)
    stop_service(settings, canary.canary)
    if load_service(settings, canary.release) == canary.canary:
        forget_service(settings, canary.release)
    clear_canary(settings)
    state = read_state(settings)
    record_event(state, "canary", canary.release, "aborted", reason=reason)
    write_state(settings, state)


# --- status -----------------------------------------------------------------------------------


def status(settings: HostSettings) -> dict[str, Any]:
    """The host's releases and services (see releases.status) and the canary under way, if any."""
    result = releases_status(settings)
    result["canary"] = canary_status(settings, result.get("current"))
    return result


def canary_status(settings: HostSettings, current: object) -> dict[str, Any] | None:
    """What the canary record says: its release and weight, the release it runs next to, and how
    long its client's lease holds (past it, the next deploy or promote aborts it)."""
    try:
        canary = read_canary(settings)
    except RecordError as exc:
        return {"problem": str(exc)}
    if canary is None or canary.release == current:
        return None  # none, or a promotion whose record the next command clears
    return {
        "release": canary.release,
        "weight": canary.weight,
        "stable": canary.stable.release,
        "started_at": canary.started_at,
        "lease_left_s": round(max(0.0, canary.watched_until - time.time()), 1),
        "alive": service_alive(settings, canary.canary),
    }


# --- the commands -----------------------------------------------------------------------------

COMMANDS = ("canary-start", "canary-metrics", "canary-promote", "canary-abort")


def run(
    command: str,
    settings: HostSettings,
    release: str | None,
    staging: Path | None,
    weight: int,
    reason: str,
    lease_s: float = DEFAULT_LEASE_S,
) -> dict[str, Any]:
    """One canary subcommand of `python -m cxml.deploy.host` (release checked by the caller)."""
    if command == "canary-start":
        return start(settings, str(release), staging, weight, lease_s)
    if command == "canary-metrics":
        return metrics(settings)
    if command == "canary-promote":
        return promote(settings)
    return abort(settings, reason)

"""Promotion: the release one environment serves goes to another, through a canary if it has one.

The bundle is the one the source environment's first host serves (fetched over SFTP and checked
against its SHA256SUMS: same sha256, no rebuild), uploaded to the target hosts as a deploy does
(not at all to a host that holds it). With a `canary:` section the target's first host starts it
next to its current release with a share of the traffic; both services' /metrics are read for
the window and compared (`judge_canary`, pure); then it takes all the traffic or is aborted. The
other hosts follow one at a time with a plain switch.
"""

from __future__ import annotations

import contextlib
import math
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cxml.core.console import info, warn
from cxml.core.errors import ConfigError, CxmlError, DeployError
from cxml.deploy import plan, ssh
from cxml.deploy.config import CanarySettings, Environment
from cxml.deploy.host.health import wait_for_public
from cxml.deploy.host.settings import HostSettings, option
from cxml.records.release import (
    MODEL_FILE_NAME,
    RELEASE_FILE_NAME,
    ReleaseInfo,
    is_release_name,
    load_bundle,
    manifest_checksums,
)

H = TypeVar("H")

MIN_LATENCY_MS = 10.0
"""Latencies below this are compared as this: ratios of a few milliseconds are noise."""
ERROR_CODES_IGNORED = frozenset({"499"})
"""499: the client hung up; not the service's fault."""


# --- /metrics: Prometheus text -> a snapshot ---------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What one service's /metrics says about /predict, cumulative since it started."""

    requests: float = 0.0
    errors: float = 0.0
    latency_buckets: tuple[tuple[float, float], ...] = ()
    """(upper bound in seconds, cumulative count), ascending, +Inf last."""
    classes: dict[str, float] = field(default_factory=dict)
    class_metric: bool = False
    """Whether the service exports cxml_predicted_class_total at all (older ones do not)."""

    def minus(self, earlier: Snapshot) -> Snapshot:
        """What happened between `earlier` and this snapshot."""
        before = dict(earlier.latency_buckets)
        return Snapshot(
            requests=self.requests - earlier.requests,
            errors=self.errors - earlier.errors,
            latency_buckets=tuple(
                (bound, count - before.get(bound, 0.0)) for bound, count in self.latency_buckets
            ),
            classes={
                name: count - earlier.classes.get(name, 0.0) for name, count in self.classes.items()
            },
            class_metric=self.class_metric and earlier.class_metric,
        )


CLASS_METRIC = "cxml_predicted_class_total"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> Snapshot:
    """The /predict counters, the latency histogram and predicted-class counts of cxml serve."""
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    classes: dict[str, float] = {}
    class_metric = False
    for line in text.splitlines():
        if line.startswith(f"# TYPE {CLASS_METRIC} "):
            class_metric = True
        match = SAMPLE.match(line)
        if match is None:
            continue
        name, labels_text, value_text = match.groups()
        try:
            value = float(value_text)
        except ValueError:
            continue
        labels = dict(LABEL.findall(labels_text or ""))
        if name == "cxml_requests_total" and labels.get("endpoint") == "/predict":
            requests += value
            code = labels.get("code", "")
            if code not in ERROR_CODES_IGNORED and not code.startswith(("1", "2", "3")):
                errors += value
        elif name == "cxml_predict_latency_seconds_bucket" and "le" in labels:
            bound = math.inf if labels["le"] == "+Inf" else float(labels["le"])
            buckets[bound] = value
        elif name == CLASS_METRIC and "class" in labels:
            class_metric = True
            classes[labels["class"]] = classes.get(labels["class"], 0.0) + value
    return Snapshot(requests, errors, tuple(sorted(buckets.items())), classes, class_metric)


def quantile_ms(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated in its bucket as Prometheus'
    histogram_quantile does; None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound * 1000.0  # the highest finite bound, as Prometheus answers
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return (lower_bound + (bound - lower_bound) * share) * 1000.0
        lower_bound, lower_count = bound, count
    return lower_bound * 1000.0


# --- the decision (pure) -----------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceFigures:
    release: str
    requests: int
    error_rate: float
    p95_ms: float | None
    p99_ms: float | None
    class_shares: dict[str, float]


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    """False: abort. True with `decided` False: watch on (not enough requests yet)."""
    decided: bool
    reason: str
    stable: ServiceFigures
    canary: ServiceFigures


def figures(release: str, window: Snapshot) -> ServiceFigures:
    total = sum(window.classes.values())
    return ServiceFigures(
        release=release,
        requests=int(window.requests),
        error_rate=window.errors / window.requests if window.requests else 0.0,
        p95_ms=quantile_ms(window.latency_buckets, 0.95),
        p99_ms=quantile_ms(window.latency_buckets, 0.99),
        class_shares={k: v / total for k, v in window.classes.items()} if total else {},
    )


def class_shift(first: dict[str, float], second: dict[str, float]) -> float:
    """Total-variation distance between two distributions of predicted classes (0 to 1)."""
    names = set(first) | set(second)
    return 0.5 * sum(abs(first.get(n, 0.0) - second.get(n, 0.0)) for n in names)


def judge_canary(
    stable: ServiceFigures,
    canary: ServiceFigures,
    settings: CanarySettings,
    stable_env: str,
    *,
    final: bool,
) -> Verdict:
    """Abort on the first threshold the canary breaks (once it has answered enough requests);
    at the end of the window (`final`) too few requests is an abort as well."""

    def verdict(healthy: bool, decided: bool, reason: str) -> Verdict:
        return Verdict(healthy, decided, reason, stable, canary)

    if canary.requests < settings.min_requests:
        if not final:
            return verdict(True, False, f"{canary.requests} canary requests so far")
        return verdict(
            False,
            True,
            f"the canary answered {canary.requests} /predict requests in the window, fewer than "
            f"canary.min_requests ({settings.min_requests}): not enough to decide; send traffic "
            "during the window, make it longer or lower min_requests",
        )
    increase = canary.error_rate - stable.error_rate
    if increase > settings.max_error_rate_increase:
        return verdict(
            False,
            True,
            f"canary error rate {canary.error_rate:.1%} > {stable_env} {stable.error_rate:.1%} "
            f"+ {settings.max_error_rate_increase:.1%} (canary.max_error_rate_increase)",
        )
    for name, limit in (("p95", settings.max_p95_ratio), ("p99", settings.max_p99_ratio)):
        canary_ms = getattr(canary, f"{name}_ms")
        stable_ms = getattr(stable, f"{name}_ms")
        if canary_ms is None:
            continue
        compared = max(stable_ms if stable_ms is not None else 0.0, MIN_LATENCY_MS)
        if canary_ms > limit * compared:
            return verdict(
                False,
                True,
                f"canary {name} {canary_ms:.0f} ms > {limit:g} x {stable_env} "
                f"{compared:.0f} ms (canary.max_{name}_ratio)",
            )
    if settings.max_class_shift is not None and canary.class_shares and stable.class_shares:
        shift = class_shift(stable.class_shares, canary.class_shares)
        if shift > settings.max_class_shift:
            return verdict(
                False,
                True,
                f"the canary's predicted classes differ from {stable_env}'s by {shift:.2f} "
                f"(total variation) > {settings.max_class_shift:g} (canary.max_class_shift)",
            )
    if not final:
        return verdict(True, False, "within the thresholds so far")
    return verdict(True, True, "within the thresholds for the whole window")


# --- hosts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostTarget:
    """One host of an environment: the host agent with its settings, and how to reach it."""

    agent: plan.HostAgent
    target: ssh.SshTarget

    @property
    def label(self) -> str:
        return self.target.label


MakeTarget = Callable[[str, int, str | None], ssh.SshTarget]


def environment_hosts(environment: Environment, make_target: MakeTarget) -> list[HostTarget]:
    return [
        HostTarget(
            plan.HostAgent(
                environment.host_settings(host), environment.connection(host).remote_python
            ),
            make_target(host.address, host.port, host.user),
        )
        for host in environment.hosts
    ]


def host_command(host: HostTarget, title: str, command: str, *extra: str) -> dict[str, Any]:
    step = plan.PlanStep(title, argv=host.agent.command(command, *extra))
    return ssh.run_step(step, host.target)


def source_release(environment: Environment, hosts: Sequence[HostTarget]) -> tuple[str, HostTarget]:
    """The release every host of the source environment serves, and the host to fetch it from."""
    served: dict[str, str | None] = {}
    for host in hosts:
        state = host_command(host, f"read the release {host.label} serves", "status")
        current = state.get("current")
        serving = isinstance(current, str) and is_release_name(current) and state.get("serving")
        served[host.label] = str(current) if serving else None
    return agreed_release(environment.name, served), hosts[0]


def agreed_release(environment: str, served: dict[str, str | None]) -> str:
    """The one release all hosts serve, or an error naming each host and what it serves."""
    releases = set(served.values())
    if releases == {None}:
        raise ConfigError(
            f"environment {environment}: nothing is deployed (no host serves a release); "
            f"deploy it first: cxml redeploy --env {environment}"
        )
    if len(releases) > 1:
        each = ", ".join(
            f"{label} serves {release or 'nothing'}" for label, release in served.items()
        )
        raise DeployError(
            f"environment {environment}: its hosts do not serve one release ({each}), so which "
            f"one to promote is unclear; finish that deploy (cxml redeploy --env {environment}) "
            "and promote again"
        )
    release = next(iter(releases))
    assert release is not None
    return release


def version_release(
    environment: Environment, hosts: Sequence[HostTarget], version: str
) -> tuple[str, HostTarget]:
    """The kept release whose record names registered version `version`, and a source host that
    keeps it (for `cxml promote --version`)."""
    kept = []
    for host in hosts:
        state = host_command(host, f"read the releases {host.label} keeps", "status")
        entries = state.get("kept")
        kept.append(
            (host, [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else [])
        )
    return kept_release(environment.name, version, kept)


def kept_release(
    environment: str, version: str, kept: Sequence[tuple[H, Sequence[dict[str, Any]]]]
) -> tuple[str, H]:
    """The newest release a host keeps whose record names `version` (hosts in deploy.yaml's
    order), or an error naming the versions the environment keeps and how to add the wanted one."""
    for host, entries in kept:
        for entry in reversed(entries):  # newest last on the host
            release = entry.get("release")
            if str(entry.get("model_version")) != version or not isinstance(release, str):
                continue
            if is_release_name(release):
                return release, host
    versions = sorted(
        {str(e.get("model_version")) for _, entries in kept for e in entries},
        key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v),
    )
    plural = "s" if len(versions) > 1 else ""
    keeps = f"it keeps version{plural} {', '.join(versions)}" if versions else "it keeps none"
    raise ConfigError(
        f"environment {environment} keeps no release of registered version {version} ({keeps}); "
        f"deploy version {version} to {environment} first (cxml redeploy --env {environment} "
        f"--model <its model file> --version {version}), check it, then promote again"
    )


def fetch_release_record(host: HostTarget, release: str, work: Path) -> ReleaseInfo:
    """Only the release record (for a dry run: the plan names the model's sha256)."""
    local = work / release
    local.mkdir(parents=True, exist_ok=True)
    remote = f"{host.agent.settings.releases_dir}/{release}/{RELEASE_FILE_NAME}"
    batch = f'get "{remote}" "{local / RELEASE_FILE_NAME}"\n'
    step = plan.PlanStep(
        f"read the record of release {release} on {host.label}", channel="sftp", stdin=batch
    )
    ssh.run_step(step, host.target, echo_host=False)
    return load_bundle(local, verify=False).info


def promotion_plan(
    source: Environment,
    target: Environment,
    release: ReleaseInfo,
    source_labels: Sequence[str],
    *,
    kept: bool = False,
) -> list[str]:
    """What `cxml promote` would do, one line each (pure: --dry-run prints it)."""
    target_labels = [host.label for host in target.hosts]
    lines = [
        f"release {release.release} (model {release.model_name or '-'} version "
        f"{release.model_version}, sha256 {release.model_sha256}), {'kept' if kept else 'served'} by "
        f"{source.name} on "
        f"{', '.join(source_labels)}",
        f"target {target.name}: {', '.join(target_labels)} (the same bundle, no rebuild; "
        "uploaded only where it is not installed)",
    ]
    canary = target.canary
    if canary is None:
        lines.append(f"no canary configured for {target.name}: each host is switched in turn")
        return lines
    shift = "not compared" if canary.max_class_shift is None else f"{canary.max_class_shift:g}"
    lines += [
        f"canary on {target_labels[0]}: {canary.weight}% of the traffic for {canary.window:g} s, "
        f"/metrics read every {canary.interval:g} s",
        f"thresholds: at least {canary.min_requests} canary requests, error rate at most "
        f"{canary.max_error_rate_increase:.1%} above the current release's, p95 at most "
        f"{canary.max_p95_ratio:g}x, p99 at most {canary.max_p99_ratio:g}x, predicted-class "
        f"shift {shift}",
    ]
    if len(target_labels) > 1:
        lines.append(f"then {', '.join(target_labels[1:])} one at a time, once the canary passes")
    return lines


def fetch_bundle(host: HostTarget, release: str, work: Path) -> Path:
    """Copy the release's bundle directory from the host and check its SHA256SUMS."""
    local = work / release
    remote = f"{host.agent.settings.releases_dir}/{release}"
    batch = f'get -R "{remote}" "{local}"\n'
    step = plan.PlanStep(f"fetch release {release} from {host.label}", channel="sftp", stdin=batch)
    ssh.run_step(step, host.target, echo_host=False)
    load_bundle(local, verify=True)  # the same bytes the source serves, or an error
    return local


def canary_status_line(canary: dict[str, Any]) -> str:
    """The canary a host's status reports, in one line (`cxml redeploy --status`)."""
    if canary.get("problem"):
        return f"CANARY record unreadable: {canary['problem']}"
    lease = float(canary.get("lease_left_s") or 0.0)
    held = (
        f"its promotion's lease holds {lease:.0f} s more"
        if lease > 0
        else "its promotion stopped watching it: the next deploy or promote aborts it"
    )
    alive = "" if canary.get("alive", True) else " (its service is NOT running)"
    return (
        f"CANARY release {canary.get('release')}{alive} takes {canary.get('weight')}% of the "
        f"traffic next to {canary.get('stable')} since {canary.get('started_at') or '-'}; {held}"
    )


# --- the promotion ----------------------------------------------------------------------------


@dataclass
class PromotionLog:
    """Every step, for the job summary (markdown lines)."""

    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        info(line)
        self.lines.append(f"- {line}")


def upload_if_needed(host: HostTarget, release: ReleaseInfo, bundle: Path) -> str | None:
    """Upload the bundle unless the host holds the release; the staging dir, or None."""
    extras = sorted(set(manifest_checksums(bundle)) - {MODEL_FILE_NAME, RELEASE_FILE_NAME})
    deploy_plan = plan.plan_deploy(
        host.agent, release, str(bundle), secrets.token_hex(4), extra_files=extras
    )
    prepare_step, upload_step, _ = deploy_plan.steps
    prepared = ssh.run_step(prepare_step, host.target)
    if release.release in prepared.get("installed", []):
        info(f"- {host.label} already holds release {release.release}; no upload needed")
        return None
    try:
        ssh.run_step(upload_step, host.target, echo_host=False)
    except DeployError as exc:
        if deploy_plan.cleanup is not None:
            with contextlib.suppress(DeployError):
                ssh.run_step(deploy_plan.cleanup, host.target)
        raise DeployError(
            f"upload to {host.label} failed ({exc}); nothing was activated, promote again"
        ) from None
    return deploy_plan.staging_dir


def plain_switch(host: HostTarget, release: ReleaseInfo, bundle: Path) -> dict[str, Any]:
    """A deploy's activate on one host (start, check, switch, stop the old), then checked from
    here through its public URL."""
    staging = upload_if_needed(host, release, bundle)
    extra = [option("--release", release.release)]
    if staging is not None:
        extra.append(option("--staging", staging))
    result = host_command(host, f"switch {host.label} to {release.release}", "activate", *extra)
    verify_public(host.agent.settings, release.release)
    return result


def verify_public(settings: HostSettings, release: str) -> bool:
    """The public URL, asked from where cxml runs, serves `release` (the host checked it too);
    False when there is no public URL to ask."""
    if settings.public_url is None:
        return False
    try:
        wait_for_public(settings, release, timeout_s=30.0, in_a_row=3)
    except DeployError as exc:
        raise DeployError(f"checked from here: {exc}") from None
    return True


def run_canary(
    host: HostTarget,
    release: ReleaseInfo,
    bundle: Path,
    canary: CanarySettings,
    target_env: str,
    log: PromotionLog,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Canary on one host: start, watch, then promote or abort (raising with the reason)."""
    staging = upload_if_needed(host, release, bundle)
    extra = [
        option("--release", release.release),
        option("--weight", str(canary.weight)),
        option("--lease", f"{lease_s(canary):g}"),
    ]
    if staging is not None:
        extra.append(option("--staging", staging))
    started = host_command(
        host, f"start release {release.release} as a canary on {host.label}", "canary-start", *extra
    )
    if started.get("settled"):
        log.add(f"{host.label}: {started['settled']}")
    if not started.get("changed", True):
        log.add(f"{host.label} already serves release {release.release}; nothing to do")
        return started
    log.add(
        f"{host.label}: canary {release.release} takes {canary.weight}% next to "
        f"{started.get('stable')} for {canary.window:g} s"
    )
    try:
        verdict = watch_canary(host, canary, target_env, log, sleep)
    except CxmlError as exc:
        abort_canary(host, f"watching failed: {exc}", log)
        raise DeployError(f"canary of {release.release} aborted: {exc}") from None
    if not verdict.healthy:
        abort_canary(host, verdict.reason, log)
        raise DeployError(
            f"canary of {release.release} aborted on {host.label}: {verdict.reason}; "
            f"{verdict.stable.release} serves all the traffic again"
        )
    result = host_command(
        host, f"promote release {release.release} on {host.label}", "canary-promote"
    )
    verify_public(host.agent.settings, release.release)
    log.add(f"{host.label}: canary promoted to 100%, {started.get('stable')} drained and stopped")
    return result


def lease_s(canary: CanarySettings) -> float:
    """How long the host keeps the canary for this client without a read of /metrics: a client
    that stops reading (killed, cut off) frees the host for the next deploy this long after."""
    return 2 * canary.interval + 15.0


def class_check_warning(canary: CanarySettings, reading: Reading) -> str | None:
    """canary.max_class_shift needs cxml_predicted_class_total from both services; say so when a
    service does not export it, rather than pass the check silently."""
    if canary.max_class_shift is None:
        return None
    missing = [
        f"{side} release {release}"
        for side, release, snapshot in (
            ("the current", reading.stable_release, reading.stable),
            ("the canary", reading.canary_release, reading.canary),
        )
        if not snapshot.class_metric
    ]
    if not missing:
        return None
    return (
        f"canary.max_class_shift is set but {' and '.join(missing)} export no {CLASS_METRIC} on "
        "/metrics (served by an older cxml): the predicted classes are NOT compared in this "
        "canary; redeploy with this cxml to compare them"
    )


def watch_canary(
    host: HostTarget,
    canary: CanarySettings,
    target_env: str,
    log: PromotionLog,
    sleep: Callable[[float], None],
) -> Verdict:
    """Read both /metrics every interval for the window; the first abort, or the final verdict."""
    start = read_snapshots(host)
    problem = class_check_warning(canary, start)
    if problem is not None:
        warn(problem)
        log.lines.append(f"- warning: {problem}")
    deadline = time.monotonic() + canary.window
    while True:
        sleep(max(0.0, min(canary.interval, deadline - time.monotonic())))
        final = time.monotonic() >= deadline
        now = read_snapshots(host)
        verdict = judge_canary(
            figures(now.stable_release, now.stable.minus(start.stable)),
            figures(now.canary_release, now.canary.minus(start.canary)),
            canary,
            target_env,
            final=final,
        )
        log.add(progress_line(verdict))
        if verdict.decided:
            return verdict


@dataclass(frozen=True)
class Reading:
    stable_release: str
    stable: Snapshot
    canary_release: str
    canary: Snapshot


def read_snapshots(host: HostTarget) -> Reading:
    data = host_command(host, "read both services' /metrics", "canary-metrics")
    parts = []
    for side in ("stable", "canary"):
        service = data.get(side) or {}
        if service.get("text") is None:
            raise DeployError(
                f"the {side} service's /metrics could not be read: {service.get('problem')}"
            )
        parts.append((str(service.get("release")), parse_metrics(str(service["text"]))))
    (stable_release, stable), (canary_release, canary) = parts
    return Reading(stable_release, stable, canary_release, canary)


def progress_line(verdict: Verdict) -> str:
    def show(figures: ServiceFigures) -> str:
        p95 = f"{figures.p95_ms:.0f}" if figures.p95_ms is not None else "-"
        p99 = f"{figures.p99_ms:.0f}" if figures.p99_ms is not None else "-"
        return (
            f"{figures.release}: {figures.requests} requests, errors {figures.error_rate:.1%}, "
            f"p95 {p95} ms, p99 {p99} ms"
        )

    state = "ok" if verdict.healthy else "ABORT"
    return f"canary {state} ({verdict.reason}) | {show(verdict.canary)} | {show(verdict.stable)}"


def abort_canary(host: HostTarget, reason: str, log: PromotionLog) -> None:
    host_command(
        host, f"abort the canary on {host.label}", "canary-abort", option("--reason", reason)
    )
    log.add(f"{host.label}: canary aborted ({reason}); traffic back on the current release")


def promote_release(
    hosts: Sequence[HostTarget],
    release: ReleaseInfo,
    bundle: Path,
    canary: CanarySettings | None,
    target_env: str,
    log: PromotionLog,
) -> list[dict[str, Any]]:
    """The canary (if configured) on the first host, then the others one by one. A failure on a
    later host rolls the hosts already switched back, so the environment ends on one release."""
    results: list[dict[str, Any]] = []
    switched: list[HostTarget] = []
    for index, host in enumerate(hosts):
        try:
            if index == 0 and canary is not None:
                result = run_canary(host, release, bundle, canary, target_env, log)
            else:
                result = plain_switch(host, release, bundle)
                log.add(f"{host.label}: now serving release {release.release}")
        except CxmlError as exc:
            if not switched:
                raise
            raise roll_back(switched, host, exc, log) from None
        if result.get("changed", True):
            switched.append(host)
        results.append(result)
    return results


def roll_back(
    switched: Sequence[HostTarget], failed: HostTarget, exc: CxmlError, log: PromotionLog
) -> CxmlError:
    undone: list[str] = []
    stuck: list[str] = []
    for host in reversed(switched):
        try:
            host_command(host, f"roll {host.label} back", "rollback")
            undone.append(host.label)
        except CxmlError as rollback_exc:
            stuck.append(f"{host.label} ({rollback_exc})")
    after = f"rolled back {', '.join(undone)}" if undone else "no host rolled back"
    if stuck:
        after += f"; rolling back {'; '.join(stuck)} FAILED: run cxml redeploy --rollback there"
    log.add(f"{failed.label} failed; {after}")
    return type(exc)(f"{failed.label}: {exc}; promotion stopped, {after}", exit_code=exc.exit_code)

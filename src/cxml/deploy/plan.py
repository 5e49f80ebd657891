"""A deploy as data: may it go ahead (the gate), and the host commands it takes, in order.

No I/O (a forced gate only warns): a step holds the command run on the host, or an upload's sftp
batch; the executor (`cxml.deploy.ssh`) adds ssh or sftp, so the same plan is printed by
--dry-run, tested, and run.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from cxml.core.console import warn
from cxml.core.errors import ConfigError, GateError
from cxml.deploy.host.settings import HostSettings, option
from cxml.records.gate import GateResult
from cxml.records.release import (
    MANIFEST_FILE_NAME,
    MODEL_FILE_NAME,
    RELEASE_FILE_NAME,
    ReleaseInfo,
    is_release_name,
)

HOST_MODULE = "cxml.deploy.host"


@dataclass(frozen=True)
class PlanStep:
    title: str
    channel: Literal["ssh", "sftp"] = "ssh"
    argv: tuple[str, ...] = ()
    """The command run on the host (ssh); empty for an upload."""
    stdin: str | None = None
    """What the step feeds its channel: an upload's sftp batch."""


@dataclass(frozen=True)
class DeployPlan:
    release: str
    release_dir: str
    staging_dir: str
    steps: tuple[PlanStep, ...]
    cleanup: PlanStep | None = None
    """Run when the upload fails (else the host drops the stale upload on a later deploy)."""
    activate_installed: PlanStep | None = None
    """Activate without uploading, when the host already holds this release (a retry, a roll
    forward): releases are content-addressed, so the same name is the same content."""


@dataclass(frozen=True)
class HostAgent:
    """`python -m cxml.deploy.host` on the serving host, with its settings."""

    settings: HostSettings
    python: tuple[str, ...] = ("python3",)

    def command(self, command: str, *extra: str) -> tuple[str, ...]:
        return (*self.python, "-m", HOST_MODULE, command, *self.settings.to_argv(), *extra)


# --- the gate --------------------------------------------------------------------------------


def gate_problem(gate: GateResult | None, gate_path: str) -> str | None:
    """Why the gate does not allow a deploy, or None when it passed."""
    if gate is None:
        return f"{gate_path} not found: the gate has not run"
    if gate.passed:
        return None
    if gate.failed_rules:
        rule = gate.failed_rules[0]
        return f"the gate failed: rule '{rule.rule}' failed (value {rule.value})"
    return "the gate failed"


def check_gate(
    gate: GateResult | None, gate_path: str, force: bool, reason: str | None
) -> str | None:
    """Refuse a failed or missing gate unless forced with a reason; returns the recorded reason."""
    if force and not (reason and reason.strip()):
        raise ConfigError(
            '--force needs --reason "why this deploy skips the gate" (it is recorded on the host)'
        )
    problem = gate_problem(gate, gate_path)
    if problem is None:
        return reason.strip() if force and reason else None
    if not force:
        raise GateError(
            f'{problem}; refusing to deploy. Fix the model, or pass --force --reason "..."'
        )
    warn(f"{problem}; deploying anyway because of --force: {reason}")
    return reason.strip() if reason else None


@dataclass(frozen=True)
class JudgedModel:
    """What gate.json says it judged (None: not recorded, an older gate.json)."""

    sha256: str | None
    run_id: str | None


def model_mismatch(
    judged: JudgedModel, model_sha256: str, run_id: str | None, gate_path: str
) -> str | None:
    """Why the model about to ship is not the one the gate judged, or None when it is (or the
    gate does not say)."""
    if judged.sha256 and judged.sha256 != model_sha256:
        return (
            f"the model is not the one the gate judged: its sha256 is {model_sha256[:12]}, "
            f"{gate_path} judged {judged.sha256[:12]}"
        )
    if judged.run_id and run_id and judged.run_id != run_id:
        return (
            f"the model is not the one the gate judged: run.json names run {run_id}, "
            f"{gate_path} judged run {judged.run_id}"
        )
    return None


def check_model_binding(
    judged: JudgedModel | None, model_sha256: str, run_id: str | None, gate_path: str, force: bool
) -> None:
    """Refuse a model other than the judged one (a retrain after a passing gate), unless forced."""
    if judged is None:
        return
    if judged.sha256 is None and judged.run_id is None:
        warn(
            f"{gate_path} does not record which model it judged (an older cxml wrote it); "
            "re-run cxml evaluate to bind the gate to the model"
        )
        return
    problem = model_mismatch(judged, model_sha256, run_id, gate_path)
    if problem is None:
        return
    if not force:
        raise GateError(
            f"{problem}; refusing to deploy: re-run cxml evaluate on this model (or pass "
            '--force --reason "...")'
        )
    warn(f"{problem}; deploying anyway because of --force")


# --- the steps -------------------------------------------------------------------------------


def plan_deploy(
    agent: HostAgent,
    release: ReleaseInfo,
    local_bundle: str,
    nonce: str,
    extra_files: Sequence[str] = (),
) -> DeployPlan:
    """The steps of a deploy, in order: check the host, upload under a temporary name, activate."""
    if not is_release_name(release.release):
        raise ConfigError(
            f"release {release.release!r}: not a release name (one directory name of letters, "
            "digits, '.', '_', '-'); it is made by cxml.records.release.release_name"
        )
    settings = agent.settings
    staging = f"{settings.incoming_dir}/{release.release}.{nonce}"
    release_dir = f"{settings.releases_dir}/{release.release}"
    # SHA256SUMS goes last: its arrival marks the upload complete
    uploads = [
        (f"{local_bundle}/{name}", name)
        for name in (MODEL_FILE_NAME, RELEASE_FILE_NAME, *extra_files, MANIFEST_FILE_NAME)
    ]
    activate = [option("--release", release.release), option("--staging", staging)]
    if release.forced_reason:
        activate.append(option("--forced-reason", release.forced_reason))
    steps = (
        PlanStep("check the host and prepare its layout", argv=agent.command("prepare")),
        PlanStep(
            f"upload the bundle to {staging}",
            channel="sftp",
            stdin=sftp_upload_batch(uploads, staging),
        ),
        PlanStep(
            f"verify sha256, install as {release_dir}, start it, check /healthz and /version, "
            "switch the proxy, stop the old one, keep the last releases",
            argv=agent.command("activate", *activate),
        ),
    )
    cleanup = PlanStep(
        "discard the partial upload",
        argv=agent.command("discard", option("--staging", staging)),
    )
    without_upload = [option("--release", release.release), *activate[2:]]
    activate_installed = PlanStep(
        f"verify the installed {release_dir} again, start it, check /healthz and /version, "
        "switch the proxy, stop the old one, keep the last releases",
        argv=agent.command("activate", *without_upload),
    )
    return DeployPlan(release.release, release_dir, staging, steps, cleanup, activate_installed)


def plan_status(agent: HostAgent) -> PlanStep:
    return PlanStep("read the host's releases", argv=agent.command("status"))


def plan_rollback(agent: HostAgent) -> DeployPlan:
    step = PlanStep(
        "start the previous release, check it, switch the proxy back, stop the current one",
        argv=agent.command("rollback"),
    )
    return DeployPlan("previous", f"{agent.settings.root}/previous", "", (step,))


def sftp_upload_batch(files: Sequence[tuple[str, str]], remote_dir: str) -> str:
    """sftp commands: make `remote_dir`, then put each (local, remote name) into it."""
    lines = [f"mkdir {_sftp_quote(remote_dir)}"]
    lines += [
        f"put {_sftp_quote(local)} {_sftp_quote(remote_dir + '/' + name)}" for local, name in files
    ]
    return "\n".join(lines) + "\n"


def _sftp_quote(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- the dry run -----------------------------------------------------------------------------


def render_plan(
    plan: DeployPlan,
    release: ReleaseInfo | None,
    *,
    destination: str,
    command_line: Callable[[PlanStep], Sequence[str]],
) -> str:
    """The plan for a person; `command_line` is what the executor would run for a step."""
    lines = [f"plan (dry run, nothing is done): deploy to {destination}"]
    if release is not None:
        lines += [
            f"  release: {release.release} (model {release.model_name or '-'} version "
            f"{release.model_version}, sha256 {release.model_sha256[:16]}...)",
            f"  release dir: {plan.release_dir}",
            f"  gate: {release.gate_decision or 'missing'}"
            + (f" (forced: {release.forced_reason})" if release.forced_reason else ""),
        ]
    for number, step in enumerate(plan.steps, start=1):
        lines.append(f"  {number}. {step.title}")
        lines.append(f"     $ {shlex.join(command_line(step))}")
        for command in (step.stdin or "").splitlines():
            lines.append(f"       sftp> {command}")
    return "\n".join(lines)

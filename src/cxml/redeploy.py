"""`cxml redeploy`: upload a gated release over SSH, swap the serving hosts to it, or roll back.

Where to deploy comes from deploy.yaml's environment (`--env NAME`), or from the flags alone;
with `--env`, a flag given overrides the environment, which overrides `serve:`, which overrides
the default. The hosts of an environment are deployed one at a time, each verified through its
proxy before the next; a failure rolls the hosts already switched back.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shlex
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from cxml.core import env, ghactions
from cxml.core.console import info, run_entry_point, warn
from cxml.core.errors import ConfigError, CxmlError, DeployError
from cxml.deploy import bundle, keys, plan, ssh
from cxml.deploy.config import DEFAULT_DEPLOY_FILE, load_deploy_config
from cxml.deploy.host.settings import HostSettings, add_arguments
from cxml.deploy.promote import canary_status_line, verify_public
from cxml.records.gate import GateResult, read_gate
from cxml.records.metrics import read_optional_metrics
from cxml.records.release import (
    MODEL_FILE_NAME,
    RELEASE_FILE_NAME,
    ReleaseInfo,
    ServingConfig,
    manifest_checksums,
    read_model_metadata,
    save_bundle,
    sha256_file,
)
from cxml.records.run import read_run
from cxml.tracking.registry import CHAMPION, deploy_aliases

HOST_SETUP = """\
serving host, once: install cxml (python3 -m pip install 'cxml[serve]') so `--remote-python` runs
`-m cxml.deploy.host`; give the deploy key's user write access to --root; and let nginx proxy to
the upstream file each deploy rewrites (--proxy-config), inside its http {} block:

    include /etc/nginx/cxml-upstream.conf;      # upstream cxml_serving { server 127.0.0.1:PORT; }
    server {
        listen 80;
        location / {
            proxy_pass http://cxml_serving;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }

The host records releases under ROOT/releases, the live one in ROOT/current (and ROOT/previous),
a history in ROOT/state.json; `python3 -m cxml.deploy.host status --root ROOT` prints it."""


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    destinations = resolve_destinations(args, given_options(argv))
    problem = None if args.status else unverified_switch(destinations, args)
    if problem is not None and not args.dry_run:
        raise ConfigError(problem)
    if args.accept_new_host_key:
        warn(
            "--accept-new-host-key: trusting whatever host key "
            f"{', '.join(d.label for d in destinations)} show on first connect"
        )
    release = None if args.rollback or args.status else build_release(args)
    if args.dry_run:
        if problem is not None:
            warn(f"a real deploy would be refused: {problem}")
        info("\n".join(dry_run(args, destination, release) for destination in destinations))
        return 0
    with (
        ssh.interrupt_on_termination(),
        keys.credentials_from_args(args) as creds,
        tempfile.TemporaryDirectory(prefix="cxml-release-") as work,
    ):
        targets = [(d, destination_target(d, creds, args)) for d in destinations]
        if args.status:
            show_status(targets)
            return 0
        if release is None:
            results = roll_back_all(targets)
        else:
            examples = demo_examples(args)
            results = rollout(targets, release, args.model, Path(work), examples)
    report_rollout(results)
    if not args.no_alias and results:
        aliases = deploy_aliases(args.env, args.alias)
        move_alias(results[-1][1].get("record", {}), aliases, tracking_required(args))
    return 0


# --- where to deploy ------------------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    """One serving host of a deploy: how to reach it and the settings its host side runs with."""

    host: str
    port: int
    user: str | None
    agent: plan.HostAgent

    @property
    def label(self) -> str:
        address = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{address}:{self.port}" if self.user else f"{address}:{self.port}"


HOST_OPTIONS = {
    "root": "root",
    "mode": "mode",
    "keep": "keep",
    "health_timeout": "health_timeout_s",
    "lock_timeout": "lock_timeout_s",
    "drain": "drain_s",
    "public_url": "public_url",
    "proxy_config": "proxy_config",
    "proxy_reload": "proxy_reload",
    "proxy_check": "proxy_check",
    "docker_command": "docker",
    "image": "image",
    "docker_build_context": "docker_build_context",
    "docker_build_arg": "docker_build_args",
    "serve_args": "serve_args",
}
"""redeploy option (argparse dest) -> the HostSettings field it sets."""


def given_options(argv: Sequence[str] | None) -> set[str]:
    """The options written on the command line (argparse dests), defaults aside."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    return set(vars(parser.parse_args(argv)))


def resolve_destinations(args: argparse.Namespace, given: set[str]) -> list[Destination]:
    """The hosts to deploy to: the environment's (flags override it), or the one --host."""
    flag_agent = host_agent(args)
    if not args.env:
        if not args.host:
            raise ConfigError(
                "say where to deploy: --env NAME (an environment of deploy.yaml) or --host HOST"
            )
        return [Destination(args.host, args.port, args.user, flag_agent)]
    if args.host:
        raise ConfigError(
            f"--host and --env {args.env}: pick one; the environment's hosts are in "
            f"{args.config}, and a rollout deploys them all"
        )
    environment = load_deploy_config(args.config).environment(args.env)
    return [
        Destination(
            host=host.address,
            port=args.port if "port" in given else host.port,
            user=args.user if "user" in given else host.user,
            agent=plan.HostAgent(
                with_flags(environment.host_settings(host), flag_agent.settings, given),
                flag_agent.python
                if "remote_python" in given
                else environment.connection(host).remote_python,
            ),
        )
        for host in environment.hosts
    ]


def with_flags(settings: HostSettings, flags: HostSettings, given: set[str]) -> HostSettings:
    """The environment's settings, each one a flag was given for replaced by the flag's."""
    changes = {
        field: getattr(flags, field) for dest, field in HOST_OPTIONS.items() if dest in given
    }
    return replace(settings, **changes)


def unverified_switch(destinations: Sequence[Destination], args: argparse.Namespace) -> str | None:
    """Why a deploy could end with the proxy still on the old release, or None when it cannot."""
    if args.no_proxy:
        if args.env:
            return f"--no-proxy is for a single --host without a proxy; {args.env} has a proxy"
        return None
    for destination in destinations:
        settings = destination.agent.settings
        where = f"{destination.label}: " if args.env else ""
        if settings.proxy_config is None:
            return (
                f"{where}no proxy to switch: without one nginx keeps serving the old release. "
                "Pass --proxy-config (the nginx upstream file the host rewrites) or deploy with "
                "--env NAME and deploy.yaml's serve.proxy.upstream_file (--no-proxy: a host "
                "that serves without a proxy)"
            )
        if settings.public_url is None:
            return (
                f"{where}the switch cannot be verified: a deploy succeeds only when the public "
                "URL answers /version with the new release through the proxy. Set --public-url "
                "(serve.proxy.public_url in deploy.yaml)"
            )
    return None


# --- the release ----------------------------------------------------------------------------


def build_release(args: argparse.Namespace) -> ReleaseInfo:
    """The release record of the model, once the gate allows it (or --force says why not)."""
    fill_paths_from_params(args)
    gate = read_gate(args.gate) if Path(args.gate).exists() else None
    forced_reason = plan.check_gate(gate, args.gate, args.force, args.reason)
    eval_metrics = read_optional_metrics(args.metrics, step="evaluate")
    model_metadata = read_model_metadata(args.model)  # also checks the file is a cxml model
    model_sha256 = sha256_file(args.model)
    run = read_run(args.run_info)
    run_id = run.run_id if run is not None else None
    plan.check_model_binding(judged_model(gate), model_sha256, run_id, args.gate, args.force)
    return bundle.describe_release(
        model_sha256,
        model_metadata,
        run,
        gate,
        bundle.release_metrics(eval_metrics, gate),
        version=args.version,
        forced_reason=forced_reason,
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        serving=ServingConfig(max_batch=args.max_batch),
    )


def demo_examples(args: argparse.Namespace) -> dict[str, bytes]:
    """A few test-split images (and their index) the bundle ships for the demo page."""
    from cxml.core.config import load_params

    return bundle.bundle_example_files(load_params(args.params).data)


def judged_model(gate: GateResult | None) -> plan.JudgedModel | None:
    """The model gate.json judged (its fields are None in a gate.json from an older cxml)."""
    if gate is None:
        return None
    return plan.JudgedModel(sha256=gate.model_sha256, run_id=gate.model_run_id)


def fill_paths_from_params(args: argparse.Namespace) -> None:
    """Files not named on the command line are where params.yaml's `outputs` put them."""
    from cxml.core.config import load_params

    outputs = load_params(args.params).outputs
    args.model = args.model or outputs.model
    args.run_info = args.run_info or outputs.run_info
    args.gate = args.gate or outputs.gate
    args.metrics = args.metrics or str(outputs.eval_metrics)


# --- the rollout ----------------------------------------------------------------------------

Target = tuple[Destination, ssh.SshTarget]
Result = tuple[Destination, dict[str, Any]]


def rollout(
    targets: Sequence[Target],
    release: ReleaseInfo,
    model: str,
    work: Path,
    examples: dict[str, bytes] | None = None,
) -> list[Result]:
    """Deploy to each host in turn, each verified through its proxy before the next; on a
    failure, roll back the hosts already switched, so no environment ends on two releases."""
    local = save_bundle(work / release.release, model, release, examples)
    switched: list[Target] = []
    results: list[Result] = []
    for destination, target in targets:
        try:
            result = deploy(destination, target, release, str(local.directory))
            if result.get("changed", True):
                switched.append((destination, target))
            verify_from_here(destination, str(result.get("release")))
        except CxmlError as exc:
            raise rollout_failure(destination, exc, switched, len(targets)) from None
        results.append((destination, result))
    return results


def deploy(
    destination: Destination, target: ssh.SshTarget, release: ReleaseInfo, local_bundle: str
) -> dict[str, Any]:
    extra = sorted(set(manifest_checksums(local_bundle)) - {MODEL_FILE_NAME, RELEASE_FILE_NAME})
    deploy_plan = plan.plan_deploy(
        destination.agent, release, local_bundle, secrets.token_hex(4), extra
    )
    info(f"deploying release {release.release} to {target.label}:{deploy_plan.release_dir}")
    return execute_deploy(deploy_plan, target)


def execute_deploy(deploy_plan: plan.DeployPlan, target: ssh.SshTarget) -> dict[str, Any]:
    prepare_step, upload_step, activate_step = deploy_plan.steps
    prepared = ssh.run_step(prepare_step, target)
    if deploy_plan.activate_installed is not None and deploy_plan.release in prepared.get(
        "installed", []
    ):
        info(f"- {target.label} already holds release {deploy_plan.release}; no upload needed")
        return ssh.run_step(deploy_plan.activate_installed, target)
    try:
        ssh.run_step(upload_step, target, echo_host=False)
    except DeployError as exc:
        if deploy_plan.cleanup is not None:
            with contextlib.suppress(DeployError):
                ssh.run_step(deploy_plan.cleanup, target)
        raise DeployError(
            f"upload to {target.label} was interrupted or failed ({exc}); nothing was "
            "activated, deploy again"
        ) from None
    return ssh.run_step(activate_step, target)


def verify_from_here(destination: Destination, release: str) -> None:
    """The public URL, from where cxml runs, names the new release (the host checked it too)."""
    settings = destination.agent.settings
    if verify_public(settings, release):
        info(f"- {settings.public_url} serves release {release}")


def rollout_failure(
    failed: Destination, exc: CxmlError, switched: Sequence[Target], hosts: int
) -> CxmlError:
    """Roll the switched hosts back (last first); the error says where every host is."""
    if hosts == 1 and not switched:
        return exc
    undone: list[str] = []
    stuck: list[str] = []
    for destination, target in reversed(switched):
        info(f"rolling {destination.label} back: the rollout failed on {failed.label}")
        try:
            ssh.run_step(plan.plan_rollback(destination.agent).steps[0], target)
            undone.append(destination.label)
        except CxmlError as rollback_exc:
            stuck.append(f"{destination.label} ({rollback_exc})")
    after = f"rolled back {', '.join(undone)}" if undone else "no host had been switched"
    if stuck:
        after += (
            f"; rolling back {'; '.join(stuck)} FAILED: the hosts are on different releases, "
            "run cxml redeploy --rollback for those hosts"
        )
    return type(exc)(f"{failed.label}: {exc}; rollout stopped, {after}", exit_code=exc.exit_code)


def roll_back_all(targets: Sequence[Target]) -> list[Result]:
    """Every host back to its previous release, one at a time, each verified."""
    results: list[Result] = []
    for destination, target in targets:
        if len(targets) > 1:
            info(f"rolling back {destination.label}")
        try:
            result = ssh.run_step(plan.plan_rollback(destination.agent).steps[0], target)
            verify_from_here(destination, str(result.get("release")))
        except CxmlError as exc:
            done = ", ".join(d.label for d, _ in results) or "none"
            raise type(exc)(
                f"{destination.label}: {exc}; hosts rolled back before it: {done}",
                exit_code=exc.exit_code,
            ) from None
        results.append((destination, result))
    return results


def show_status(targets: Sequence[Target]) -> None:
    """The release each host serves, from its own record."""
    for destination, target in targets:
        state = ssh.run_step(plan.plan_status(destination.agent), target)
        serving = "serving" if state.get("serving") else "NOT serving"
        info(
            f"{destination.label}: release {state.get('current') or '-'} ({serving}), previous "
            f"{state.get('previous') or '-'}, {len(state.get('releases') or [])} kept"
        )
        for line in service_lines(state):
            info(f"  {line}")
        if isinstance(state.get("canary"), dict):
            info(f"  {canary_status_line(state['canary'])}")


def service_lines(state: dict[str, Any]) -> list[str]:
    """One line per service the host records, and one per process or container no record owns."""
    lines = []
    for service in state.get("services") or []:
        if not isinstance(service, dict):
            continue
        where = f"pid {service.get('pid')}" if service.get("pid") else service.get("container")
        alive = "running" if service.get("alive") else "NOT running"
        current = ", current" if service.get("current") else ""
        lines.append(
            f"service of {service.get('release')}: {service.get('mode')} ({where}), "
            f"port {service.get('port')}, {alive}{current}"
        )
    for orphan in state.get("orphans") or []:
        if not isinstance(orphan, dict):
            continue
        what = (
            f"process {orphan['pid']}"
            if "pid" in orphan
            else f"container {orphan.get('container')}"
        )
        release = f" of release {orphan['release']}" if orphan.get("release") else ""
        lines.append(f"ORPHAN {what}{release}: no record owns it; the next deploy stops it")
    return lines


def report_rollout(results: Sequence[Result]) -> None:
    for destination, result in results:
        report_outputs(
            result,
            ssh.SshTarget(destination.host, destination.port, destination.user),
            destination.agent.settings.public_url,
        )


# --- dry run and credentials ----------------------------------------------------------------


def dry_run(args: argparse.Namespace, destination: Destination, release: ReleaseInfo | None) -> str:
    """The plan, with the ssh commands it would run; the key is named, never read."""
    target = destination_target(destination, keys.dry_run_credentials(args), args)
    deploy_plan = (
        plan.plan_rollback(destination.agent)
        if release is None
        else plan.plan_deploy(destination.agent, release, "<bundle dir>", "<nonce>")
    )
    settings = destination.agent.settings
    return plan.render_plan(
        deploy_plan,
        release,
        destination=f"{target.label}, root {settings.root}, {settings.mode} mode",
        command_line=partial(ssh.local_argv, target),
    )


def known_hosts_source(args: argparse.Namespace) -> str:
    if args.known_hosts_file:
        return f"--known-hosts-file {args.known_hosts_file}"
    if args.known_hosts:
        return "--known-hosts"
    return f"${env.CXML_KNOWN_HOSTS} (the redeploy action's known-hosts input)"


def destination_target(
    destination: Destination, creds: keys.SshCredentials, args: argparse.Namespace
) -> ssh.SshTarget:
    """keys.ssh_target with what only a deploy has: the upload limit, and where known_hosts came
    from for the message when a host key does not match."""
    return replace(
        keys.ssh_target(creds, args, destination.host, destination.port, destination.user),
        upload_limit_kbit_s=args.upload_limit_kbit,
        known_hosts_source=known_hosts_source(args),
    )


def host_agent(args: argparse.Namespace) -> plan.HostAgent:
    try:
        python = tuple(shlex.split(args.remote_python))
    except ValueError as exc:
        raise ConfigError(f"--remote-python {args.remote_python!r}: {exc}") from None
    if not python:
        raise ConfigError("--remote-python: needs a command")
    return plan.HostAgent(HostSettings.from_args(args), python)


# --- after the switch -----------------------------------------------------------------------


def move_alias(
    record: dict[str, Any], aliases: str | tuple[str, ...], required: bool = True
) -> None:
    """Point the registry aliases at the served model version (see registry.move_release_aliases)."""
    from cxml.tracking import registry

    registry.move_release_aliases(
        record, (aliases,) if isinstance(aliases, str) else aliases, required=required
    )


def tracking_required(args: argparse.Namespace) -> bool:
    """params.yaml's tracking.required (see registry.tracking_required)."""
    from cxml.tracking import registry

    return registry.tracking_required(args.params)


def report_outputs(
    result: dict[str, Any], target: ssh.SshTarget, public_url: str | None = None
) -> None:
    record = result.get("record", {})
    release = str(result.get("release"))
    previous = result.get("previous") or ""
    ghactions.set_output("release", release)
    ghactions.set_output("version", release)
    ghactions.set_output("model-version", str(record.get("model_version", "")))
    ghactions.set_output("previous-release", str(previous))
    if public_url:
        ghactions.set_output("url", public_url)
    version = record.get("model_version")
    if result.get("changed", True):
        message = f"{target.host} is now serving release {release} (model version {version})"
    else:
        message = (
            f"release {release} (model version {version}) is already serving on {target.host};"
            " nothing to do"
        )
    info(message + (f"; previous release {previous}" if previous else ""))
    ghactions.append_summary(
        f"### cxml redeploy\n\n{message}."
        + (f" Previous release: `{previous}`." if previous else "")
    )


# --- command line -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxml redeploy",
        description=__doc__,
        epilog=HOST_SETUP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_argument_group("where (deploy.yaml, or flags alone)")
    where.add_argument(
        "--env",
        help="deploy to this environment of deploy.yaml (its hosts, one at a time, and its "
        "settings); a flag given overrides the environment's value",
    )
    where.add_argument(
        "--config",
        default=DEFAULT_DEPLOY_FILE,
        help=f"deploy.yaml (default ./{DEFAULT_DEPLOY_FILE})",
    )
    where.add_argument(
        "--no-proxy",
        action="store_true",
        help="flag mode only: the host has no proxy to switch (the service is reached on its "
        "own port); without it a deploy needs --proxy-config and --public-url",
    )
    ssh_group = parser.add_argument_group("ssh")
    ssh_group.add_argument("--host", help="serving host name or address (without --env)")
    ssh_group.add_argument("--user", help="SSH user (default: the SSH client's default)")
    ssh_group.add_argument("--port", type=int, default=22, help="SSH port (default 22)")
    keys.add_credential_arguments(ssh_group)
    ssh_group.add_argument(
        "--upload-limit-kbit", type=int, help="limit the upload bandwidth (Kbit/s)"
    )
    release = parser.add_argument_group("release")
    release.add_argument("--params", default=None, help="params file (default: params.yaml)")
    release.add_argument("--model", help="model file (default: params.yaml outputs.model)")
    release.add_argument("--run-info", help="run.json from train (default: outputs.run_info)")
    release.add_argument("--gate", help="gate.json from evaluate (default: outputs.gate)")
    release.add_argument(
        "--metrics", help="metrics recorded with the release (default: metrics/eval.json)"
    )
    release.add_argument(
        "--version", help="model version to serve (default: run.json's model_version)"
    )
    release.add_argument(
        "--force", action="store_true", help="deploy although the gate failed or is missing"
    )
    release.add_argument(
        "--reason", help="why --force is used (recorded on the host and in the release)"
    )
    release.add_argument(
        "--max-batch",
        type=int,
        default=ServingConfig.max_batch,
        help=f"most images per /predict request (default {ServingConfig.max_batch})",
    )
    release.add_argument(
        "--alias",
        help=f"a registry alias moved on success, besides the environment's own (with --env E: "
        f"alias E, and {CHAMPION} for production; without --env: {CHAMPION})",
    )
    release.add_argument("--no-alias", action="store_true", help="do not move the registry alias")
    host = add_arguments(parser)
    host.add_argument(
        "--remote-python", default="python3", help="Python with cxml installed on the host"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (host, release dir, commands); do nothing",
    )
    parser.add_argument(
        "--rollback",
        action="store_true",
        help="switch the host (with --env: every host) back to its previous release",
    )
    parser.add_argument(
        "--status", action="store_true", help="print the release each host serves; change nothing"
    )
    return parser


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))

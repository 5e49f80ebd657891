"""`cxml redeploy`: upload a gated release over SSH, swap the serving host to it, or roll back."""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shlex
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from cxml.core import env, ghactions
from cxml.core.console import info, run_entry_point, warn
from cxml.core.errors import ConfigError, DeployError, TrackingError
from cxml.deploy import bundle, keys, plan, ssh
from cxml.deploy.host.settings import HostSettings, add_arguments
from cxml.records.gate import read_gate
from cxml.records.metrics import read_optional_metrics
from cxml.records.release import (
    ReleaseInfo,
    ServingConfig,
    read_model_metadata,
    save_bundle,
    sha256_file,
)
from cxml.records.run import read_run
from cxml.tracking.registry import CHAMPION

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
    agent = host_agent(args)
    if args.accept_new_host_key:
        warn(
            f"--accept-new-host-key: trusting whatever host key {args.host} shows on first connect"
        )
    release = None if args.rollback else build_release(args)
    if args.dry_run:
        info(dry_run(args, agent, release))
        return 0
    with (
        ssh.interrupt_on_termination(),
        ssh_target(args) as target,
        tempfile.TemporaryDirectory(prefix="cxml-release-") as work,
    ):
        if release is None:
            result = ssh.run_step(plan.plan_rollback(agent).steps[0], target)
        else:
            result = deploy(agent, target, release, args.model, Path(work))
    report_outputs(
        result, replace(target, key_file=None, identity_agent=None), agent.settings.public_url
    )
    if not args.no_alias:
        move_alias(result.get("record", {}), args.alias)
    return 0


# --- the release ----------------------------------------------------------------------------


def build_release(args: argparse.Namespace) -> ReleaseInfo:
    """The release record of the model, once the gate allows it (or --force says why not)."""
    fill_paths_from_params(args)
    gate = read_gate(args.gate) if Path(args.gate).exists() else None
    forced_reason = plan.check_gate(gate, args.gate, args.force, args.reason)
    eval_metrics = read_optional_metrics(args.metrics, step="evaluate")
    model_metadata = read_model_metadata(args.model)  # also checks the file is a cxml model
    return bundle.describe_release(
        sha256_file(args.model),
        model_metadata,
        read_run(args.run_info),
        gate,
        bundle.release_metrics(eval_metrics, gate),
        version=args.version,
        forced_reason=forced_reason,
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        serving=ServingConfig(max_batch=args.max_batch),
    )


def fill_paths_from_params(args: argparse.Namespace) -> None:
    """Files not named on the command line are where params.yaml's `outputs` put them."""
    from cxml.core.config import load_params

    outputs = load_params(args.params).outputs
    args.model = args.model or outputs.model
    args.run_info = args.run_info or outputs.run_info
    args.gate = args.gate or outputs.gate
    args.metrics = args.metrics or str(outputs.eval_metrics)


# --- the deploy -----------------------------------------------------------------------------


def deploy(
    agent: plan.HostAgent, target: ssh.SshTarget, release: ReleaseInfo, model: str, work: Path
) -> dict[str, Any]:
    local = save_bundle(work / release.release, model, release)
    deploy_plan = plan.plan_deploy(agent, release, str(local.directory), secrets.token_hex(4))
    info(f"deploying release {release.release} to {target.label}:{deploy_plan.release_dir}")
    return execute_deploy(deploy_plan, target)


def execute_deploy(deploy_plan: plan.DeployPlan, target: ssh.SshTarget) -> dict[str, Any]:
    prepare_step, upload_step, activate_step = deploy_plan.steps
    ssh.run_step(prepare_step, target)
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


def dry_run(args: argparse.Namespace, agent: plan.HostAgent, release: ReleaseInfo | None) -> str:
    """The plan, with the ssh commands it would run; the key is named, never read."""
    key_label = args.ssh_key_file or (
        f"<key from ${env.CXML_SSH_KEY}>" if env.get(env.CXML_SSH_KEY) else None
    )
    target = target_from_args(args, key_label, "<known_hosts from input>")
    deploy_plan = (
        plan.plan_rollback(agent)
        if release is None
        else plan.plan_deploy(agent, release, "<bundle dir>", "<nonce>")
    )
    settings = agent.settings
    return plan.render_plan(
        deploy_plan,
        release,
        destination=f"{target.label}, root {settings.root}, {settings.mode} mode",
        command_line=partial(ssh.local_argv, target),
    )


@contextlib.contextmanager
def ssh_target(args: argparse.Namespace) -> Iterator[ssh.SshTarget]:
    """The SSH target: known_hosts in a private temp dir, key material in a short-lived agent."""
    with keys.credential_files(
        key_file=args.ssh_key_file,
        key_material=env.get(env.CXML_SSH_KEY),
        known_hosts=args.known_hosts or env.get(env.CXML_KNOWN_HOSTS),
        known_hosts_file=args.known_hosts_file,
        accept_new_host_key=args.accept_new_host_key,
    ) as creds:
        yield target_from_args(
            args, creds.key_file, creds.known_hosts_file, identity_agent=creds.identity_agent
        )


def target_from_args(
    args: argparse.Namespace,
    key_file: str | None,
    known_hosts_file: str,
    *,
    identity_agent: str | None = None,
) -> ssh.SshTarget:
    return ssh.SshTarget(
        host=args.host,
        port=args.port,
        user=args.user,
        key_file=key_file,
        identity_agent=identity_agent,
        known_hosts_file=known_hosts_file,
        accept_new_host_key=args.accept_new_host_key,
        upload_limit_kbit_s=args.upload_limit_kbit,
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


def move_alias(record: dict[str, Any], alias: str) -> None:
    """Point the registry alias at the served model version; a release without one is only noted."""
    name, version = record.get("model_name"), record.get("model_version")
    if not name or not version or version == "local":
        info(f"registry alias {alias} not moved: the release names no registered model version")
        return
    from cxml.tracking import registry

    uri = env.get(env.MLFLOW_TRACKING_URI) or record.get("tracking_uri")
    try:
        registry.set_model_alias(uri, str(name), str(version), alias)
    except Exception as exc:  # mlflow raises many types; the release is live either way
        raise TrackingError(
            f"release {record.get('release')} is live, but moving registry alias {alias} to {name} "
            f"version {version} failed ({exc}); set the alias by hand"
        ) from None
    info(f"registry alias {alias} -> {name} version {version}")


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
    verb = "now serving" if result.get("changed", True) else "already serving"
    message = (
        f"{target.host} is {verb} release {release} (model version {record.get('model_version')})"
    )
    info(message + (f"; previous release {previous}" if previous else ""))
    ghactions.append_summary(
        f"### cxml redeploy\n\n{message}."
        + (f" Previous release: `{previous}`." if previous else "")
    )


# --- command line -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cxml redeploy",
        description=__doc__,
        epilog=HOST_SETUP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ssh_group = parser.add_argument_group("ssh")
    ssh_group.add_argument("--host", required=True, help="serving host name or address")
    ssh_group.add_argument("--user", help="SSH user (default: the SSH client's default)")
    ssh_group.add_argument("--port", type=int, default=22, help="SSH port (default 22)")
    ssh_group.add_argument(
        "--ssh-key-file", help=f"private key file (default: the key in ${env.CXML_SSH_KEY})"
    )
    ssh_group.add_argument(
        "--known-hosts", help=f"known_hosts lines for the host (default ${env.CXML_KNOWN_HOSTS})"
    )
    ssh_group.add_argument("--known-hosts-file", help="a known_hosts file to trust")
    ssh_group.add_argument(
        "--accept-new-host-key",
        action="store_true",
        help="trust the host key seen on first connect (warned)",
    )
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
        "--alias", default=CHAMPION, help=f"registry alias moved on success (default {CHAMPION})"
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
        "--rollback", action="store_true", help="switch the host back to its previous release"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))

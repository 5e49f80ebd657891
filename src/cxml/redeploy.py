"""`cxml redeploy`: upload a gated release over SSH, swap the serving host to it, or roll back."""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import shlex
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cxml.core import env, files, ghactions
from cxml.core.console import info, run_entry_point, warn
from cxml.core.errors import DeployError
from cxml.deploy import bundle, ssh

DEFAULT_ROOT = "/srv/cxml"
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
CHAMPION_ALIAS = "champion"


@dataclass(frozen=True)
class DeployOptions:
    """Everything a deploy needs except secrets (those stay in files named by the SSH target)."""

    target: ssh.SshTarget
    root: str
    mode: str
    keep: int
    health_timeout_s: float
    lock_timeout_s: float
    drain_s: float
    public_url: str | None
    proxy_config: str | None
    proxy_reload: str
    proxy_check: str
    remote_python: str
    docker_command: str
    image: str
    docker_build_context: str | None
    docker_build_args: tuple[str, ...]
    serve_args: str
    upload_limit_kbit_s: int | None


@dataclass(frozen=True)
class PlanStep:
    title: str
    argv: tuple[str, ...]
    stdin: str | None = None


@dataclass(frozen=True)
class DeployPlan:
    release: str
    release_dir: str
    staging_dir: str
    steps: tuple[PlanStep, ...]


# --- pure: gate, release record, plan ------------------------------------------------------


def gate_problem(gate: Any, gate_path: str) -> str | None:
    """Why the gate does not allow a deploy, or None when it passed."""
    if gate is None:
        return f"{gate_path} not found: the gate has not run"
    if not isinstance(gate, dict) or gate.get("decision") not in ("pass", "fail"):
        return f"{gate_path} has no decision (pass or fail)"
    if gate["decision"] == "pass":
        return None
    failed = [r for r in gate.get("rules", []) if isinstance(r, dict) and r.get("result") == "fail"]
    if failed:
        rule = failed[0]
        return f"the gate failed: rule '{rule.get('rule')}' failed (value {rule.get('value')})"
    return "the gate failed"


def check_gate(gate: Any, gate_path: str, force: bool, reason: str | None) -> str | None:
    """Refuse a failed or missing gate unless forced with a reason; returns the recorded reason."""
    if force and not (reason and reason.strip()):
        raise DeployError(
            '--force needs --reason "why this deploy skips the gate" (it is recorded on the host)'
        )
    problem = gate_problem(gate, gate_path)
    if problem is None:
        return reason.strip() if force and reason else None
    if not force:
        raise DeployError(
            f'{problem}; refusing to deploy. Fix the model, or pass --force --reason "..."'
        )
    warn(f"{problem}; deploying anyway because of --force: {reason}")
    return reason.strip() if reason else None


def describe_release(
    model_sha256: str,
    model_metadata: dict[str, Any],
    run_info: dict[str, Any],
    gate: Any,
    metrics: dict[str, Any],
    *,
    version: str | None,
    forced_reason: str | None,
    created_at: str,
    serving: bundle.ServingConfig,
) -> bundle.ReleaseInfo:
    model_version = version or _text(run_info.get("model_version")) or "local"
    return bundle.ReleaseInfo(
        release=bundle.release_name(model_version, model_sha256),
        model_version=model_version,
        model_name=_text(run_info.get("model_name")),
        run_id=_text(run_info.get("run_id")),
        tracking_uri=_text(run_info.get("tracking_uri")),
        git_commit=_text(run_info.get("git_commit")) or _text(model_metadata.get("git_commit")),
        created_at=created_at,
        model_sha256=model_sha256,
        model_metadata=model_metadata,
        metrics={
            k: v
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        },
        gate_decision=gate.get("decision") if isinstance(gate, dict) else None,
        forced_reason=forced_reason,
        serving=serving,
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def host_argv(options: DeployOptions, command: str, *extra: str) -> list[str]:
    """`<python> -m cxml.deploy.host <command> --root ROOT ...` with the host settings."""
    argv = [
        *shlex.split(options.remote_python),
        "-m",
        "cxml.deploy.host",
        command,
        "--root",
        options.root,
    ]
    if command in ("activate", "rollback"):
        argv += [
            "--mode", options.mode,
            "--keep", str(options.keep),
            "--health-timeout", f"{options.health_timeout_s:g}",
            "--lock-timeout", f"{options.lock_timeout_s:g}",
            "--drain", f"{options.drain_s:g}",
            "--proxy-reload", options.proxy_reload,
            "--proxy-check", options.proxy_check,
        ]  # fmt: skip
        if options.public_url:
            argv += ["--public-url", options.public_url]
        if options.proxy_config:
            argv += ["--proxy-config", options.proxy_config]
        if options.mode == "docker":
            argv += ["--docker-command", options.docker_command, "--image", options.image]
            if options.docker_build_context:
                argv += ["--docker-build-context", options.docker_build_context]
            for build_arg in options.docker_build_args:
                argv += ["--docker-build-arg", build_arg]
        if options.serve_args:
            argv += ["--serve-args", options.serve_args]
    return argv + list(extra)


def plan_deploy(
    options: DeployOptions, release: bundle.ReleaseInfo, local_bundle: str, nonce: str
) -> DeployPlan:
    """The steps of a deploy, in order: check the host, upload under a temporary name, activate."""
    root = options.root.rstrip("/") or "/"
    staging = f"{root}/incoming/{release.release}.{nonce}"
    uploads = [
        (f"{local_bundle}/{name}", name)
        for name in (bundle.MODEL_FILE_NAME, bundle.RELEASE_FILE_NAME)
    ]
    uploads.append(
        (f"{local_bundle}/{bundle.MANIFEST_FILE_NAME}", bundle.MANIFEST_FILE_NAME)
    )  # last: marks complete
    activate = host_argv(options, "activate", "--release", release.release, "--staging", staging)
    if release.forced_reason:
        activate += ["--forced-reason", release.forced_reason]
    steps = (
        PlanStep(
            "check the host and prepare its layout",
            tuple(ssh.ssh_argv(options.target, host_argv(options, "prepare"))),
        ),
        PlanStep(
            f"upload the bundle to {staging}",
            tuple(ssh.sftp_argv(options.target, options.upload_limit_kbit_s)),
            ssh.sftp_upload_batch(uploads, staging),
        ),
        PlanStep(
            f"verify sha256, install as {root}/releases/{release.release}, start it, check "
            "/healthz and "
            "/version, switch the proxy, stop the old one, keep the last releases",
            tuple(ssh.ssh_argv(options.target, activate)),
        ),
    )
    return DeployPlan(release.release, f"{root}/releases/{release.release}", staging, steps)


def plan_rollback(options: DeployOptions) -> DeployPlan:
    argv = ssh.ssh_argv(options.target, host_argv(options, "rollback"))
    step = PlanStep(
        "start the previous release, check it, switch the proxy back, stop the current one",
        tuple(argv),
    )
    return DeployPlan("previous", f"{options.root}/previous", "", (step,))


def render_plan(
    plan: DeployPlan, options: DeployOptions, release: bundle.ReleaseInfo | None
) -> str:
    lines = [
        f"plan (dry run, nothing is done): deploy to {options.target.label}, root "
        f"{options.root}, {options.mode} mode"
    ]
    if release is not None:
        lines += [
            f"  release: {release.release} (model {release.model_name or '-'} version "
            f"{release.model_version}, "
            f"sha256 {release.model_sha256[:16]}...)",
            f"  release dir: {plan.release_dir}",
            f"  gate: {release.gate_decision or 'missing'}"
            + (f" (forced: {release.forced_reason})" if release.forced_reason else ""),
        ]
    for number, step in enumerate(plan.steps, start=1):
        lines.append(f"  {number}. {step.title}")
        lines.append(f"     $ {shlex.join(step.argv)}")
        for command in (step.stdin or "").splitlines():
            lines.append(f"       sftp> {command}")
    return "\n".join(lines)


# --- edges: files, ssh, registry -------------------------------------------------------------


def read_optional_json(path: str, what: str) -> Any:
    return files.read_json(path, what=what) if Path(path).exists() else None


def run_step(step: PlanStep, target: ssh.SshTarget, *, echo_host: bool = True) -> dict[str, Any]:
    info(f"- {step.title}")
    result = ssh.run_command(
        step.argv, stdin_text=step.stdin, echo_prefix="  host: " if echo_host else None
    )
    if result.returncode != 0:
        problem = ssh.connection_problem(result, target)
        if problem is not None:
            raise DeployError(problem)
        raise DeployError(ssh.remote_error(result))
    last = (result.stdout.strip().splitlines() or ["{}"])[-1]
    try:
        parsed = json.loads(last)
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def upload_failed(error: DeployError, target: ssh.SshTarget) -> DeployError:
    return DeployError(
        f"upload to {target.label} was interrupted or failed ({error}); nothing was "
        "activated, deploy again"
    )


def execute_deploy(plan: DeployPlan, target: ssh.SshTarget, cleanup: PlanStep) -> dict[str, Any]:
    prepare_step, upload_step, activate_step = plan.steps
    run_step(prepare_step, target)
    try:
        run_step(upload_step, target, echo_host=False)
    except DeployError as exc:
        with contextlib.suppress(
            DeployError
        ):  # else the host drops stale uploads on a later deploy
            run_step(cleanup, target)
        raise upload_failed(exc, target) from None
    return run_step(activate_step, target)


def move_alias(record: dict[str, Any], alias: str) -> None:
    """Point the registry alias at the served model version; a release without one is only noted."""
    name, version = record.get("model_name"), record.get("model_version")
    if not name or not version or version == "local":
        info(f"registry alias {alias} not moved: the release names no registered model version")
        return
    from cxml.tracking import runs as tracking

    uri = env.get(env.MLFLOW_TRACKING_URI) or record.get("tracking_uri")
    try:
        tracking.set_model_alias(uri, str(name), str(version), alias)
    except Exception as exc:  # mlflow raises many types; the release is live either way
        raise DeployError(
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
        "--max-batch", type=int, default=64, help="most images per /predict request (default 64)"
    )
    release.add_argument(
        "--alias", default=CHAMPION_ALIAS, help="registry alias moved on success (default champion)"
    )
    release.add_argument("--no-alias", action="store_true", help="do not move the registry alias")
    host = parser.add_argument_group("serving host")
    host.add_argument(
        "--root", default=DEFAULT_ROOT, help=f"deploy root on the host (default {DEFAULT_ROOT})"
    )
    host.add_argument(
        "--mode",
        choices=["process", "docker"],
        default="docker",
        help="docker (default) or process",
    )
    host.add_argument("--keep", type=int, default=5, help="releases kept on the host (default 5)")
    host.add_argument(
        "--health-timeout", type=float, default=60.0, help="seconds to become healthy (default 60)"
    )
    host.add_argument(
        "--lock-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for another deploy (default 300)",
    )
    host.add_argument(
        "--drain",
        type=float,
        default=2.0,
        help="seconds between the switch and stopping the old service",
    )
    host.add_argument(
        "--public-url",
        help="stable endpoint on the host, checked after the switch (e.g. http://127.0.0.1)",
    )
    host.add_argument(
        "--proxy-config", help="nginx upstream file the host rewrites (included by its nginx.conf)"
    )
    host.add_argument(
        "--proxy-reload", default="nginx -s reload", help="command that reloads the proxy"
    )
    host.add_argument(
        "--proxy-check",
        default="auto",
        help="command that validates the proxy config before the reload (a rejected config rolls "
        "back); auto (default): the reload command with -t in place of -s reload, as `nginx -t`; "
        "none: no check",
    )
    host.add_argument(
        "--remote-python", default="python3", help="Python with cxml installed on the host"
    )
    host.add_argument(
        "--docker-command", default="docker", help="docker-compatible CLI on the host (e.g. podman)"
    )
    host.add_argument("--image", default="cxml-serve:latest", help="serving image on the host")
    host.add_argument(
        "--docker-build-context", help="directory on the host to build the image from if missing"
    )
    host.add_argument(
        "--docker-build-arg",
        action="append",
        default=[],
        help="KEY=VALUE passed to the image build (repeatable), e.g. BASE_IMAGE=...",
    )
    host.add_argument("--serve-args", default="", help="extra `cxml serve` options for the service")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (host, release dir, commands); do nothing",
    )
    parser.add_argument(
        "--rollback", action="store_true", help="switch the host back to its previous release"
    )
    return parser.parse_args(argv)


def options_from_args(
    args: argparse.Namespace, key_file: str | None, known_hosts_file: str
) -> DeployOptions:
    if args.keep < 2:
        raise DeployError("--keep: must be at least 2 (the current and the previous release)")
    if args.mode == "process" and args.docker_build_context:
        raise DeployError("--docker-build-context: only used with --mode docker")
    target = ssh.SshTarget(
        host=args.host,
        port=args.port,
        user=args.user,
        key_file=key_file,
        known_hosts_file=known_hosts_file,
        accept_new_host_key=args.accept_new_host_key,
    )
    return DeployOptions(
        target=target,
        root=args.root,
        mode=args.mode,
        keep=args.keep,
        health_timeout_s=args.health_timeout,
        lock_timeout_s=args.lock_timeout,
        drain_s=args.drain,
        public_url=args.public_url,
        proxy_config=args.proxy_config,
        proxy_reload=args.proxy_reload,
        proxy_check=args.proxy_check,
        remote_python=args.remote_python,
        docker_command=args.docker_command,
        image=args.image,
        docker_build_context=args.docker_build_context,
        docker_build_args=tuple(args.docker_build_arg),
        serve_args=args.serve_args,
        upload_limit_kbit_s=args.upload_limit_kbit,
    )


def fill_paths_from_params(args: argparse.Namespace) -> None:
    """Files not named on the command line are where params.yaml's `outputs` put them."""
    from cxml.core.config import load_params

    outputs = load_params(args.params).outputs
    args.model = args.model or outputs.model
    args.run_info = args.run_info or outputs.run_info
    args.gate = args.gate or outputs.gate
    args.metrics = args.metrics or str(outputs.eval_metrics)


def build_release(args: argparse.Namespace) -> bundle.ReleaseInfo:
    gate = read_optional_json(args.gate, "gate file")
    forced_reason = check_gate(gate, args.gate, args.force, args.reason)
    run_info = read_optional_json(args.run_info, "run info") or {}
    metrics = read_optional_json(args.metrics, "metrics") or {}
    if not metrics and isinstance(gate, dict):
        metrics = gate.get("metrics") or {}
    model_metadata = bundle.read_model_metadata(args.model)  # also checks the file is a cxml model
    return describe_release(
        bundle.sha256_file(args.model),
        model_metadata,
        run_info if isinstance(run_info, dict) else {},
        gate,
        metrics if isinstance(metrics, dict) else {},
        version=args.version,
        forced_reason=forced_reason,
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        serving=bundle.ServingConfig(max_batch=args.max_batch),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.accept_new_host_key:
        warn(
            f"--accept-new-host-key: trusting whatever host key {args.host} shows on first connect"
        )
    if not args.rollback:
        fill_paths_from_params(args)
    release = None if args.rollback else build_release(args)
    if args.dry_run:
        key_label = args.ssh_key_file or (
            f"<key from ${env.CXML_SSH_KEY}>" if env.get(env.CXML_SSH_KEY) else None
        )
        options = options_from_args(args, key_label, "<known_hosts from input>")
        plan = (
            plan_rollback(options)
            if release is None
            else plan_deploy(options, release, "<bundle dir>", "<nonce>")
        )
        info(render_plan(plan, options, release))
        return 0
    credentials = ssh.credential_files(
        key_file=args.ssh_key_file,
        key_material=env.get(env.CXML_SSH_KEY),
        known_hosts=args.known_hosts or env.get(env.CXML_KNOWN_HOSTS),
        known_hosts_file=args.known_hosts_file,
        accept_new_host_key=args.accept_new_host_key,
    )
    with credentials as creds, tempfile.TemporaryDirectory(prefix="cxml-release-") as workdir:
        options = options_from_args(args, creds.key_file, creds.known_hosts_file)
        if release is None:
            result = run_step(plan_rollback(options).steps[0], options.target)
        else:
            local = bundle.save_bundle(Path(workdir) / release.release, args.model, release)
            nonce = secrets.token_hex(4)
            plan = plan_deploy(options, release, str(local.directory), nonce)
            cleanup = PlanStep(
                "discard the partial upload",
                tuple(
                    ssh.ssh_argv(
                        options.target, host_argv(options, "discard", "--staging", plan.staging_dir)
                    )
                ),
            )
            info(
                f"deploying release {release.release} to {options.target.label}:{plan.release_dir}"
            )
            result = execute_deploy(plan, options.target, cleanup)
    report_outputs(result, replace(options.target, key_file=None), args.public_url)
    if not args.no_alias:
        move_alias(result.get("record", {}), args.alias)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))

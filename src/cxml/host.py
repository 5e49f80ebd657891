"""`cxml host setup --env NAME`: provision an environment's serving hosts over SSH, idempotently."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from cxml import __version__
from cxml.core.console import info, run_entry_point, warn
from cxml.deploy import keys, ssh
from cxml.deploy import setup as host_setup
from cxml.deploy.config import DEFAULT_DEPLOY_FILE, Host, load_deploy_config
from cxml.deploy.plan import PlanStep


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    environment = load_deploy_config(args.config).environment(args.env)
    options = host_setup.InstallOptions(install=args.install, source=args.install_from)
    plans = host_setup.plan_setup(environment, options, __version__)
    if args.dry_run:
        command_line = CommandLine(args, keys.dry_run_credentials(args))
        info(host_setup.render_setup_plan(plans, environment.name, command_line))
        return 0
    if args.accept_new_host_key:
        warn("--accept-new-host-key: trusting whatever host key each host shows on first connect")
    changed = False
    with (
        ssh.interrupt_on_termination(),
        keys.credentials_from_args(args) as creds,
    ):
        for plan in plans:
            target = host_target(plan.host, creds, args)
            result = host_setup.run_host_setup(plan, target, __version__)
            changed = changed or bool(result["changed"])
    summary = "changed" if changed else "no changes: everything was already there"
    info(f"host setup of {environment.name} ({len(plans)} host(s)): {summary}")
    configured = environment.settings.remote_python
    if args.install and plans and plans[0].python != configured:
        info(
            f"set remote_python: {plans[0].python[0]} in {args.config} (serve, or environment "
            f"{environment.name}) so deploys use the venv"
        )
    return 0


def host_target(host: Host, creds: keys.SshCredentials, args: argparse.Namespace) -> ssh.SshTarget:
    return keys.ssh_target(creds, args, host.address, host.port, host.user)


@dataclass(frozen=True)
class CommandLine:
    """What the executor would run for a host's step (for the dry run)."""

    args: argparse.Namespace
    credentials: keys.SshCredentials
    """The key and known_hosts as the dry run names them (keys.dry_run_credentials)."""

    def __call__(self, host: Host, step: PlanStep) -> list[str]:
        return ssh.ssh_argv(host_target(host, self.credentials, self.args), step.argv)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cxml host", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    setup = commands.add_parser(
        "setup",
        help="make each host of an environment ready for deploys (idempotent)",
        description="Make the deploy root, check or install cxml, write the nginx upstream "
        "placeholder and server block, check that the proxy reloads and accepts its config. "
        "Says what it did on each host; a second run changes nothing. See docs/host-setup.md.",
    )
    setup.add_argument("--env", required=True, help="environment in deploy.yaml (e.g. production)")
    setup.add_argument(
        "--config",
        default=DEFAULT_DEPLOY_FILE,
        help=f"deploy settings (default {DEFAULT_DEPLOY_FILE})",
    )
    setup.add_argument("--dry-run", action="store_true", help="print the plan; do nothing")
    setup.add_argument(
        "--install",
        action="store_true",
        help=f"install cxml {__version__} in a venv under the root if the host lacks it",
    )
    setup.add_argument(
        "--install-from",
        metavar="PATH",
        help="with --install: a wheel or source directory on the host to install from "
        "(default: cxml from the package index)",
    )
    keys.add_credential_arguments(setup, hosts="the hosts")
    args = parser.parse_args(argv)
    if args.install_from and not args.install:
        parser.error("--install-from needs --install")
    return args


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))

"""`cxml promote --from staging --to production`: serve in one environment what another serves.

The exact bundle the source environment serves (same sha256, no rebuild) goes to the target's
hosts; when the target has a `canary:` section in deploy.yaml, its first host tries it on a share
of the traffic and cxml decides from both services' /metrics whether it takes all of it or is
aborted (exit 3 with the measured reason). The other hosts follow one at a time. On success the
MLflow aliases of the target move to the promoted version (production: `production` and
`champion`), an error or a warning as params.yaml's `tracking.required` says.

`--version N` promotes the release whose record names registered version N instead: one the
source environment's hosts keep (a deploy keeps several), served there now or not. `--dry-run`
reads what the source serves (or keeps) and prints the plan; it changes nothing.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cxml.core import ghactions
from cxml.core.console import info, run_entry_point, warn
from cxml.core.errors import ConfigError, CxmlError, DeployError
from cxml.deploy import keys, ssh
from cxml.deploy.config import DEFAULT_DEPLOY_FILE, load_deploy_config
from cxml.deploy.promote import (
    PromotionLog,
    environment_hosts,
    fetch_bundle,
    fetch_release_record,
    promote_release,
    promotion_plan,
    source_release,
    version_release,
)
from cxml.records.release import ReleaseInfo, load_bundle


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.source == args.target:
        raise ConfigError(f"--from and --to are both {args.source}; name two environments")
    config = load_deploy_config(args.config)
    source, target = config.environment(args.source), config.environment(args.target)
    if args.accept_new_host_key:
        warn("--accept-new-host-key: trusting whatever host key the hosts show on first connect")
    log = PromotionLog()
    with (
        ssh.interrupt_on_termination(),
        keys.credentials_from_args(args) as creds,
        tempfile.TemporaryDirectory(prefix="cxml-promote-") as work,
    ):

        def make_target(host: str, port: int, user: str | None) -> ssh.SshTarget:
            return keys.ssh_target(creds, args, host, port, user)

        source_hosts = environment_hosts(source, make_target)
        target_hosts = environment_hosts(target, make_target)
        if args.version is None:
            release_name, holder = source_release(source, source_hosts)
            labels = [host.label for host in source_hosts]
        else:
            release_name, holder = version_release(source, source_hosts, args.version)
            labels = [holder.label]
        if args.dry_run:
            record = fetch_release_record(holder, release_name, Path(work))
            plan = promotion_plan(source, target, record, labels, kept=args.version is not None)
            print_plan(args, plan)
            return 0
        held = "keeps" if args.version is not None else "serves"
        log.add(f"{source.name} {held} release {release_name} (on {holder.label})")
        bundle = fetch_bundle(holder, release_name, Path(work))
        release = load_bundle(bundle, verify=False).info
        if args.version is not None and release.model_version != args.version:
            raise DeployError(
                f"release {release_name} on {holder.label} names version "
                f"{release.model_version}, not {args.version}, though its status said so; "
                "promote again"
            )
        how = f"a {target.canary.weight}% canary" if target.canary else "a plain switch"
        log.add(
            f"promoting release {release.release} (model {release.model_name or '-'} version "
            f"{release.model_version}, sha256 {release.model_sha256[:12]}) to {target.name} "
            f"through {how}"
        )
        try:
            promote_release(target_hosts, release, bundle, target.canary, target.name, log)
        except CxmlError as exc:
            write_summary(args, log, f"**Promotion stopped**: {exc}")
            raise
    outcome = f"**{target.name} now serves release `{release.release}`.**"
    try:
        move_aliases(args, release, target.name, log)
    except CxmlError as exc:
        write_summary(args, log, f"{outcome} But: {exc}")
        raise
    write_summary(args, log, outcome)
    ghactions.set_output("release", release.release)
    ghactions.set_output("model-version", str(release.model_version))
    info(f"{target.name} now serves release {release.release}")
    return 0


def move_aliases(
    args: argparse.Namespace, release: ReleaseInfo, target: str, log: PromotionLog
) -> None:
    """The registry aliases of the target environment follow the promoted version, as after a
    deploy to it (`tracking.required` decides whether a failing registry is an error)."""
    from cxml.tracking import registry

    if args.no_alias:
        return
    aliases = registry.deploy_aliases(target)
    required = registry.tracking_required(args.params)
    if registry.move_release_aliases(release.to_dict(), aliases, required=required):
        log.lines.append(
            f"- registry alias {', '.join(aliases)} -> {release.model_name} version "
            f"{release.model_version}"
        )


def registered_version(text: str) -> str:
    """--version: a registered model version is a whole number (MLflow counts from 1)."""
    if not re.fullmatch(r"[0-9]{1,12}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a registered model version; expected its number, like 7"
        )
    return str(int(text))


def print_plan(args: argparse.Namespace, lines: list[str]) -> None:
    info(f"dry run: cxml promote --from {args.source} --to {args.target} would promote")
    for line in lines:
        info(f"  {line}")
    info("nothing was changed (dry run)")


def write_summary(args: argparse.Namespace, log: PromotionLog, outcome: str) -> None:
    ghactions.append_summary(
        f"### cxml promote {args.source} → {args.target}\n\n"
        + "\n".join(log.lines)
        + f"\n\n{outcome}"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cxml promote", description=__doc__)
    parser.add_argument(
        "--from", dest="source", required=True, help="the environment whose release is promoted"
    )
    parser.add_argument(
        "--to", dest="target", required=True, help="the environment that will serve it"
    )
    parser.add_argument(
        "--config",
        default=DEFAULT_DEPLOY_FILE,
        help=f"deploy.yaml (default ./{DEFAULT_DEPLOY_FILE})",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="read what the source serves, print the plan (release, sha256, hosts, canary) and "
        "change nothing",
    )
    parser.add_argument(
        "--version",
        type=registered_version,
        help="promote the release of this registered model version (a number) that the source "
        "environment keeps, instead of the one it serves",
    )
    parser.add_argument("--params", default=None, help="params file (default: params.yaml)")
    parser.add_argument(
        "--no-alias",
        action="store_true",
        help="do not move the target environment's registry aliases",
    )
    keys.add_credential_arguments(parser, hosts="the hosts of both environments")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))

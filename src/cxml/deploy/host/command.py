"""The serving host's side of a deploy, run over SSH: verify, install, start, switch, roll back.

`python -m cxml.deploy.host <prepare|activate|rollback|discard|status> --root ROOT ...` prints one
JSON object on stdout; progress goes to stderr, a failure is one `error:` line and a non-zero exit.
Layout under ROOT: releases/<release>/ (verified bundles), incoming/ (uploads not yet verified),
services/<release>.json (the running service of a release), logs/, state.json, deploy.lock and the
`current` / `previous` symlinks; journal.json while a swap is under way, runs/ for the logs and
results of detached deploys.

`activate` and `rollback` run detached from the SSH session (see cxml.deploy.host.detach): a
client that is cancelled or loses its connection mid-swap leaves the host to finish the swap.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cxml.core.console import run_entry_point
from cxml.core.errors import ConfigError
from cxml.deploy.host import canary, detach, releases, setup
from cxml.deploy.host.settings import HostSettings, add_arguments
from cxml.records.release import is_release_name

COMMANDS = ("prepare", "activate", "rollback", "discard", "status", "setup", *canary.COMMANDS)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cxml.deploy.host",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("--release", help="release name (activate)")
    parser.add_argument(
        "--staging", help="uploaded directory under ROOT/incoming (activate, discard)"
    )
    parser.add_argument("--forced-reason", help="why the gate was skipped (activate)")
    parser.add_argument(
        "--weight", type=int, default=10, help="percent of the requests (canary-start)"
    )
    parser.add_argument("--reason", default="aborted", help="why (canary-abort)")
    parser.add_argument(
        "--lease",
        type=float,
        default=canary.DEFAULT_LEASE_S,
        help="seconds the canary stays reserved for its client between reads (canary-start)",
    )
    parser.add_argument(
        "--attached",
        action="store_true",
        help="run activate/rollback in this process, not detached from the SSH session",
    )
    parser.add_argument("--worker-run", help=argparse.SUPPRESS)  # set for the detached worker
    add_arguments(parser, root_required=True)
    setup.add_setup_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(argv) if argv is not None else sys.argv[1:]
    args = parse_args(arguments)
    settings = HostSettings.from_args(args)
    if args.command == "activate":
        release_arg(args)  # bad input is refused here, not in the detached worker
    if args.worker_run:
        return detach.run_as_worker(settings, args.worker_run, lambda: run_command(args, settings))
    if args.command in detach.DETACHED_COMMANDS and not args.attached:
        result = detach.run_detached(settings, arguments)
    else:
        result = run_command(args, settings)
    print(json.dumps(result), flush=True)
    return 0


def run_command(args: argparse.Namespace, settings: HostSettings) -> dict[str, Any]:
    if args.command == "prepare":
        return releases.prepare(settings)
    if args.command == "activate":
        staging = Path(args.staging) if args.staging else None
        return releases.activate(settings, release_arg(args), staging, args.forced_reason)
    if args.command == "rollback":
        return releases.rollback(settings)
    if args.command == "discard":
        if not args.staging:
            raise ConfigError("discard needs --staging")
        return releases.discard(settings, Path(args.staging))
    if args.command == "setup":
        return setup.setup_from_args(args, settings)
    if args.command in canary.COMMANDS:
        if args.command == "canary-start":
            release_arg(args)
        staging = Path(args.staging) if args.staging else None
        return canary.run(
            args.command, settings, args.release, staging, args.weight, args.reason, args.lease
        )
    return canary.status(settings)  # the host's releases and a canary under way


def release_arg(args: argparse.Namespace) -> str:
    """--release, checked to be a release directory's name and not a path."""
    if not args.release:
        raise ConfigError(f"{args.command} needs --release")
    if not is_release_name(args.release):
        raise ConfigError(
            f"--release {args.release!r}: not a release name (letters, digits, '.', '_', '-')"
        )
    release: str = args.release
    return release


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))

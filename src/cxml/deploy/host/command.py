"""The serving host's side of a deploy, run over SSH: verify, install, start, switch, roll back.

`python -m cxml.deploy.host <prepare|activate|rollback|discard|status> --root ROOT ...` prints one
JSON object on stdout; progress goes to stderr, a failure is one `error:` line and a non-zero exit.
Layout under ROOT: releases/<release>/ (verified bundles), incoming/ (uploads not yet verified),
services/<release>.json (the running service of a release), logs/, state.json, deploy.lock and the
`current` / `previous` symlinks.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cxml.core.console import run_entry_point
from cxml.core.errors import ConfigError
from cxml.deploy.host import releases
from cxml.deploy.host.settings import HostSettings, add_arguments
from cxml.records.release import is_release_name

COMMANDS = ("prepare", "activate", "rollback", "discard", "status")


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
    add_arguments(parser, root_required=True)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = HostSettings.from_args(args)
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
    return releases.status(settings)


def release_arg(args: argparse.Namespace) -> str:
    """--release, checked to be a release directory's name and not a path."""
    if not args.release:
        raise ConfigError("activate needs --release")
    if not is_release_name(args.release):
        raise ConfigError(
            f"--release {args.release!r}: not a release name (letters, digits, '.', '_', '-')"
        )
    release: str = args.release
    return release


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))

"""`cxml params check [FILE ...]`: params.yaml and its gate rules checked in a second, no training.

What `cxml train` and `cxml evaluate` check when they start (every key and type, value ranges,
gate rules and the metrics they name, the baseline setting), for a pre-commit hook
(`cxml-check-params` in .pre-commit-hooks.yaml) or a CI step that should fail before a GPU job
starts. The first problem is one `error:` line, exit 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from cxml.core import console
from cxml.core.config import default_params_path, load_params, validate_ranges
from cxml.gate.decide import check_gate_settings


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cxml params", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="check")
    check = commands.add_parser("check", help="check params files and their gate rules")
    check.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="params files to check (default: $CXML_PARAMS, else params.yaml)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for path in args.files or [str(default_params_path())]:
        check_params_file(path)
    return 0


def check_params_file(path: str) -> None:
    params = load_params(path, required=True)
    validate_ranges(params)
    check_gate_settings(params)
    rules = len(params.evaluate.gate)
    console.info(f"{path}: ok ({rules} gate rule{'s' if rules != 1 else ''})")


if __name__ == "__main__":
    raise SystemExit(console.run_entry_point(main))

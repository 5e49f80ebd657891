"""`cxml <command>`: one front door to the step modules (each also runs as `python -m cxml.<step>`)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from cxml import __version__

# command -> (module, one-line help). Modules are imported only when their command runs,
# so `cxml --help` never pays for torch or mlflow.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("cxml.run", "train -> evaluate -> gate -> report.md on the current params.yaml"),
    "train": ("cxml.train", "train the model from params.yaml"),
    "evaluate": (
        "cxml.evaluate",
        "evaluate the model on the test split, compare with the baseline, decide the gate",
    ),
    "gate": ("cxml.gate.step", "re-decide the gate from metrics/eval.json and a baseline"),
    "report": ("cxml.report.step", "build the PR report and post it as a comment"),
    "serve": (
        "cxml.serve.step",
        "serve a model over HTTP (/predict, /healthz, /version, /metrics)",
    ),
    "redeploy": (
        "cxml.redeploy",
        "upload a gated release over SSH and swap the serving host to it",
    ),
    "check": (
        "cxml.check",
        "check a deployed environment: online = offline predictions and a bounded load test",
    ),
    "promote": (
        "cxml.promote",
        "promote the release one environment serves to another, through a canary if configured",
    ),
    "params": ("cxml.params", "check params.yaml and its gate rules without training (pre-commit)"),
    "host": ("cxml.host", "set up an environment's serving hosts over SSH (cxml host setup)"),
    "init": ("cxml.init", "write params.yaml, dvc.yaml and workflow templates into a repository"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        f"cxml {__version__}: continuous training, evaluation, reports and deploys for ML on GitHub",
        "",
        "usage: cxml <command> [options]      (cxml <command> --help for its options)",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version", "version"):
        print(f"cxml {__version__}")
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(
            f"error: unknown command {command!r}; run `cxml --help` for the list", file=sys.stderr
        )
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    from cxml.core.console import run_entry_point

    result: int = run_entry_point(module.main, rest)
    return result


if __name__ == "__main__":
    raise SystemExit(main())

"""`cxml run`: the whole pipeline locally - train -> evaluate -> gate -> report.md."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from cxml.core import console


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cxml run", description=__doc__)
    parser.add_argument(
        "--params", default=None, help="params file (default: params.yaml; none = built-in example)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue training from the last checkpoint"
    )
    parser.add_argument("--device", default=None, help="override train.device")
    parser.add_argument("--baseline", default=None, help="auto | git:<ref> | champion | none")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even when the gate fails")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from cxml import evaluate, train
    from cxml.core.config import default_params_path, load_params
    from cxml.gate.decide import gate_exit_code
    from cxml.records.gate import read_gate
    from cxml.report.build import write_report  # report.md once per pipeline
    from cxml.tracking.background import collect_eval_metrics

    started = time.perf_counter()
    console.info("== train")
    train.main(train_arguments(args))
    console.info("== evaluate")
    evaluate.main(evaluate_arguments(args))
    console.info("== report")
    params = load_params(args.params)
    report_path = write_report(params, Path(args.params) if args.params else default_params_path())
    collect_eval_metrics(params)
    gate = read_gate(params.outputs.gate)
    console.info(
        f"== done in {time.perf_counter() - started:.1f}s: gate {gate.decision}, report in {report_path}"
    )
    return gate_exit_code(gate, no_fail=args.no_fail)


def train_arguments(args: argparse.Namespace) -> list[str]:
    return [
        *(["--params", args.params] if args.params else []),
        *(["--resume"] if args.resume else []),
        *(["--device", args.device] if args.device else []),
    ]


def evaluate_arguments(args: argparse.Namespace) -> list[str]:
    """--no-fail: the report is written whatever the gate says; run returns the verdict last."""
    return [
        *(["--params", args.params] if args.params else []),
        *(["--baseline", args.baseline] if args.baseline else []),
        "--no-fail",
        "--tracking-in-background",  # the report below collects it
        *(["--device", args.device] if args.device else []),
    ]


if __name__ == "__main__":
    from cxml.core.console import run_entry_point

    raise SystemExit(run_entry_point(main))

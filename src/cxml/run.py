"""`cxml run`: the whole pipeline locally - train -> evaluate -> gate -> report.md."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

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

    started = time.perf_counter()
    common = ["--params", args.params] if args.params else []
    train_args = [
        *common,
        *(["--resume"] if args.resume else []),
        *(["--device", args.device] if args.device else []),
    ]
    console.info("== train")
    train.main(train_args)
    console.info("== evaluate")
    eval_args = [*common, *(["--baseline", args.baseline] if args.baseline else []), "--no-fail"]
    if args.device:
        eval_args += ["--device", args.device]
    evaluate.main(eval_args)

    from cxml.core import files
    from cxml.core.config import load_params

    params = load_params(args.params)
    gate = files.read_json(params.outputs.gate, what="gate decision")
    console.info(
        f"== done in {time.perf_counter() - started:.1f}s: gate {gate['decision']}, report in {params.outputs.report}"
    )
    return 0 if gate["decision"] == "pass" or args.no_fail else 1


if __name__ == "__main__":
    from cxml.core.console import run_entry_point

    raise SystemExit(run_entry_point(main))

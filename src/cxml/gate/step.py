"""`cxml gate`: re-decide the gate from metrics/eval.json and a baseline, without re-evaluating."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from cxml.core.config import load_params
from cxml.gate.baseline import check_baseline_spec
from cxml.gate.decide import (
    add_gate_arguments,
    find_baseline,
    gate_exit_code,
    gate_rule_texts,
    publish_gate,
    run_gate,
)
from cxml.records.metrics import read_metrics


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cxml gate", description=__doc__)
    parser.add_argument("--params", default=None, help="params file (default: params.yaml)")
    add_gate_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    params = load_params(args.params)
    rule_texts = gate_rule_texts(args, params)  # syntax errors before any I/O
    check_baseline_spec(args.baseline or params.evaluate.baseline, label="baseline")
    metrics = read_metrics(params.outputs.eval_metrics, step="evaluate")
    baseline = find_baseline(args.baseline, params)
    gate = run_gate(
        rule_texts,
        metrics,
        baseline,
        params.outputs.gate,
        model_path=params.outputs.model,
        run_info=params.outputs.run_info,
        directions=params.evaluate.directions,
    )
    publish_gate(gate, params.outputs.gate)
    return gate_exit_code(gate, no_fail=args.no_fail)


if __name__ == "__main__":
    from cxml.core.console import run_entry_point

    raise SystemExit(run_entry_point(main))

"""Deciding the gate at the edges (options, baseline, gate.json), shared by evaluate and gate."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from cxml.core import console, ghactions
from cxml.core.errors import EXIT_GATE_FAILED
from cxml.core.metrics import flatten
from cxml.gate.rules import decide, gate_table, parse_rules
from cxml.records.gate import BaselineInfo, GateResult, write_gate

if TYPE_CHECKING:
    from cxml.core.config import Params


def add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    """--baseline, --gate and --no-fail: shared by `cxml gate` and `cxml evaluate`."""
    parser.add_argument(
        "--baseline",
        default=None,
        help="auto | git:<ref> | <ref> | champion | none (default: evaluate.baseline)",
    )
    parser.add_argument(
        "--gate",
        action="append",
        default=None,
        metavar="RULE",
        help="a gate rule (repeatable); replaces evaluate.gate",
    )
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even when the gate fails")


def gate_rule_texts(args: argparse.Namespace, params: Params) -> list[str]:
    """The rules to apply, checked for syntax before any I/O: --gate, else evaluate.gate."""
    rule_texts = args.gate if args.gate is not None else list(params.evaluate.gate)
    parse_rules(rule_texts)
    return rule_texts


def find_baseline(spec: str | None, params: Params) -> BaselineInfo:
    """The baseline `spec` names (default evaluate.baseline); the registry is asked only if needed."""
    from cxml.gate.baseline import resolve_baseline
    from cxml.tracking.registry import champion_metrics

    return resolve_baseline(
        spec or params.evaluate.baseline,
        params.outputs.eval_metrics,
        champion_lookup=lambda: champion_metrics(params.tracking),
    )


def run_gate(
    rule_texts: Sequence[str],
    metrics: Mapping[str, Any],
    baseline: BaselineInfo,
    gate_path: str,
) -> GateResult:
    """Parse, decide, write gate.json and print the table; shared by evaluate and `cxml gate`."""
    flat = flatten(metrics)
    flat_baseline = flatten(baseline.metrics) if baseline.metrics is not None else None
    rules = parse_rules(rule_texts, known_metrics=list(flat))
    gate = replace(decide(rules, flat, flat_baseline), baseline=baseline)
    write_gate(gate_path, gate)
    console.info(gate_table(gate))
    return gate


def publish_gate(gate: GateResult, gate_path: str) -> None:
    """The step outputs `gate` (pass|fail) and `gate-file` for the workflow."""
    ghactions.set_output("gate", gate.decision)
    ghactions.set_output("gate-file", gate_path)


def gate_exit_code(gate: GateResult, *, no_fail: bool) -> int:
    """0 when the gate passed (or --no-fail), else 1: the gate's verdict, not an error."""
    return 0 if gate.passed or no_fail else EXIT_GATE_FAILED

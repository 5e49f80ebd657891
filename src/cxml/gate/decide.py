"""Deciding the gate at the edges (options, baseline, gate.json), shared by evaluate and gate."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from cxml.core import console, ghactions
from cxml.core.errors import EXIT_GATE_FAILED, GateError
from cxml.core.metrics import EVAL_METRICS, TWO_CLASS_METRICS, flatten
from cxml.gate.rules import decide, gate_table, parse_rules
from cxml.records.gate import BaselineInfo, GateResult, file_sha256, write_gate
from cxml.records.run import read_run

PER_CLASS_PREFIX = "per_class_accuracy."
KNOWN_BEFORE_EVALUATION = (*EVAL_METRICS, "num_test_images")
"""The metrics evaluate writes, known before any data is loaded (classes come later)."""
CLASSES_OF_BUILTIN_SOURCES = {"digits": 10, "breast_cancer": 2}
"""Built-in data sets whose number of classes is known from params.yaml alone."""

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


def check_gate_settings(
    params: Params, rule_texts: Sequence[str] | None = None, baseline_spec: str | None = None
) -> None:
    """The gate rules (default evaluate.gate) and the baseline setting, checked when a step
    starts, before any work: a typo in a rule fails `cxml train` in a second, not after it.

    Metric names are checked against what evaluate writes; the class names behind
    `per_class_accuracy.<class>` are only known once the data is loaded."""
    from cxml.gate.baseline import check_baseline_spec

    texts = list(params.evaluate.gate) if rule_texts is None else list(rule_texts)
    where = f"{params.source}: evaluate.gate: " if rule_texts is None else ""
    try:
        rules = parse_rules(texts)
    except GateError as exc:
        raise GateError(f"{where}{exc}") from None
    for rule in rules:
        if not known_before_evaluation(rule.metric):
            known = ", ".join([*KNOWN_BEFORE_EVALUATION, f"{PER_CLASS_PREFIX}<class>"])
            raise GateError(
                f"{where}gate rule {rule.text!r}: unknown metric {rule.metric!r}; "
                f"known metrics: {known}"
            )
        classes = CLASSES_OF_BUILTIN_SOURCES.get(params.data.source)
        if rule.metric in TWO_CLASS_METRICS and classes not in (None, 2):
            raise GateError(
                where
                + two_class_only(rule.text, rule.metric, f"data.source: {params.data.source}")
                + f" has {classes} classes"
            )
    if baseline_spec is None:
        check_baseline_spec(params.evaluate.baseline, label=f"{params.source}: evaluate.baseline")
    else:
        check_baseline_spec(baseline_spec, label="--baseline")


def two_class_only(rule_text: str, metric: str, what: str) -> str:
    """The start of the error for a two-class metric (`roc_auc`) gated on more classes."""
    return (
        f"gate rule {rule_text!r}: {metric} is only computed for a model of two classes "
        f"(remove the rule, or gate on accuracy or f1_macro), and {what}"
    )


def check_two_class_rules(rule_texts: Sequence[str], flat: Mapping[str, float]) -> None:
    """A `roc_auc` rule on a model of other than two classes, found once the metrics exist
    (a CSV's or an image folder's classes are unknown before the data is loaded)."""
    for rule in parse_rules(rule_texts):
        if rule.metric in TWO_CLASS_METRICS and rule.metric not in flat:
            classes = sum(1 for name in flat if name.startswith(PER_CLASS_PREFIX))
            what = f"this evaluation has none ({classes} classes in the test data)"
            raise GateError(two_class_only(rule.text, rule.metric, what))


def known_before_evaluation(metric: str) -> bool:
    if metric.startswith(PER_CLASS_PREFIX):
        return len(metric) > len(PER_CLASS_PREFIX)
    return metric in KNOWN_BEFORE_EVALUATION


def find_baseline(spec: str | None, params: Params) -> BaselineInfo:
    """The baseline `spec` names (default evaluate.baseline); the registry is asked only if needed.

    With evaluate.require_baseline, finding none is an error naming the fix (exit 2)."""
    from cxml.gate.baseline import missing_baseline_fix, resolve_baseline
    from cxml.tracking.registry import champion_metrics

    baseline = resolve_baseline(
        spec or params.evaluate.baseline,
        params.outputs.eval_metrics,
        champion_lookup=lambda: champion_metrics(params.tracking),
    )
    if baseline.metrics is None and params.evaluate.require_baseline:
        raise GateError(
            f"{baseline.description}; evaluate.require_baseline is true, so the gate cannot "
            f"decide: {missing_baseline_fix()}, or set evaluate.require_baseline: false"
        )
    return baseline


def bind_model(gate: GateResult, model_path: str | None, run_info: str | None) -> GateResult:
    """Record which model the gate judged (path, SHA-256, training run), so redeploy can refuse
    a model file that is not the one judged. A missing model file records a null sha256."""
    if model_path is None:
        return gate
    run = read_run(run_info) if run_info else None
    same_model = run is not None and run.model_path in (None, model_path)
    return replace(
        gate,
        model_path=model_path,
        model_sha256=file_sha256(model_path),
        model_run_id=run.run_id if run is not None and same_model else None,
    )


def warn_skipped_rules(gate: GateResult) -> None:
    """A skipped relative rule is a check that did not happen: say so where CI shows it."""
    skipped = gate.skipped_rules
    if not skipped:
        return
    from cxml.gate.baseline import missing_baseline_fix

    names = ", ".join(repr(rule.rule) for rule in skipped)
    why = skipped[0].reason or "no baseline"
    fix = missing_baseline_fix() if gate.baseline.metrics is None else "fix the baseline"
    console.warn(
        f"{len(skipped)} gate rule{'' if len(skipped) == 1 else 's'} skipped ({why}): {names}; "
        f"{fix}, or set evaluate.require_baseline: true to fail instead"
    )


def run_gate(
    rule_texts: Sequence[str],
    metrics: Mapping[str, Any],
    baseline: BaselineInfo,
    gate_path: str,
    *,
    model_path: str | None = None,
    run_info: str | None = None,
    directions: Mapping[str, str] | None = None,
) -> GateResult:
    """Parse, decide, write gate.json and print the table; shared by evaluate and `cxml gate`.

    `directions` (evaluate.directions) say which way is better where the name does not."""
    flat = flatten(metrics)
    flat_baseline = flatten(baseline.metrics) if baseline.metrics is not None else None
    check_two_class_rules(rule_texts, flat)
    rules = parse_rules(rule_texts, known_metrics=list(flat))
    gate = replace(decide(rules, flat, flat_baseline, directions), baseline=baseline)
    gate = bind_model(gate, model_path, run_info)
    write_gate(gate_path, gate)
    console.info(gate_table(gate))
    warn_skipped_rules(gate)
    return gate


def publish_gate(gate: GateResult, gate_path: str) -> None:
    """The step outputs `gate` (pass|fail) and `gate-file` for the workflow."""
    ghactions.set_output("gate", gate.decision)
    ghactions.set_output("gate-file", gate_path)


def gate_exit_code(gate: GateResult, *, no_fail: bool) -> int:
    """0 when the gate passed (or --no-fail), else 1: the gate's verdict, not an error."""
    return 0 if gate.passed or no_fail else EXIT_GATE_FAILED

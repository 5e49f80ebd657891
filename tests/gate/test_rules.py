"""Gate rules: table tests for the grammar and decisions, property tests against Python arithmetic."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cxml.core.errors import GateError
from cxml.gate.decide import run_gate
from cxml.gate.rules import decide, evaluate_expr, gate_table, parse_rule, parse_rules
from cxml.records.gate import BaselineInfo, read_gate

METRICS = {"accuracy": 0.95, "latency_p95_ms": 2.0, "f1_macro": 0.9, "per_class_accuracy.cat": 0.7}
BASELINE = {
    "accuracy": 0.96,
    "latency_p95_ms": 1.9,
    "f1_macro": 0.85,
    "per_class_accuracy.cat": 0.75,
}


@pytest.mark.parametrize(
    ("rule", "result", "threshold"),
    [
        ("accuracy >= 0.9", "pass", 0.9),
        ("accuracy >= 0.99", "fail", 0.99),
        ("accuracy >= baseline - 0.005", "fail", 0.955),
        ("accuracy >= baseline - 0.02", "pass", 0.94),
        ("latency_p95_ms <= baseline * 1.10", "pass", 1.9 * 1.10),
        ("latency_p95_ms <= baseline * 1.05", "fail", 1.9 * 1.05),
        ("f1_macro > baseline", "pass", 0.85),
        ("accuracy == 0.95", "pass", 0.95),
        ("accuracy < 1", "pass", 1.0),
        ("accuracy >= baseline - 1%", "pass", 0.95),
        ("accuracy >= (baseline + 0.94) / 2", "pass", 0.95),
        ("per_class_accuracy.cat >= 0.8", "fail", 0.8),
        ("accuracy>=-0.5", "pass", -0.5),
    ],
)
def test_rule_decisions(rule: str, result: str, threshold: float) -> None:
    outcome = decide([parse_rule(rule)], METRICS, BASELINE).rules[0]
    assert outcome.result == result
    assert outcome.threshold == pytest.approx(threshold)


def test_relative_rule_without_baseline_is_skipped_not_passed() -> None:
    decision = decide([parse_rule("accuracy >= baseline - 0.005")], METRICS, None)
    assert decision.rules[0].result == "skipped"
    assert decision.rules[0].reason == "no baseline"
    assert decision.passed  # skipped does not fail the gate...
    assert "skipped (no baseline)" in gate_table(decision)  # ...but is shown as skipped


def test_baseline_missing_the_metric_is_skipped() -> None:
    decision = decide([parse_rule("f1_macro > baseline")], METRICS, {"accuracy": 0.9})
    assert decision.rules[0].result == "skipped"
    assert "baseline has no f1_macro" in (decision.rules[0].reason or "")


def test_any_failed_rule_fails_the_gate_and_is_named() -> None:
    rules = [parse_rule("accuracy >= 0.9"), parse_rule("accuracy >= 0.99")]
    decision = decide(rules, METRICS, BASELINE)
    assert decision.decision == "fail"
    assert [r.rule for r in decision.failed_rules] == ["accuracy >= 0.99"]
    assert gate_table(decision).endswith("gate: FAIL: accuracy >= 0.99")


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ("accuracy", "the rule ends too early"),
        ("accuracy => 0.9", "cannot read"),
        ("accuracy >= ", "the rule ends too early"),
        (">= 0.9", "must start with a metric name"),
        ("accuracy >= 0.9 0.1", "unexpected '0.1'"),
        ("accuracy >= fast", "'fast' is not a number or `baseline`"),
        ("accuracy >= (baseline - 0.1", "the rule ends too early"),
        ("baseline >= 0.9", "must start with a metric name"),
        ("accuracy ~ 0.9", "cannot read"),
        ("", "empty rule"),
    ],
)
def test_unparsable_rules_name_the_rule_and_show_examples(rule: str, fragment: str) -> None:
    with pytest.raises(GateError) as caught:
        parse_rule(rule)
    message = str(caught.value)
    assert f"gate rule {rule!r}" in message
    assert fragment in message
    assert "accuracy >= baseline - 0.01" in message


def test_unknown_metric_lists_the_known_ones() -> None:
    with pytest.raises(GateError) as caught:
        parse_rules(["acuracy >= 0.9"], known_metrics=list(METRICS))
    assert str(caught.value) == (
        "gate rule 'acuracy >= 0.9': unknown metric 'acuracy'; known metrics: "
        "accuracy, f1_macro, latency_p95_ms, per_class_accuracy.cat"
    )


def test_run_gate_writes_gate_json(tmp_path: Path) -> None:
    gate_path = tmp_path / "gate.json"
    metrics = {"accuracy": 0.95, "per_class_accuracy": {"cat": 0.7}}
    decision = run_gate(
        ["accuracy >= 0.9", "per_class_accuracy.cat >= baseline"],
        metrics,
        BaselineInfo(
            source="git:main",
            ref="main",
            description="x",
            metrics={"accuracy": 0.9, "per_class_accuracy": {"cat": 0.8}},
        ),
        str(gate_path),
    )
    written = json.loads(gate_path.read_text())
    assert list(written) == ["decision", "baseline", "metrics", "rules", "model", "directions"]
    assert written["directions"] == {"accuracy": "higher", "per_class_accuracy.cat": "higher"}
    assert written["model"] == {"path": None, "sha256": None, "run_id": None}
    assert written["decision"] == decision.decision == "fail"
    assert written["baseline"] == {
        "source": "git:main",
        "ref": "main",
        "description": "x",
        "metrics": {"accuracy": 0.9, "per_class_accuracy": {"cat": 0.8}},
    }
    assert written["metrics"] == {"accuracy": 0.95, "per_class_accuracy.cat": 0.7}
    assert read_gate(gate_path) == decision  # what evaluate writes, the readers get back
    assert written["rules"][1] == {
        "rule": "per_class_accuracy.cat >= baseline",
        "metric": "per_class_accuracy.cat",
        "op": ">=",
        "value": 0.7,
        "baseline": 0.8,
        "threshold": 0.8,
        "result": "fail",
        "relative": True,
        "reason": "per_class_accuracy.cat fell 0.8 -> 0.7 (higher is better), threshold 0.8",
    }


# --- properties ---------------------------------------------------------------------------------

numbers = st.floats(min_value=0.001, max_value=1000, allow_nan=False, allow_infinity=False).map(
    lambda x: round(x, 4)
)
metric_names = st.from_regex(r"[a-z][a-z0-9_]{0,12}(\.[a-z0-9_]{1,6})?", fullmatch=True).filter(
    lambda name: name != "baseline"
)
ops = st.sampled_from([">=", "<=", ">", "<", "=="])


@st.composite
def expressions(draw: st.DrawFn, depth: int = 0) -> str:
    if depth > 2 or draw(st.booleans()):
        return draw(st.one_of(numbers.map(repr), st.just("baseline")))
    left = draw(expressions(depth + 1))
    right = draw(expressions(depth + 1))
    op = draw(st.sampled_from(["+", "-", "*"]))
    return f"({left} {op} {right})" if draw(st.booleans()) else f"{left} {op} {right}"


@given(metric=metric_names, op=ops, expr=expressions(), baseline=numbers)
def test_threshold_matches_python_arithmetic(
    metric: str, op: str, expr: str, baseline: float
) -> None:
    rule = parse_rule(f"{metric} {op} {expr}")
    assert rule.metric == metric and rule.op == op
    expected = eval(expr, {"baseline": baseline})  # the test's oracle: Python's own precedence
    assert math.isclose(
        evaluate_expr(rule.threshold, baseline), expected, rel_tol=1e-9, abs_tol=1e-12
    )
    assert rule.relative == ("baseline" in expr)


@given(metric=metric_names, op=ops, expr=expressions(), value=numbers, baseline=numbers)
def test_decision_agrees_with_direct_comparison(
    metric: str, op: str, expr: str, value: float, baseline: float
) -> None:
    rule = parse_rule(f"{metric} {op} {expr}")
    outcome = decide([rule], {metric: value}, {metric: baseline}).rules[0]
    threshold = eval(expr, {"baseline": baseline})
    assume(
        not math.isclose(value, threshold)
    )  # float noise at equality says nothing about the parser
    expected = eval(f"{value!r} {op} {threshold!r}")
    assert outcome.result == ("pass" if expected else "fail")


@given(st.text(max_size=30))
def test_parser_never_crashes_on_junk(text: str) -> None:
    with contextlib.suppress(GateError):
        parse_rule(text)


@pytest.mark.parametrize(
    ("rule", "why"),
    [
        ("accuracy >= 1/0", "division by zero"),
        ("accuracy >= 1 / (baseline - baseline)", "division by zero"),
        ("accuracy >= 1e308 * 10", "the result overflows to infinity"),
        ("accuracy >= 1e308 * 10 - 1e308 * 10", "the result overflows to infinity"),
        ("accuracy >= 1 / (1e308 * 10)", "the result overflows to infinity"),
    ],
)
def test_a_rule_that_cannot_be_evaluated_is_an_error_not_a_pass(rule: str, why: str) -> None:
    with pytest.raises(GateError) as caught:
        decide([parse_rule(rule)], METRICS, BASELINE)
    assert str(caught.value) == f"gate rule {rule!r} cannot be evaluated: {why}; fix the rule"


def test_nan_metric_or_baseline_is_an_error() -> None:
    with pytest.raises(GateError, match="accuracy is nan; re-run `cxml evaluate`"):
        decide([parse_rule("accuracy >= 0.9")], {"accuracy": math.nan}, None)
    with pytest.raises(GateError, match="the baseline's accuracy is inf; fix the baseline"):
        decide([parse_rule("accuracy >= baseline")], METRICS, {"accuracy": math.inf})


def test_an_absolute_rule_ignores_a_nan_baseline() -> None:
    decision = decide([parse_rule("accuracy >= 0.9")], METRICS, {"accuracy": math.nan})
    assert decision.passed


def test_no_baseline_still_skips_a_relative_rule_with_a_division() -> None:
    decision = decide([parse_rule("accuracy >= 1 / baseline")], METRICS, None)
    assert decision.rules[0].result == "skipped" and decision.rules[0].reason == "no baseline"


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ("accuracy >= " + "(" * 100_000 + "1" + ")" * 100_000, "characters long"),
        ("accuracy >= " + "-" * 100_000 + "1", "characters long"),
        ("accuracy >= " + "+".join(["1"] * 100_000), "characters long"),
        ("accuracy >= " + "(" * 17 + "1" + ")" * 17, "nest more than 16 deep"),
        ("accuracy >= " + "- " * 20 + "1", "nest more than 16 deep"),
        ("accuracy >= " + "1" * 400, "is too large for a float"),
    ],
)
def test_huge_or_deep_rules_are_a_clear_error_not_a_recursion_error(
    rule: str, fragment: str
) -> None:
    with pytest.raises(GateError) as caught:
        parse_rule(rule)
    assert fragment in str(caught.value) and len(str(caught.value)) < 1000


def test_the_longest_allowed_rule_parses_and_evaluates() -> None:
    rule = parse_rule("accuracy >= " + "+".join(["0.001"] * 80))
    assert math.isclose(evaluate_expr(rule.threshold, None), 0.08)


def test_an_unevaluable_rule_writes_no_decision(tmp_path: Path) -> None:
    gate_path = tmp_path / "gate.json"
    none = BaselineInfo(source="none", description="no baseline", metrics=None)
    with pytest.raises(GateError):
        run_gate(["accuracy >= 0.9", "accuracy >= 1/0"], {"accuracy": 0.95}, none, str(gate_path))
    assert not gate_path.exists()  # neither pass nor fail: no decision at all

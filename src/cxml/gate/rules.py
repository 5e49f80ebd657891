"""Gate rules (`accuracy >= baseline - 0.005`): parse, decide against metrics and baseline, record.

`python -m cxml.gate` re-decides the gate from metrics/eval.json without re-evaluating.
"""

from __future__ import annotations

import argparse
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cxml.core.errors import GateError

Result = Literal["pass", "fail", "skipped"]

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}
EXAMPLES = (
    "e.g. 'accuracy >= 0.9', 'accuracy >= baseline - 0.005', 'latency_p95_ms <= baseline * 1.10'"
)
_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)(?P<percent>%)?"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)|(?P<op>>=|<=|==|[<>+\-*/()]))"
)


# --- expressions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class BaselineValue:
    """The word `baseline`: the same metric's value in the baseline."""


@dataclass(frozen=True)
class Negate:
    operand: Expr


@dataclass(frozen=True)
class BinaryOp:
    op: str
    left: Expr
    right: Expr


Expr = Number | BaselineValue | Negate | BinaryOp
_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}


def uses_baseline(expr: Expr) -> bool:
    if isinstance(expr, BaselineValue):
        return True
    if isinstance(expr, Negate):
        return uses_baseline(expr.operand)
    if isinstance(expr, BinaryOp):
        return uses_baseline(expr.left) or uses_baseline(expr.right)
    return False


def evaluate_expr(expr: Expr, baseline: float | None) -> float:
    if isinstance(expr, Number):
        return expr.value
    if isinstance(expr, BaselineValue):
        if baseline is None:
            raise ValueError("no baseline value")
        return baseline
    if isinstance(expr, Negate):
        return -evaluate_expr(expr.operand, baseline)
    left, right = evaluate_expr(expr.left, baseline), evaluate_expr(expr.right, baseline)
    if expr.op == "/" and right == 0:
        raise ValueError("division by zero")
    return _ARITHMETIC[expr.op](left, right)


# --- parsing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateRule:
    text: str
    metric: str
    op: str
    threshold: Expr

    @property
    def relative(self) -> bool:
        return uses_baseline(self.threshold)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    value: float = 0.0


def tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    stripped = text.rstrip()
    while position < len(stripped):
        match = _TOKEN.match(stripped, position)
        if match is None or match.end() == position:
            bad = stripped[position:].strip()[:10]
            raise GateError(f"gate rule {text!r}: cannot read {bad!r}; write rules like {EXAMPLES}")
        if match.group("number") is not None:
            value = float(match.group("number"))
            if match.group("percent"):
                value /= 100.0
            tokens.append(_Token("number", match.group(0).strip(), value))
        elif match.group("name") is not None:
            tokens.append(_Token("name", match.group("name")))
        else:
            tokens.append(_Token("op", match.group("op")))
        position = match.end()
    return tokens


class _Parser:
    """Recursive descent over `metric OP expr`; expr has + - * / ( ) numbers and `baseline`."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.position = 0

    def fail(self, problem: str) -> GateError:
        return GateError(f"gate rule {self.text!r}: {problem}; write rules like {EXAMPLES}")

    def peek(self) -> _Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise self.fail("the rule ends too early")
        self.position += 1
        return token

    def rule(self) -> GateRule:
        first = self.take()
        if first.kind != "name" or first.text == "baseline":
            raise self.fail("it must start with a metric name")
        comparison = self.take()
        if comparison.text not in COMPARISONS:
            raise self.fail(f"expected a comparison (>=, <=, >, <, ==) after {first.text!r}")
        threshold = self.expr()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek().text!r}")  # type: ignore[union-attr]
        return GateRule(
            text=self.text.strip(), metric=first.text, op=comparison.text, threshold=threshold
        )

    def expr(self) -> Expr:
        left = self.term()
        while (token := self.peek()) is not None and token.text in ("+", "-"):
            self.take()
            left = BinaryOp(token.text, left, self.term())
        return left

    def term(self) -> Expr:
        left = self.factor()
        while (token := self.peek()) is not None and token.text in ("*", "/"):
            self.take()
            left = BinaryOp(token.text, left, self.factor())
        return left

    def factor(self) -> Expr:
        token = self.take()
        if token.kind == "number":
            return Number(token.value)
        if token.kind == "name":
            if token.text != "baseline":
                raise self.fail(f"{token.text!r} is not a number or `baseline`")
            return BaselineValue()
        if token.text == "-":
            return Negate(self.factor())
        if token.text == "(":
            inner = self.expr()
            if self.take().text != ")":
                raise self.fail("a parenthesis is not closed")
            return inner
        raise self.fail(f"unexpected {token.text!r}")


def parse_rule(text: str) -> GateRule:
    if not isinstance(text, str) or not text.strip():
        raise GateError(f"gate rule {text!r}: empty rule; write rules like {EXAMPLES}")
    return _Parser(text).rule()


def parse_rules(texts: Sequence[str], known_metrics: Sequence[str] | None = None) -> list[GateRule]:
    """Parse every rule; with `known_metrics`, an unknown metric name is an error listing them."""
    rules = [parse_rule(text) for text in texts]
    if known_metrics is not None:
        for rule in rules:
            if rule.metric not in known_metrics:
                listing = ", ".join(sorted(known_metrics, key=_metric_sort_key))
                raise GateError(
                    f"gate rule {rule.text!r}: unknown metric {rule.metric!r}; known metrics: {listing}"
                )
    return rules


def _metric_sort_key(name: str) -> tuple[int, str]:
    return (name.count("."), name)


# --- deciding -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleResult:
    rule: str
    metric: str
    op: str
    value: float | None
    baseline: float | None
    threshold: float | None
    result: Result
    relative: bool
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "metric": self.metric,
            "op": self.op,
            "value": self.value,
            "baseline": self.baseline,
            "threshold": self.threshold,
            "result": self.result,
            "relative": self.relative,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class GateDecision:
    rules: tuple[RuleResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.result != "fail" for r in self.rules)

    @property
    def decision(self) -> Literal["pass", "fail"]:
        return "pass" if self.passed else "fail"

    @property
    def failed_rules(self) -> list[RuleResult]:
        return [r for r in self.rules if r.result == "fail"]


def check_rule(
    rule: GateRule, metrics: Mapping[str, float], baseline: Mapping[str, float] | None
) -> RuleResult:
    value = metrics.get(rule.metric)
    base = baseline.get(rule.metric) if baseline is not None else None

    def result(
        outcome: Result, threshold: float | None = None, reason: str | None = None
    ) -> RuleResult:
        return RuleResult(
            rule.text, rule.metric, rule.op, value, base, threshold, outcome, rule.relative, reason
        )

    if value is None:
        return result("fail", reason=f"{rule.metric} was not measured")
    if rule.relative and base is None:
        why = "no baseline" if baseline is None else f"the baseline has no {rule.metric}"
        return result("skipped", reason=why)
    try:
        threshold = evaluate_expr(rule.threshold, base)
    except ValueError as exc:
        return result("skipped", reason=str(exc))
    passed = COMPARISONS[rule.op](value, threshold)
    return result("pass" if passed else "fail", threshold=threshold)


def decide(
    rules: Sequence[GateRule], metrics: Mapping[str, float], baseline: Mapping[str, float] | None
) -> GateDecision:
    return GateDecision(tuple(check_rule(rule, metrics, baseline) for rule in rules))


# --- presenting and recording -----------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def gate_table(decision: GateDecision) -> str:
    """A plain-text table for logs: rule | value | baseline | threshold | result."""
    header = ("rule", "value", "baseline", "threshold", "result")
    rows = [
        (
            r.rule,
            _fmt(r.value),
            _fmt(r.baseline),
            _fmt(r.threshold),
            r.result + (f" ({r.reason})" if r.reason else ""),
        )
        for r in decision.rules
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    verdict = (
        "PASS" if decision.passed else "FAIL: " + "; ".join(r.rule for r in decision.failed_rules)
    )
    return "\n".join([*lines, f"gate: {verdict}"])


def gate_record(
    decision: GateDecision, metrics: Mapping[str, float], baseline: dict[str, Any]
) -> dict[str, Any]:
    return {
        "decision": decision.decision,
        "baseline": baseline,
        "metrics": dict(metrics),
        "rules": [r.to_dict() for r in decision.rules],
    }


def run_gate(
    rule_texts: Sequence[str],
    metrics: Mapping[str, Any],
    baseline_metrics: Mapping[str, Any] | None,
    baseline_info: dict[str, Any],
    gate_path: str,
) -> GateDecision:
    """Parse, decide, write gate.json and print the table; shared by evaluate and `cxml gate`."""
    from cxml.core import console, files
    from cxml.core.metrics import flatten

    flat = flatten(metrics)
    flat_baseline = flatten(baseline_metrics) if baseline_metrics is not None else None
    rules = parse_rules(rule_texts, known_metrics=list(flat))
    decision = decide(rules, flat, flat_baseline)
    files.write_json(gate_path, gate_record(decision, flat, baseline_info))
    console.info(gate_table(decision))
    return decision


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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cxml gate", description=__doc__)
    parser.add_argument("--params", default=None, help="params file (default: params.yaml)")
    add_gate_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from cxml.core import files, ghactions
    from cxml.core.config import load_params
    from cxml.gate.baseline import resolve_baseline
    from cxml.tracking.runs import champion_metrics

    args = parse_args(argv)
    params = load_params(args.params)
    rule_texts = args.gate if args.gate is not None else list(params.evaluate.gate)
    parse_rules(rule_texts)  # syntax errors before any I/O
    metrics = files.read_json(params.outputs.eval_metrics, what="evaluation metrics")
    baseline = resolve_baseline(
        args.baseline or params.evaluate.baseline,
        params.outputs.eval_metrics,
        champion_lookup=lambda: champion_metrics(params.tracking),
    )
    decision = run_gate(
        rule_texts, metrics, baseline.metrics, baseline.to_dict(), params.outputs.gate
    )
    ghactions.set_output("gate", decision.decision)
    ghactions.set_output("gate-file", params.outputs.gate)
    return 0 if decision.passed or args.no_fail else 1


if __name__ == "__main__":
    from cxml.core.console import run_entry_point

    raise SystemExit(run_entry_point(main))

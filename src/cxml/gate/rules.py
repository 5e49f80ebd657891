"""The gate's rule language (`accuracy >= baseline - 0.005`), pure: parse, decide, tabulate."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from cxml.core.errors import GateError
from cxml.core.metrics import direction_of, judge_change, resolved_directions
from cxml.records.gate import Decision, GateResult, GateRule, RuleOutcome

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}
EXAMPLES = (
    "e.g. 'accuracy >= 0.9', 'accuracy >= baseline - 0.01', 'latency_p95_ms <= baseline * 1.5 + 5'"
)
MAX_RULE_LENGTH = 500
"""Characters in one rule: real rules are a line; longer is a mistake or an attack."""
MAX_NESTING = 16
"""Parentheses and signs nested in one rule; the parser and evaluator recurse this deep."""
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


class NotComputable(ValueError):
    """A threshold has no finite value: a division by zero, an overflow, a NaN."""


def evaluate_expr(expr: Expr, baseline: float | None) -> float:
    """The threshold's value; NotComputable when any step of it is not a finite number."""
    if isinstance(expr, Number):
        return _finite(expr.value)
    if isinstance(expr, BaselineValue):
        if baseline is None:
            raise ValueError("no baseline value")
        return _finite(baseline)
    if isinstance(expr, Negate):
        return -evaluate_expr(expr.operand, baseline)
    left, right = evaluate_expr(expr.left, baseline), evaluate_expr(expr.right, baseline)
    if expr.op == "/" and right == 0:
        raise NotComputable("division by zero")
    return _finite(_ARITHMETIC[expr.op](left, right))


def _finite(value: float) -> float:
    if math.isnan(value):
        raise NotComputable("the result is not a number (NaN)")
    if math.isinf(value):
        raise NotComputable("the result overflows to infinity")
    return value


# --- parsing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A parsed rule: `metric op threshold`, the threshold an expression that may use `baseline`."""

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
            if math.isinf(value):
                raise GateError(
                    f"gate rule {text!r}: the number {match.group('number')[:12]}... is too large "
                    f"for a float; write rules like {EXAMPLES}"
                )
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
        self.nesting = 0

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

    def rule(self) -> Rule:
        first = self.take()
        if first.kind != "name" or first.text == "baseline":
            raise self.fail("it must start with a metric name")
        comparison = self.take()
        if comparison.text not in COMPARISONS:
            raise self.fail(f"expected a comparison (>=, <=, >, <, ==) after {first.text!r}")
        threshold = self.expr()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek().text!r}")  # type: ignore[union-attr]
        return Rule(
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
        if token.text in ("-", "("):
            with self.nested():
                if token.text == "-":
                    return Negate(self.factor())
                inner = self.expr()
                if self.take().text != ")":
                    raise self.fail("a parenthesis is not closed")
                return inner
        raise self.fail(f"unexpected {token.text!r}")

    @contextmanager
    def nested(self) -> Iterator[None]:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise self.fail(f"parentheses and signs nest more than {MAX_NESTING} deep")
        yield
        self.nesting -= 1


def parse_rule(text: str) -> Rule:
    if not isinstance(text, str) or not text.strip():
        raise GateError(f"gate rule {text!r}: empty rule; write rules like {EXAMPLES}")
    if len(text) > MAX_RULE_LENGTH:
        raise GateError(
            f"gate rule {text[:40]!r}... is {len(text)} characters long; keep a rule under "
            f"{MAX_RULE_LENGTH} characters, e.g. {EXAMPLES}"
        )
    return _Parser(text).rule()


def parse_rules(texts: Sequence[str], known_metrics: Sequence[str] | None = None) -> list[Rule]:
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


def check_rule(
    rule: Rule,
    metrics: Mapping[str, float],
    baseline: Mapping[str, float] | None,
    directions: Mapping[str, str] | None = None,
) -> GateRule:
    """One rule against the (flat) metrics and baseline metrics: pass, fail or skipped, and why
    (a failed rule says how the metric moved and which way is better)."""
    value = metrics.get(rule.metric)
    base = baseline.get(rule.metric) if baseline is not None else None

    def result(
        outcome: RuleOutcome, threshold: float | None = None, reason: str | None = None
    ) -> GateRule:
        return GateRule(
            rule=rule.text,
            metric=rule.metric,
            op=rule.op,
            value=value,
            baseline=base,
            threshold=threshold,
            result=outcome,
            relative=rule.relative,
            reason=reason,
        )

    if value is None:
        return result("fail", reason=f"{rule.metric} was not measured")
    if not math.isfinite(value):
        raise not_computable(rule, f"{rule.metric} is {value}", "re-run `cxml evaluate`")
    if rule.relative and base is None:
        why = "no baseline" if baseline is None else f"the baseline has no {rule.metric}"
        return result("skipped", reason=why)
    if base is not None and rule.relative and not math.isfinite(base):
        raise not_computable(rule, f"the baseline's {rule.metric} is {base}", "fix the baseline")
    try:
        threshold = evaluate_expr(rule.threshold, base)
    except NotComputable as exc:
        raise not_computable(rule, str(exc), "fix the rule") from None
    if COMPARISONS[rule.op](value, threshold):
        return result("pass", threshold=threshold)
    why = failure_reason(rule, value, threshold, metrics, baseline or {}, directions)
    return result("fail", threshold=threshold, reason=why)


def failure_reason(
    rule: Rule,
    value: float,
    threshold: float,
    metrics: Mapping[str, float],
    baseline: Mapping[str, float],
    directions: Mapping[str, str] | None,
) -> str:
    """`rmse rose 0.12 -> 0.15 (lower is better), threshold 0.132`, with `; within noise (…)`
    when the change cannot be told apart from chance (core/metrics.py says when)."""
    direction = direction_of(rule.metric, directions)
    better = f" ({direction} is better)" if direction else ""
    change = judge_change(rule.metric, metrics, baseline, declared=directions)
    if change is None:
        return f"{rule.metric} is {_fmt(value)}{better}, threshold {_fmt(threshold)}"
    text = (
        f"{rule.metric} {change.moved} {_fmt(change.baseline)} -> {_fmt(value)}{better}, "
        f"threshold {_fmt(threshold)}"
    )
    if change.verdict == "within noise":
        note = change.noise_note()
        text += f"; within noise ({note})" if note else "; within noise"
    return text


def not_computable(rule: Rule, why: str, fix: str) -> GateError:
    """A rule that cannot be evaluated stops the gate: it must never count as a pass or a skip."""
    return GateError(f"gate rule {rule.text!r} cannot be evaluated: {why}; {fix}")


def decide(
    rules: Sequence[Rule],
    metrics: Mapping[str, float],
    baseline: Mapping[str, float] | None,
    directions: Mapping[str, str] | None = None,
) -> GateResult:
    """The gate: it fails when any rule fails (a skipped rule does not fail it).

    A rule that cannot be evaluated (division by zero, overflow, NaN) raises GateError: the
    gate has no decision then, neither pass nor skip.

    `metrics` and `baseline` are flat (`per_class_accuracy.3`); the result records `metrics`,
    and its `baseline` is left for the caller, who knows where the baseline came from.
    `directions` (params.yaml's evaluate.directions) are recorded resolved for every metric, so
    the report judges changes the same way without params.yaml."""
    checked = tuple(check_rule(rule, metrics, baseline, directions) for rule in rules)
    decision: Decision = "fail" if any(rule.result == "fail" for rule in checked) else "pass"
    return GateResult(
        decision=decision,
        rules=checked,
        metrics=dict(metrics),
        directions=resolved_directions(list(metrics), directions),
    )


# --- presenting -----------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def gate_table(decision: GateResult) -> str:
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

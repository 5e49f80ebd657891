"""The report's markdown, built by pure functions from already-loaded inputs."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from cxml.core.metrics import EVAL_METRICS, SPREAD_SUFFIX, Change, is_neutral, judge_change
from cxml.report.escape import (
    code,
    code_cell,
    escape_text,
    html_text,
    is_web_url,
    link_destination,
)
from cxml.report.mermaid import per_class_chart, training_charts
from cxml.report.model import (
    PER_CLASS_PREFIX,
    ConfusionMatrix,
    DemoPage,
    GateResult,
    GateRule,
    ReportData,
    RunLinks,
)

GITHUB_COMMENT_LIMIT = 65_536
"""GitHub rejects issue/commit comments longer than this many characters."""
SizeUnit = Literal["characters", "bytes"]
EVAL_METRIC_ORDER = tuple(
    spelled
    for name in (*EVAL_METRICS, "num_test_images", "num_features")
    for spelled in ((name, name + SPREAD_SUFFIX) if name.startswith("latency_") else (name,))
)
TRAIN_METRIC_ORDER = ("val_accuracy", "val_loss", "accuracy", "loss", "epochs", "seconds")
MAX_CONFUSION_TABLE_CLASSES = 12
RESULT_MARK = {"pass": "✅ pass", "fail": "❌ fail", "skipped": "⏭️ skipped"}
VERDICT_MARK = {
    "better": "🟢 better",
    "worse": "🔴 worse",
    "within noise": "⚪ within noise",
    "same": "same",
    "neutral": "",
}


@dataclass(frozen=True)
class Section:
    key: str
    markdown: str
    trim_rank: int | None = None
    """Sections with a rank can be cut when the comment is too long, lowest rank first."""
    trimmed_note: str = ""


@dataclass(frozen=True)
class Report:
    sections: tuple[Section, ...]
    trimmed: tuple[str, ...] = field(default=())
    trimmed_for: str = f"GitHub's {GITHUB_COMMENT_LIMIT:,}-character comment limit"


# --------------------------------------------------------------------------- small formatting


def watermark(name: str) -> str:
    """The hidden first line that lets a later run find and update this model's comment."""
    return f"<!-- cxml-report: {safe_watermark_name(name)} -->"


def safe_watermark_name(name: str) -> str:
    cleaned = re.sub(r"\s+", " ", name.replace("--", "-").replace(">", "")).strip()
    return cleaned or "cxml-model"


def has_watermark(body: str | None, name: str) -> bool:
    if not body:
        return False
    mark = watermark(name)
    return any(line.strip() == mark for line in body.splitlines()[:3])


def format_value(metric: str, value: float | None) -> str:
    if value is None:
        return "—"
    if value != value:
        return "NaN"
    if float(value).is_integer() and (is_neutral(metric) or abs(value) >= 1000):
        return f"{int(value):,}"
    if metric.removesuffix(SPREAD_SUFFIX).endswith("_ms") or "seconds" in metric:
        return f"{value:,.3f}" if abs(value) < 1 else f"{value:,.2f}"
    return f"{value:.4f}"


def format_delta(metric: str, current: float, baseline: float) -> str:
    delta = current - baseline
    if abs(delta) < 1e-12:
        return "= 0"
    arrow = "▲" if delta > 0 else "▼"
    sign = "+" if delta > 0 else "−"
    absolute = format_value(metric, abs(delta))
    text = f"{arrow} {sign}{absolute}"
    if baseline != 0:
        text += f" ({sign}{abs(delta) / abs(baseline) * 100:.2f}%)"
    return text


def judgement(change: Change | None) -> str:
    """🟢 better / 🔴 worse / ⚪ within noise, knowing the metric's direction (gate.json's
    `directions`, from params.yaml) and its noise (`+1 image of 269`, the latency trials' spread);
    neutral metrics get no marker."""
    if change is None:
        return ""
    mark = VERDICT_MARK[change.verdict]
    note = change.noise_note()
    if note and change.verdict in ("better", "worse", "within noise"):
        mark += f" ({note})"
    return mark


def table(header: Sequence[str], align: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ordered_metrics(metrics: Mapping[str, float], order: Sequence[str]) -> list[str]:
    known = [name for name in order if name in metrics]
    rest = sorted(name for name in metrics if name not in order)
    return known + rest


# --------------------------------------------------------------------------- sections


def verdict(gate: GateResult, metrics: Mapping[str, float]) -> str:
    """The first thing a reviewer reads: pass/fail, and which rules failed."""
    checked = len(gate.rules) - len(gate.skipped_rules)
    counts = f"{checked} rule{'' if checked == 1 else 's'} checked"
    skipped = ""
    if gate.skipped_rules:
        skipped = (
            f"; {len(gate.skipped_rules)} skipped "
            f"({escape_text(gate.skipped_rules[0].reason or 'no baseline')})"
        )
    if gate.decision == "pass":
        headline = headline_metric(gate, metrics)
        return f"### ✅ Gate passed{headline}\n\n{counts}, all pass{skipped}."
    failed = gate.failed_rules
    names = ", ".join(
        f"{code(rule.rule)} ({rule_numbers(rule)}{noise_in(rule, gate, metrics)})"
        for rule in failed
    )
    if not failed:
        names = "gate.json says fail but lists no failing rule"
    return f"### ❌ Gate failed: {names}\n\n{len(failed)} of {counts} failed{skipped}."


def headline_metric(gate: GateResult, metrics: Mapping[str, float]) -> str:
    name = gate.rules[0].metric if gate.rules and gate.rules[0].metric in metrics else "accuracy"
    if name not in metrics:
        return ""
    text = f": {escape_text(name)} {format_value(name, metrics[name])}"
    baseline = gate.baseline_metrics or {}
    if name in baseline:
        label = escape_text(gate.baseline_label)
        text += f", {format_delta(name, metrics[name], baseline[name])} vs {label}"
        verdict = judgement(judge_change(name, metrics, baseline, declared=gate.directions))
        text += f" — {verdict}" if verdict and verdict != "same" else ""
    return text


def noise_in(rule: GateRule, gate: GateResult, metrics: Mapping[str, float]) -> str:
    """`, within noise: -1 image of 269` when the rule's metric moved no more than chance."""
    baseline = gate.baseline_metrics or {}
    change = judge_change(rule.metric, metrics, baseline, declared=gate.directions)
    if change is None or change.verdict != "within noise":
        return ""
    note = change.noise_note()
    return f", within noise: {note}" if note else ", within noise"


def rule_numbers(rule: GateRule) -> str:
    value = format_value(rule.metric, rule.value)
    threshold = format_value(rule.metric, rule.threshold)
    return f"{escape_text(rule.metric)} = {value}, threshold {threshold}"


def metrics_section(data: ReportData) -> str:
    baseline = data.gate.baseline_metrics
    directions = data.gate.directions
    rows = [
        metric_row(name, name, data.metrics, baseline, directions)
        for name in ordered_metrics(data.metrics, EVAL_METRIC_ORDER)
        if not name.startswith(PER_CLASS_PREFIX)
    ]
    if data.train_metrics:
        train_baseline = data.baseline_train_metrics or {}
        rows += [
            metric_row(f"train.{name}", name, data.train_metrics, train_baseline, directions)
            for name in ordered_metrics(data.train_metrics, TRAIN_METRIC_ORDER)
        ]
    if baseline is None:
        rows = [row[:2] for row in rows]
        text = table(["metric", "this change"], ["---", "---:"], rows)
        return f"#### Metrics\n\n{text}\n\n_{no_baseline_note(data.gate)}_"
    header = [
        "metric",
        "this change",
        f"baseline ({escape_text(data.gate.baseline_label)})",
        "Δ",
        "",
    ]
    return "#### Metrics\n\n" + table(header, ["---", "---:", "---:", "---:", ":---"], rows)


def no_baseline_note(gate: GateResult) -> str:
    """`No baseline: <why>.` without saying "no baseline" twice."""
    why = re.sub(r"^no baseline:?\s*", "", gate.baseline_description, flags=re.I).strip()
    return f"No baseline: {escape_text(why)}." if why else "No baseline."


def metric_row(
    label: str,
    name: str,
    metrics: Mapping[str, float],
    baseline: Mapping[str, float] | None,
    directions: Mapping[str, str] | None,
    support: Mapping[str, int] | None = None,
) -> list[str]:
    """`label | value | baseline | Δ | judgement` for `metrics[name]` against `baseline[name]`."""
    current = metrics[name]
    if baseline is None or name not in baseline:
        return [code_cell(label), format_value(label, current), "—", "—", "no baseline"]
    change = judge_change(name, metrics, baseline, declared=directions, support=support)
    return [
        code_cell(label),
        format_value(label, current),
        format_value(label, baseline[name]),
        format_delta(label, current, baseline[name]),
        judgement(change),
    ]


def per_class_section(data: ReportData) -> str | None:
    rows_by_name = {row.name: row for row in data.per_class or ()}
    from_metrics = {
        name[len(PER_CLASS_PREFIX) :]: value
        for name, value in data.metrics.items()
        if name.startswith(PER_CLASS_PREFIX)
    }
    accuracy = from_metrics or {name: row.accuracy for name, row in rows_by_name.items()}
    if not accuracy:
        return None
    baseline = data.gate.baseline_metrics
    supports = {name: row.support for name, row in rows_by_name.items() if row.support > 0}
    by_metric = {PER_CLASS_PREFIX + cls: value for cls, value in accuracy.items()}
    rows: list[list[str]] = []
    for cls in accuracy:
        support = str(rows_by_name[cls].support) if cls in rows_by_name else "—"
        name = PER_CLASS_PREFIX + cls
        cells = metric_row(name, name, by_metric, baseline, data.gate.directions, supports)
        rows.append([code_cell(cls), support, *(cells[1:] if baseline is not None else cells[1:2])])
    if baseline is None:
        body = table(["class", "support", "accuracy"], ["---", "---:", "---:"], rows)
    else:
        label = escape_text(data.gate.baseline_label)
        header = ["class", "support", "accuracy", f"baseline ({label})", "Δ", ""]
        body = table(header, ["---", "---:", "---:", "---:", "---:", ":---"], rows)
    lowest = min(accuracy, key=lambda name: accuracy[name])
    summary = (
        f"Per-class accuracy ({len(rows)} classes, lowest: {html_text(lowest)} "
        f"at {format_value('accuracy', accuracy[lowest])})"
    )
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"


def gate_section(gate: GateResult) -> str:
    rows = [
        [
            code_cell(rule.rule),
            format_value(rule.metric, rule.value),
            format_value(rule.metric, rule.threshold),
            RESULT_MARK[rule.result] + (f" ({escape_text(rule.reason)})" if rule.reason else ""),
        ]
        for rule in gate.rules
    ]
    if not rows:
        return "#### Gate rules\n\n_No gate rules are configured (`evaluate.gate` in params.yaml)._"
    text = table(["rule", "value", "threshold", "result"], ["---", "---:", "---:", ":---"], rows)
    text += skipped_rules_notice(gate)
    if gate.baseline_metrics is None:
        return f"#### Gate rules\n\n{text}"
    return f"#### Gate rules\n\n{text}\n\nBaseline: {escape_text(gate.baseline_description)}."


def skipped_rules_notice(gate: GateResult) -> str:
    """A skipped rule is a check that did not run: say so below the table, with the reason."""
    skipped = gate.skipped_rules
    if not skipped:
        return ""
    count = f"{len(skipped)} rule{'' if len(skipped) == 1 else 's'}"
    why = escape_text(gate.baseline_description if gate.baseline_metrics is None else "")
    why = why or escape_text(skipped[0].reason or "no baseline")
    return (
        f"\n\n> ⚠️ **{count} not checked**: {why}. "
        "Set `evaluate.require_baseline: true` to fail instead of skipping."
    )


def params_section(data: ReportData) -> str:
    changes = data.param_changes
    if changes is None:
        return "#### Params\n\n_Baseline params are not available, so no params diff is shown._"
    if not changes:
        return f"#### Params\n\nNo params changed against {code(data.gate.baseline_label)}."
    rows = [
        [code_cell(c.key), code_cell(render_param(c.baseline)), code_cell(render_param(c.current))]
        for c in changes
    ]
    header = ["param", f"baseline ({escape_text(data.gate.baseline_label)})", "this change"]
    return "#### Params changed\n\n" + table(header, ["---", "---", "---"], rows)


def render_param(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(render_param(v) for v in value) + "]"
    if isinstance(value, Mapping):  # evaluate.directions
        return "{" + ", ".join(f"{k}: {render_param(v)}" for k, v in value.items()) + "}"
    return str(value)


def confusion_section(matrix: ConfusionMatrix | None) -> str | None:
    if matrix is None or not matrix.classes:
        return None
    if len(matrix.classes) <= MAX_CONFUSION_TABLE_CLASSES:
        header = ["actual ↓ / predicted →", *(escape_text(c) for c in matrix.classes)]
        rows = []
        for i, cls in enumerate(matrix.classes):
            cells = [
                f"**{n}**" if i == j else ("·" if n == 0 else str(n))
                for j, n in enumerate(matrix.counts[i])
            ]
            rows.append([f"**{escape_text(cls)}**", *cells])
        body = table(header, ["---", *["---:"] * len(matrix.classes)], rows)
    else:
        body = top_confusions(matrix)
    return f"<details><summary>Confusion matrix</summary>\n\n{body}\n\n</details>"


def top_confusions(matrix: ConfusionMatrix, limit: int = 10) -> str:
    mistakes = [(n, i, j) for i, j, n in matrix.nonzero if i != j and n > 0]
    if not mistakes:
        return "No misclassified test images."
    mistakes.sort(key=lambda m: -m[0])  # stable: ties stay in row, then column order
    names = matrix.classes
    rows = [[code_cell(names[i]), code_cell(names[j]), str(n)] for n, i, j in mistakes[:limit]]
    return f"Most frequent mistakes ({len(matrix.classes)} classes):\n\n" + table(
        ["actual", "predicted", "images"], ["---", "---", "---:"], rows
    )


def demo_page_line(page: DemoPage | None) -> str:
    """`▶ Try the staging model: <link>`; nothing for a URL that is not http(s)."""
    if page is None or not is_web_url(page.url):
        return ""
    link = f"[{escape_text(page.url)}]({link_destination(page.url)})"
    return f"▶ Try the {escape_text(page.environment)} model: {link}"


def images_section(data: ReportData) -> str | None:
    if not data.images:
        return f"_{data.images_note}_" if data.images_note else None
    pictures = "\n\n".join(
        f"![{escape_text(img.title)}]({link_destination(img.src)})" for img in data.images
    )
    return f"<details><summary>Charts as images</summary>\n\n{pictures}\n\n</details>"


def footer(links: RunLinks) -> str:
    parts: list[str] = []
    if links.commit:
        parts.append(f"commit {code(links.commit[:12])}")
    if links.run_url and is_web_url(links.run_url):
        parts.append(f"[workflow run]({link_destination(links.run_url)})")
    if links.mlflow_run_id:
        run = code(links.mlflow_run_id)
        parts.append(
            f"MLflow run [{run}]({link_destination(links.mlflow_run_url)})"
            if links.mlflow_run_url and is_web_url(links.mlflow_run_url)
            else f"MLflow run {run}"
        )
    if links.model_name and links.model_version:
        parts.append(f"model {code(links.model_name)} v{escape_text(links.model_version)}")
    parts.append(f"cxml {escape_text(links.version)}")
    return "---\n<sub>" + " · ".join(parts) + "</sub>"


# --------------------------------------------------------------------------- assembly


MODEL_UNCHANGED_NOTE = (
    "> ♻️ **Model unchanged**: this change touches nothing the train stage depends on in "
    "dvc.yaml (its command, params and deps), so DVC reused the existing model and no GPU "
    "time was spent; the numbers below are that model's."
)


def build_report(data: ReportData) -> Report:
    """All sections in reading order, with the ranks that decide what is cut first."""
    sections = [
        Section("title", f"{watermark(data.name)}\n## 📊 Model report: {escape_text(data.name)}"),
        Section("verdict", verdict(data.gate, data.metrics)),
        Section("demo_page", demo_page_line(data.demo_page)),
        Section("unchanged", MODEL_UNCHANGED_NOTE if data.model_unchanged else ""),
        Section("metrics", metrics_section(data)),
        Section("per_class_table", per_class_section(data) or "", 1, "the per-class table"),
        Section("gate", gate_section(data.gate)),
        Section("params", params_section(data), 4, "the params diff"),
        Section("training_charts", training_charts(data) or "", 5, "the training charts"),
        Section("per_class_chart", per_class_chart(data) or "", 3, "the per-class chart"),
        Section("confusion", confusion_section(data.confusion) or "", 2, "the confusion matrix"),
        Section("images", images_section(data) or ""),
        Section("footer", footer(data.links)),
    ]
    return Report(tuple(s for s in sections if s.markdown))


def render(report: Report, *, hint: str = "") -> str:
    parts = [s.markdown for s in report.sections]
    if report.trimmed:
        note = (
            f"> ✂️ Trimmed to fit {report.trimmed_for}: "
            f"left out {', '.join(report.trimmed)}. The full report is in {hint}."
        )
        parts.insert(2, note)
    return "\n\n".join(parts) + "\n"


def size_of(text: str, unit: SizeUnit) -> int:
    return len(text.encode("utf-8")) if unit == "bytes" else len(text)


def cut_to_size(text: str, size: int, unit: SizeUnit) -> str:
    """The longest start of `text` within `size`; in bytes, never half a UTF-8 character."""
    if unit == "characters":
        return text[: max(0, size)]
    return text.encode("utf-8")[: max(0, size)].decode("utf-8", errors="ignore")


def fit_to_limit(report: Report, *, limit: int, hint: str, unit: SizeUnit = "characters") -> str:
    """Render the report, cutting trimmable sections (lowest rank first) until it fits `limit`.

    GitHub counts a comment's limit in characters and the job summary's in bytes (`unit`).
    """
    limit_name = (
        f"GitHub's {limit:,}-character comment limit"
        if unit == "characters"
        else "GitHub's 1 MiB job-summary limit"
    )
    report = replace(report, trimmed_for=limit_name)
    text = render(report, hint=hint)
    ranked = sorted(
        (s for s in report.sections if s.trim_rank is not None), key=lambda s: s.trim_rank or 0
    )
    for section in ranked:
        if size_of(text, unit) <= limit:
            return text
        report = replace(
            report,
            sections=tuple(s for s in report.sections if s.key != section.key),
            trimmed=(*report.trimmed, section.trimmed_note),
        )
        text = render(report, hint=hint)
    if size_of(text, unit) <= limit:
        return text
    return hard_truncate(text, limit=limit, hint=hint, unit=unit)


def hard_truncate(text: str, *, limit: int, hint: str, unit: SizeUnit = "characters") -> str:
    """Last resort when even the essential sections are too long (thousands of gate rules)."""
    tail = f"\n\n…\n\n> ✂️ Cut at GitHub's size limit; the full report is in {hint}.\n"
    cut = cut_to_size(text, limit - size_of(tail, unit), unit)
    cut = cut[: cut.rfind("\n")] if "\n" in cut else cut
    return cut + tail

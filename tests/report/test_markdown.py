"""The report's markdown: pure builders, direction-aware deltas, trimming, GFM rendering."""

from __future__ import annotations

import re

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options
from hypothesis import given, settings
from hypothesis import strategies as st

from cxml.core.errors import RecordError
from cxml.core.metrics import judge_change
from cxml.records.gate import parse_gate
from cxml.report.markdown import (
    GITHUB_COMMENT_LIMIT,
    build_report,
    fit_to_limit,
    format_delta,
    has_watermark,
    judgement,
    verdict,
    watermark,
)
from cxml.report.mermaid import number, quote, thin_indices
from cxml.report.model import ParamChange, PerClassRow, ReportData, diff_params
from tests.report.samples import gate, report_data, rule


def render_gfm(markdown: str) -> str:
    options = Options.CMARK_OPT_UNSAFE
    return cmarkgfm.github_flavored_markdown_to_html(markdown, options=options)


# ---------------------------------------------------------------- direction and numbers


def judged(metric: str, current: float, baseline: float, **known: object) -> str:
    extra = {k: float(v) for k, v in known.items() if isinstance(v, int | float)}
    declared = known.get("declared")
    return judgement(
        judge_change(
            metric,
            {metric: current, **extra},
            {metric: baseline, **extra},
            declared=declared if isinstance(declared, dict) else None,
        )
    )


def test_accuracy_up_is_better_and_latency_up_is_worse() -> None:
    assert judged("accuracy", 0.97, 0.96) == "🟢 better"
    assert judged("latency_p95_ms", 1.5, 1.2) == "🔴 worse"
    assert judged("val_loss", 0.2, 0.3) == "🟢 better"
    assert judged("num_test_images", 300, 270) == ""
    assert judged("accuracy", 0.9, 0.9) == "same"


@pytest.mark.parametrize("metric", ["rmse", "mae", "mse", "wer", "cer", "val_rmse", "error_rate"])
def test_error_measures_going_up_are_worse_by_default(metric: str) -> None:
    assert judged(metric, 0.15, 0.12) == "🔴 worse"
    assert judged(metric, 0.10, 0.12) == "🟢 better"


def test_a_declared_direction_wins_over_the_name() -> None:
    assert judged("my_score", 0.5, 0.4) == "🟢 better"
    assert judged("my_score", 0.5, 0.4, declared={"my_score": "lower"}) == "🔴 worse"
    assert judged("latency_p95_ms", 2.0, 1.0, declared={"latency_p95_ms": "higher"}) == "🟢 better"


def test_accuracy_changes_of_one_or_two_images_are_within_noise() -> None:
    # 269 test images: 0.9628 -> 0.9665 is one more image right; 5 more is a real change
    assert judged("accuracy", 260 / 269, 259 / 269, num_test_images=269) == (
        "⚪ within noise (+1 image of 269)"
    )
    assert judged("accuracy", 257 / 269, 259 / 269, num_test_images=269) == (
        "⚪ within noise (−2 images of 269)".replace("−", "-")
    )
    assert judged("accuracy", 264 / 269, 259 / 269, num_test_images=269) == (
        "🟢 better (+5 images of 269)"
    )
    assert judged("accuracy", 256 / 269, 259 / 269, num_test_images=269) == (
        "🔴 worse (-3 images of 269)"
    )


def test_latency_changes_inside_the_trials_spread_are_within_noise() -> None:
    assert judged("latency_p95_ms", 1.5, 1.2, latency_p95_ms_spread=0.4) == (
        "⚪ within noise (trial spread 0.4 ms)"
    )
    assert judged("latency_p95_ms", 1.5, 1.2, latency_p95_ms_spread=0.1) == (
        "🔴 worse (trial spread 0.1 ms)"
    )


def test_delta_shows_arrow_absolute_and_percent() -> None:
    assert format_delta("accuracy", 0.97, 0.96) == "▲ +0.0100 (+1.04%)"
    assert format_delta("latency_p95_ms", 1.2, 1.5) == "▼ −0.300 (−20.00%)"
    assert format_delta("latency_p95_ms", 0.165, 0.125) == "▲ +0.040 (+32.00%)"
    assert format_delta("accuracy", 0.5, 0.0) == "▲ +0.5000"
    assert format_delta("accuracy", 0.9, 0.9) == "= 0"


def test_metrics_table_rows_carry_both_values_delta_and_judgement() -> None:
    text = fit_to_limit(build_report(report_data()), limit=GITHUB_COMMENT_LIMIT, hint="x")
    assert (
        "| `accuracy` | 0.9700 | 0.9600 | ▲ +0.0100 (+1.04%) | 🟢 better (+3 images of 270) |"
        in text
    )
    assert "| `latency_p95_ms` | 1.50 | 1.20 | ▲ +0.300 (+25.00%) | 🔴 worse |" in text


def test_missing_baseline_is_shown_as_such() -> None:
    no_baseline = gate(
        baseline=None,
        no_baseline_because="no baseline: metrics/eval.json is not committed at origin/main",
    )
    text = fit_to_limit(
        build_report(report_data(gate=no_baseline)), limit=GITHUB_COMMENT_LIMIT, hint="x"
    )
    assert "| metric | this change |\n|---|---:|\n| `accuracy` | 0.9700 |" in text
    assert "_No baseline: metrics/eval.json is not committed at origin/main._" in text
    assert "| `0` | 27 | 0.9900 |\n" in text  # per-class table without empty baseline columns


# ---------------------------------------------------------------- verdict and gate


def test_verdict_pass_names_the_headline_metric() -> None:
    text = verdict(gate(baseline={"accuracy": 0.96}), {"accuracy": 0.97})
    assert text.startswith("### ✅ Gate passed: accuracy 0.9700, ▲ +0.0100 (+1.04%) vs origin/main")


def test_verdict_fail_names_every_failing_rule_with_numbers() -> None:
    rules = (
        rule("accuracy >= 0.9", 0.85, 0.9, "fail"),
        rule("latency_p95_ms <= baseline * 1.10", 2.0, 1.32, "fail", relative=True),
        rule("f1_macro >= baseline - 0.01", 0.8, None, "skipped", reason="no baseline"),
    )
    text = verdict(gate("fail", rules=rules), {"accuracy": 0.85})
    first_line = text.splitlines()[0]
    assert first_line.startswith("### ❌ Gate failed: ")
    assert "`accuracy >= 0.9` (accuracy = 0.8500, threshold 0.9000)" in first_line
    assert (
        "`latency_p95_ms <= baseline * 1.10` (latency_p95_ms = 2.00, threshold 1.32)" in first_line
    )
    assert "1 skipped (no baseline)" in text


def test_gate_table_shows_skipped_rules_with_reason() -> None:
    rules = (rule("accuracy >= baseline - 0.005", 0.97, None, "skipped", reason="no baseline"),)
    text = fit_to_limit(build_report(report_data(gate=gate(rules=rules))), limit=10**6, hint="x")
    assert "| `accuracy >= baseline - 0.005` | 0.9700 | — | ⏭️ skipped (no baseline) |" in text


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], "expected a JSON object"),
        ({"decision": "maybe", "rules": []}, "decision must be 'pass' or 'fail'"),
        ({"decision": "pass", "rules": {}}, "rules must be a list"),
        (
            {"decision": "pass", "rules": [{"rule": "a > 1", "result": "ok"}]},
            "result must be pass, fail or skipped",
        ),
        (
            {"decision": "pass", "rules": [{"rule": "a > 1", "result": "pass", "value": "x"}]},
            "expected a number",
        ),
        (
            {"decision": "pass", "rules": [], "baseline": {"metrics": [1]}},
            "baseline.metrics must be an object",
        ),
    ],
)
def test_malformed_gate_json_names_the_problem_and_the_fix(document: object, problem: str) -> None:
    with pytest.raises(RecordError, match=re.escape(problem)) as caught:
        parse_gate(document)
    assert "re-run `cxml evaluate`" in str(caught.value)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- params


def test_params_diff_lists_changed_keys_only() -> None:
    changes = diff_params(
        {"train.lr": 0.05, "train.epochs": 15, "x.y": 1},
        {"train.lr": 0.1, "train.epochs": 15, "z": 2},
    )
    assert [c.key for c in changes] == ["train.lr", "x.y", "z"]
    assert changes[1].current == "(not set)"


def test_params_section_without_baseline_params_says_so() -> None:
    text = fit_to_limit(build_report(report_data(param_changes=None)), limit=10**6, hint="x")
    assert "_Baseline params are not available, so no params diff is shown._" in text


# ---------------------------------------------------------------- watermark


def test_watermark_is_the_first_line_and_is_per_name() -> None:
    text = fit_to_limit(build_report(report_data()), limit=10**6, hint="x")
    assert text.splitlines()[0] == "<!-- cxml-report: digits -->"
    assert has_watermark(text, "digits")
    assert not has_watermark(text, "digits-large")
    assert not has_watermark("quoting <!-- cxml-report: digits --> in a reply\n\nlater", "other")


def test_watermark_name_cannot_close_the_html_comment() -> None:
    assert watermark("a --> b\nc") == "<!-- cxml-report: a - b c -->"


# ---------------------------------------------------------------- size limit


def big_report() -> ReportData:
    classes = [f"class-{i:04d}" for i in range(1500)]
    metrics = {"accuracy": 0.9, **{f"per_class_accuracy.{c}": 0.9 for c in classes}}
    return report_data(
        metrics=metrics,
        per_class=tuple(PerClassRow(c, 0.9, 10) for c in classes),
        param_changes=tuple(ParamChange(f"data.key_{i}", i, i + 1) for i in range(400)),
    )


def test_a_too_long_report_is_trimmed_long_tables_first_with_a_note() -> None:
    text = fit_to_limit(
        build_report(big_report()), limit=GITHUB_COMMENT_LIMIT, hint="the job summary"
    )
    assert len(text) <= GITHUB_COMMENT_LIMIT
    assert (
        "✂️ Trimmed to fit GitHub's 65,536-character comment limit: left out the per-class table"
        in text
    )
    assert "The full report is in the job summary." in text
    assert text.splitlines()[0] == "<!-- cxml-report: digits -->"
    assert "Gate rules" in text and "#### Metrics" in text


def test_untrimmed_report_has_no_trim_note() -> None:
    text = fit_to_limit(build_report(report_data()), limit=GITHUB_COMMENT_LIMIT, hint="x")
    assert "Trimmed" not in text


@settings(max_examples=30, deadline=None)
@given(limit=st.integers(min_value=400, max_value=80_000))
def test_any_limit_is_respected_and_the_watermark_kept(limit: int) -> None:
    text = fit_to_limit(build_report(big_report()), limit=limit, hint="the job summary")
    assert len(text) <= limit
    assert has_watermark(text, "digits")


def multibyte_report() -> ReportData:
    """Class names in three-byte characters: the report is about three times longer in bytes."""
    classes = [f"猫{i:04d}" + "类" * 40 for i in range(1500)]
    metrics = {"accuracy": 0.9, **{f"per_class_accuracy.{c}": 0.9 for c in classes}}
    return report_data(metrics=metrics, per_class=tuple(PerClassRow(c, 0.9, 10) for c in classes))


def test_the_job_summary_is_trimmed_by_utf8_bytes_not_characters() -> None:
    report = build_report(multibyte_report())
    full = fit_to_limit(report, limit=10**7, hint="x")
    limit = len(full) + 1000  # fits in characters, not in bytes
    assert len(full.encode()) > limit
    text = fit_to_limit(report, limit=limit, hint="`report.md`", unit="bytes")
    assert len(text.encode("utf-8")) <= limit
    assert "Trimmed to fit GitHub's 1 MiB job-summary limit: left out the per-class table" in text
    assert has_watermark(text, "digits")


@settings(max_examples=30, deadline=None)
@given(limit=st.integers(min_value=400, max_value=80_000))
def test_any_byte_limit_is_respected_without_splitting_a_character(limit: int) -> None:
    text = fit_to_limit(build_report(multibyte_report()), limit=limit, hint="x", unit="bytes")
    assert len(text.encode("utf-8")) <= limit  # a str: no half character could be in it
    assert has_watermark(text, "digits")


# ---------------------------------------------------------------- GFM rendering


def test_markdown_renders_as_github_flavoured_markdown_without_leftovers() -> None:
    text = fit_to_limit(build_report(report_data()), limit=GITHUB_COMMENT_LIMIT, hint="x")
    html = render_gfm(text)
    assert html.count("<table>") == 5  # metrics, per-class, gate, params, confusion
    assert '<pre lang="mermaid"><code>' in html or '<code class="language-mermaid">' in html
    visible = re.sub(r"<pre.*?</pre>", "", html, flags=re.S)
    visible = re.sub(r"<code>.*?</code>", "", visible, flags=re.S)
    for leftover in ("|---", "**", "```", "<!-- raw HTML omitted -->", "&lt;details", "&lt;sub"):
        assert leftover not in visible, leftover
    assert "<details>" in html and "<sub>" in html


def test_cells_with_pipes_and_backticks_do_not_break_tables() -> None:
    data = report_data(param_changes=(ParamChange("evaluate.gate", ["a | b", "c`d"], []),))
    html = render_gfm(fit_to_limit(build_report(data), limit=10**6, hint="x"))
    params_table = html.split("Params changed")[1].split("</table>")[0]
    assert params_table.count("<tr>") == 2  # header + one row: the pipe did not split the cell


# ---------------------------------------------------------------- mermaid helpers


def test_mermaid_literals_are_safe() -> None:
    assert quote('say "hi"\n now') == "\"say 'hi' now\""
    assert number(1e-7) == "0"
    assert number(float("nan")) == "0"
    assert number(0.12345) == "0.1235"
    assert thin_indices(5) == [0, 1, 2, 3, 4]
    thinned = thin_indices(500)
    assert len(thinned) <= 61 and thinned[0] == 0 and thinned[-1] == 499


def test_model_unchanged_note_follows_the_verdict() -> None:
    from cxml.report.markdown import MODEL_UNCHANGED_NOTE, render

    text = render(build_report(report_data(model_unchanged=True)))
    assert text.index("Gate") < text.index(MODEL_UNCHANGED_NOTE) < text.index("#### Metrics")
    assert MODEL_UNCHANGED_NOTE not in render(build_report(report_data()))


@pytest.mark.parametrize("name", ["a|b", "*bold*", "[x](http://e.com)", "<b>c</b>", "@team"])
def test_confusion_matrix_headers_are_escaped(name: str) -> None:
    from cxml.report.markdown import confusion_section
    from cxml.report.model import ConfusionMatrix

    section = confusion_section(ConfusionMatrix((name, "cat"), ((5, 1), (2, 7)))) or ""
    html = render_gfm(section)
    header = re.search(r"<thead>(.*?)</thead>", html, flags=re.S)
    assert header is not None
    cells = re.findall(r"<th[^>]*>(.*?)</th>", header.group(1))
    assert len(cells) == 3  # a `|` in a class name splits no column
    assert "<b>" not in header.group(1) and "<a " not in header.group(1)
    assert "<em>" not in header.group(1) and "<strong>" not in header.group(1)


def test_failed_rule_inside_noise_says_so_in_the_verdict() -> None:
    failed = rule("accuracy >= baseline", 249 / 269, 250 / 269, "fail")
    result = gate("fail", {"accuracy": 250 / 269, "num_test_images": 269}, (failed,))
    text = verdict(result, {"accuracy": 249 / 269, "num_test_images": 269})
    assert "within noise: -1 image of 269" in text

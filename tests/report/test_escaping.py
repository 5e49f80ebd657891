"""Text from the pull request (names, labels, reasons, params) is shown, never obeyed, in the report.

Every hostile string below goes into every field a user controls, the report is rendered by
cmarkgfm (GitHub's own cmark-gfm, with raw HTML let through as GitHub does before sanitising),
and the HTML must hold no element, link, image or @mention that the report did not make.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options

from cxml.records.gate import BaselineInfo, GateResult
from cxml.report.escape import ZERO_WIDTH_JOINER, code, code_cell, escape_text
from cxml.report.markdown import build_report, fit_to_limit
from cxml.report.mermaid import quote
from cxml.report.model import (
    ChartImage,
    ConfusionMatrix,
    GateRule,
    ParamChange,
    PerClassRow,
    ReportData,
    RunLinks,
)

RUN_URL = "https://github.com/octo-org/octo-repo/actions/runs/5"
MLFLOW_URL = "https://mlflow.example.com/#/experiments/1/runs/abc"
OUR_IMAGE = "report-training.png"
HOSTILE = [
    "<img src=https://evil.example/pixel.png>",
    "<details open><summary>click me</summary>",
    "<script>alert(1)</script>",
    '<a href="https://evil.example">x</a>',
    "[click here](https://evil.example/phish)",
    "![pixel](https://evil.example/p.png)",
    "see https://evil.example/bare and www.evil.example",
    "<https://evil.example/auto>",
    "cc @octo-org/admins and @mallory",
    "mail mallory@evil.example",
    "fixes #1 and octo-org/octo-repo#7",
    "&lt;img src=x&gt; &#64;team &#x40;team",
    "pipe | in | name",
    "line\nbreak\n\n# heading\n<img src=x>",
    "back`tick``s```",
    "`starts and ends`",
    "*emph* _under_ ~~strike~~ **strong**",
    "$\\color{red}{\\text{approved}}$",
    "<!-- cxml-report: other -->",
    "tab\there \\ backslash \\| pipe\\",
    '%%{init: {"theme": "dark"}}%% #lt;b#gt; "quoted"',
    "\u202eevil\u202c bidi",
]


def render_gfm(markdown: str) -> str:
    return cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)


def hostile_report(evil: str) -> ReportData:
    """`evil` as the report name, a metric, a class, the baseline, a rule, a reason, a param..."""
    classes = (evil, *(f"class-{i}" for i in range(12)))  # 13: the top-mistakes table too
    rules = (
        GateRule(f"{evil} >= 0.9", evil, 0.5, 0.9, None, "fail", False, evil),
        GateRule(
            "accuracy >= baseline - 0.005", "accuracy", 0.9, None, None, "skipped", True, evil
        ),
    )
    baseline = BaselineInfo(
        source=f"git:{evil}", description=evil, metrics={"accuracy": 0.8, evil: 0.4}, ref=evil
    )
    curve = ({"epoch": 1.0, "loss": 1.0, "val_loss": 1.1, "accuracy": 0.5, "val_accuracy": 0.45},)
    return ReportData(
        name=evil,
        metrics={"accuracy": 0.9, evil: 0.5, f"per_class_accuracy.{evil}": 0.1},
        gate=GateResult(decision="fail", rules=rules, baseline=baseline),
        links=RunLinks(
            version="0.1.0",
            commit="0123456789abcdef",
            run_url=RUN_URL,
            mlflow_run_id=evil,
            mlflow_run_url=MLFLOW_URL,
            model_name=evil,
            model_version=evil,
        ),
        train_metrics={evil: 1.0},
        train_curve=curve,
        baseline_train_curve=curve,
        per_class=tuple(PerClassRow(c, 0.1 if c == evil else 0.9, 10) for c in classes),
        confusion=ConfusionMatrix(
            classes, tuple(tuple(3 if i == j else 1 for j in range(13)) for i in range(13))
        ),
        param_changes=(ParamChange(evil, evil, [evil, 1]), ParamChange("train.lr", 0.1, evil)),
        images=(ChartImage(evil, OUR_IMAGE),),
    )


def small_confusion_report(evil: str) -> ReportData:
    """Two classes: the confusion matrix is a table whose header and first column are names."""
    return ReportData(
        name="digits",
        metrics={"accuracy": 0.9},
        gate=GateResult(decision="pass", rules=()),
        links=RunLinks(version="0.1.0"),
        confusion=ConfusionMatrix((evil, "cat"), ((5, 1), (2, 7))),
    )


def without_code(page: str) -> str:
    """The HTML a reader sees as text or markup: no code spans, code blocks or HTML comments."""
    page = re.sub(r"<!--.*?-->", "", page, flags=re.S)
    page = re.sub(r"<pre.*?</pre>", "", page, flags=re.S)
    return re.sub(r"<code>.*?</code>", "", page, flags=re.S)


def visible_text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", without_code(page)))


@pytest.mark.parametrize("evil", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_in_every_field_makes_no_html_links_images_or_mentions(evil: str) -> None:
    markdown = fit_to_limit(build_report(hostile_report(evil)), limit=10**6, hint="x")
    page = render_gfm(markdown)
    markup = without_code(page)
    for element in ("<script", "<iframe", '<a href="https://evil', "<summary>click"):
        assert element not in markup, element
    assert re.findall(r'<img src="([^"]*)"', markup) == [OUR_IMAGE]  # the chart, nothing else
    assert set(re.findall(r'<a href="([^"]*)"', markup)) == {RUN_URL, MLFLOW_URL}
    assert markup.count("<details") == 3  # per-class table, confusion matrix, chart images: ours
    assert markup.count("<table>") == 5  # metrics, per-class, gate, params, mistakes: none more
    text = visible_text(page)
    assert not re.search(r"(?<![\w])@[A-Za-z0-9]", text), "a live @mention"
    assert not re.search(r"(?<![\w])#\d", text), "a live issue reference"
    params_table = page.split("Params changed</h4>")[1].split("</table>")[0]
    first_cell = re.search(r"<tbody>\s*<tr>\s*<td><code>(.*?)</code></td>", params_table, re.S)
    assert first_cell is not None, "the params table lost its first cell"
    assert html.unescape(first_cell.group(1)) in (one_line(evil), one_line(evil).strip())


def test_hostile_text_is_shown_as_written() -> None:
    """Escaping hides nothing: the heading shows the name, the code spans the exact text."""
    for evil in HOSTILE:
        page = render_gfm(fit_to_limit(build_report(hostile_report(evil)), limit=10**6, hint="x"))
        heading = re.search(r"<h2>(.*?)</h2>", page, flags=re.S)
        assert heading is not None
        shown = html.unescape(heading.group(1)).replace(ZERO_WIDTH_JOINER, "")
        assert shown == "📊 Model report: " + one_line(evil)
        code_spans = {html.unescape(c) for c in re.findall(r"<code>(.*?)</code>", page, re.S)}
        assert one_line(evil) in code_spans or one_line(evil).strip() in code_spans


def one_line(text: str) -> str:
    return re.sub(r"[\x00-\x1f\u2028\u2029\u202a-\u202e\u2066-\u2069]+", " ", text)


@pytest.mark.parametrize("evil", HOSTILE, ids=range(len(HOSTILE)))
def test_class_names_in_the_confusion_table_header_are_text(evil: str) -> None:
    page = render_gfm(
        fit_to_limit(build_report(small_confusion_report(evil)), limit=10**6, hint="x")
    )
    assert "<img" not in page and "<script" not in page and "<a href" not in page
    assert not re.search(r"(?<![\w])@[A-Za-z0-9]", visible_text(page))
    confusion = page.split("Confusion matrix</summary>")[1]
    header = re.search(r"<thead>(.*?)</thead>", confusion, flags=re.S)
    assert header is not None and len(re.findall(r"<th[ >]", header.group(1))) == 3


@pytest.mark.parametrize(
    "value", ["a``b", "`", "``", " x ", "a|b", "x`", "```fence```", "", "a\nb"]
)
def test_code_spans_show_exactly_their_text(value: str) -> None:
    inline = render_gfm(f"before {code(value)} after")
    cell = render_gfm(f"| h |\n|---|\n| {code_cell(value)} |")
    expected = value.replace("\n", " ")
    for page in (inline, cell):
        (content,) = re.findall(r"<code>(.*?)</code>", page, flags=re.S)
        shown = html.unescape(content)
        assert shown == expected or (shown.strip() == expected.strip() and not expected.strip())


def test_mentions_keep_their_look_but_not_their_ping() -> None:
    assert escape_text("@team") == f"@{ZERO_WIDTH_JOINER}team"
    assert escape_text("a_b_c and f1_macro") == "a_b_c and f1_macro"  # intraword `_` is inert
    assert escape_text("_x_") == "\\_x\\_"
    assert escape_text("$x$") == "\\$x\\$"  # GitHub renders $…$ as math


# ---------------------------------------------------------------- Mermaid


MERMAID_DIR = Path(__file__).resolve().parents[1] / "support" / "mermaid"


def test_mermaid_labels_cannot_carry_directives_entities_or_markdown() -> None:
    label = quote('%%{init: {"theme": "dark"}}%% #lt;img#gt; `**md**` <b>\n"x"')
    assert "%%" not in label and "#lt;" not in label and "`" not in label and "<" not in label
    assert label.count('"') == 2 and "\n" not in label


def test_hostile_names_keep_every_mermaid_block_a_valid_xychart() -> None:
    node = shutil.which("node")
    if node is None or not (MERMAID_DIR / "node_modules" / "mermaid").is_dir():
        pytest.skip("the real Mermaid parser is not installed (tests/test_mermaid.py installs it)")
    blocks = [
        block
        for evil in HOSTILE
        for block in re.findall(
            r"```mermaid\n(.*?)```",
            fit_to_limit(build_report(hostile_report(evil)), limit=10**6, hint="x"),
            flags=re.S,
        )
    ]
    assert len(blocks) == 3 * len(HOSTILE)
    result = subprocess.run(
        [node, str(MERMAID_DIR / "parse.mjs")],
        input=json.dumps(blocks),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    parsed = json.loads(result.stdout)
    failures = [
        (r.get("error"), block) for r, block in zip(parsed, blocks, strict=True) if not r["ok"]
    ]
    assert not failures
    assert {r["config"].get("theme") for r in parsed} == {None}  # no directive reached Mermaid

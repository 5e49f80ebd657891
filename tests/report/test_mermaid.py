"""The report's Mermaid charts parse with the real `mermaid` npm package (run headless by node)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cxml.report.markdown import build_report, fit_to_limit
from cxml.report.model import PerClassRow
from tests.report.samples import gate, report_data

MERMAID_DIR = Path(__file__).resolve().parents[1] / "support" / "mermaid"


@pytest.fixture(scope="module")
def mermaid_parser() -> Path:
    """tests/support/mermaid with its node_modules installed (npm ci on first use)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run the real Mermaid parser")
    if not (MERMAID_DIR / "node_modules" / "mermaid").is_dir():
        command = "ci" if (MERMAID_DIR / "package-lock.json").exists() else "install"
        result = subprocess.run(
            [npm, command, "--no-audit", "--no-fund"],
            cwd=MERMAID_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, (
            f"npm {command} failed in tests/support/mermaid:\n{result.stderr[-2000:]}"
        )
    return MERMAID_DIR / "parse.mjs"


def parse(parser: Path, diagrams: list[str]) -> list[dict[str, Any]]:
    result = subprocess.run(
        ["node", str(parser)],
        input=json.dumps(diagrams),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    parsed: list[dict[str, Any]] = json.loads(result.stdout)
    return parsed


def mermaid_blocks(markdown: str) -> list[str]:
    return re.findall(r"```mermaid\n(.*?)```", markdown, flags=re.S)


def curve(epochs: int, shift: float = 0.0) -> tuple[dict[str, float], ...]:
    return tuple(
        {
            "epoch": float(e),
            "loss": 1 / e + shift,
            "val_loss": 1.1 / e,
            "accuracy": 1 - 1 / (e + 1),
            "val_accuracy": 0.98 - 1 / (e + 2),
        }
        for e in range(1, epochs + 1)
    )


def variants() -> dict[str, str]:
    """Reports whose charts differ in shape: the cases a grammar slip would show up in."""
    many = tuple(PerClassRow(f'class "{i}", [x]', 0.5 + i / 200, 10) for i in range(90))
    return {
        "typical": fit_to_limit(
            build_report(report_data(train_curve=curve(15), baseline_train_curve=curve(12, 0.1))),
            limit=10**6,
            hint="x",
        ),
        "no baseline": fit_to_limit(
            build_report(report_data(gate=gate(baseline=None), train_curve=curve(3))),
            limit=10**6,
            hint="x",
        ),
        "long training": fit_to_limit(
            build_report(report_data(train_curve=curve(500))), limit=10**6, hint="x"
        ),
        "many odd class names": fit_to_limit(
            build_report(replace(report_data(), per_class=many)), limit=10**6, hint="x"
        ),
        "one epoch": fit_to_limit(
            build_report(report_data(train_curve=curve(1))), limit=10**6, hint="x"
        ),
    }


def test_every_mermaid_block_parses_as_an_xychart(mermaid_parser: Path) -> None:
    labelled = [
        (name, block) for name, text in variants().items() for block in mermaid_blocks(text)
    ]
    assert len(labelled) >= 12
    results = parse(mermaid_parser, [block for _, block in labelled])
    failures = [
        f"{name}: {r.get('error')}\n{block}"
        for (name, block), r in zip(labelled, results, strict=True)
        if not r["ok"]
    ]
    assert not failures, "\n\n".join(failures)
    assert {r["diagramType"] for r in results} == {"xychart"}
    palettes = {r["config"]["themeVariables"]["xyChart"]["plotColorPalette"] for r in results}
    assert "#93c5fd, #2563eb, #f97316" in palettes  # the frontmatter config reached Mermaid


def test_the_documented_example_report_parses(mermaid_parser: Path) -> None:
    example = (Path(__file__).resolve().parents[2] / "docs" / "report-example.md").read_text(
        encoding="utf-8"
    )
    blocks = mermaid_blocks(example)
    assert len(blocks) == 3
    assert all(r["ok"] for r in parse(mermaid_parser, blocks))


def test_the_parser_really_rejects_broken_charts(mermaid_parser: Path) -> None:
    broken = ["xychart-beta\n    line [1, 2,", 'xychart-beta\n    x-axis ["a" "b"]\n    bar [1, 2]']
    assert [r["ok"] for r in parse(mermaid_parser, broken)] == [False, False]


def test_the_per_class_chart_axis_starts_at_zero() -> None:
    """Bars on a zoomed axis lie: 0.97 would look like half of 0.99."""
    rows = tuple(PerClassRow(str(i), 0.95 + i / 1000, 27) for i in range(5))
    text = fit_to_limit(build_report(replace(report_data(), per_class=rows)), limit=10**6, hint="x")
    chart = text.split("#### Per-class accuracy")[1]
    assert '    y-axis "accuracy" 0 --> 1\n' in chart

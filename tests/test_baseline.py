"""`baseline: auto` in real git repositories: master, a remote's own default, a shallow clone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import GIT_ENV, git, run_cxml, write_params

EVAL = {
    "accuracy": 0.95,
    "precision_macro": 0.95,
    "recall_macro": 0.95,
    "f1_macro": 0.95,
    "latency_p50_ms": 1.0,
    "latency_p95_ms": 2.0,
    "num_test_images": 100,
    "per_class_accuracy": {"0": 0.9, "1": 1.0},
}


def make_repository(path: Path, branch: str, *, accuracy: float = 0.96) -> Path:
    """A repository on `branch` whose committed metrics/eval.json is the baseline to find."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", branch)
    (path / "metrics").mkdir()
    (path / "metrics/eval.json").write_text(json.dumps({**EVAL, "accuracy": accuracy}))
    write_params(path, "tracking:\n  enabled: false\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "baseline")
    return path


def start_feature_branch(clone: Path) -> None:
    """The PR's working copy: the feature branch with freshly evaluated, uncommitted metrics."""
    git(clone, "checkout", "-q", "-B", "feature")
    (clone / "metrics/eval.json").write_text(json.dumps(EVAL))


def gate_in(directory: Path, **env: str) -> tuple[int, str, str]:
    clean = {k: "" for k in ("GITHUB_BASE_REF", "GITHUB_ACTIONS", "MLFLOW_TRACKING_URI")}
    result = run_cxml("gate", cwd=directory, env={**GIT_ENV, **clean, **env}, timeout=120)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GITHUB_BASE_REF", "GITHUB_ACTIONS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in GIT_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("clean_env")
def test_a_repository_on_master_finds_its_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cxml.gate.baseline import resolve_baseline

    repo = make_repository(tmp_path / "repo", "master")
    start_feature_branch(repo)
    monkeypatch.chdir(repo)
    baseline = resolve_baseline("auto", "metrics/eval.json")
    assert baseline.ref == "master" and baseline.metrics is not None
    assert baseline.metrics["accuracy"] == 0.96


@pytest.mark.usefixtures("clean_env")
def test_the_remotes_default_branch_comes_from_origin_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote whose default is neither main nor master (`trunk`): found through origin/HEAD."""
    from cxml.gate.baseline import default_base_refs, resolve_baseline

    upstream = make_repository(tmp_path / "upstream", "trunk", accuracy=0.97)
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", f"file://{upstream}", str(clone))
    start_feature_branch(clone)
    monkeypatch.chdir(clone)
    assert default_base_refs()[0] == "origin/trunk"
    baseline = resolve_baseline("auto", "metrics/eval.json")
    assert baseline.ref == "origin/trunk" and baseline.metrics is not None
    assert baseline.metrics["accuracy"] == 0.97


@pytest.fixture
def shallow_pr_checkout(tmp_path: Path) -> Path:
    """What actions/checkout gives a pull request by default: depth 1, only the PR's branch."""
    upstream = make_repository(tmp_path / "upstream", "main")
    git(upstream, "checkout", "-q", "-b", "feature")
    (upstream / "README.md").write_text("change\n")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "feature")
    clone = tmp_path / "clone"
    git(
        tmp_path,
        "clone",
        "-q",
        "--depth",
        "1",
        "--branch",
        "feature",
        "--single-branch",
        f"file://{upstream}",
        str(clone),
    )
    assert git(clone, "rev-parse", "--is-shallow-repository") == "true"
    (clone / "metrics/eval.json").write_text(json.dumps(EVAL))
    return clone


def test_a_shallow_clone_warns_that_relative_rules_were_skipped(shallow_pr_checkout: Path) -> None:
    code, _, stderr = gate_in(shallow_pr_checkout, GITHUB_BASE_REF="main")
    assert code == 0, stderr  # the absolute rule passes; the relative one could not run
    warnings = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, stderr
    assert "1 gate rule skipped" in warnings[0] and "fetch-depth: 0" in warnings[0]
    assert "'accuracy >= baseline - 0.01'" in warnings[0]
    gate = json.loads((shallow_pr_checkout / "gate.json").read_text())
    assert [rule["result"] for rule in gate["rules"]] == ["pass", "skipped"]
    assert "fetch-depth: 0" in gate["baseline"]["description"]


def test_the_skipped_rule_warning_is_an_annotation_in_actions(shallow_pr_checkout: Path) -> None:
    code, stdout, _ = gate_in(shallow_pr_checkout, GITHUB_BASE_REF="main", GITHUB_ACTIONS="true")
    assert code == 0
    annotations = [line for line in stdout.splitlines() if line.startswith("::warning")]
    assert len(annotations) == 1 and "skipped" in annotations[0]


def test_require_baseline_turns_a_missing_baseline_into_an_error(
    shallow_pr_checkout: Path,
) -> None:
    write_params(
        shallow_pr_checkout, "tracking:\n  enabled: false\nevaluate:\n  require_baseline: true\n"
    )
    code, _, stderr = gate_in(shallow_pr_checkout, GITHUB_BASE_REF="main")
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no baseline"), stderr
    assert "fetch-depth: 0" in lines[0] and "require_baseline" in lines[0]
    assert not (shallow_pr_checkout / "gate.json").exists()


def test_require_baseline_passes_when_the_baseline_is_there(tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo", "master", accuracy=0.95)
    start_feature_branch(repo)
    write_params(repo, "tracking:\n  enabled: false\nevaluate:\n  require_baseline: true\n")
    code, _, stderr = gate_in(repo)
    assert code == 0, stderr
    assert "warning" not in stderr
    gate = json.loads((repo / "gate.json").read_text())
    assert gate["baseline"]["ref"] == "master"
    assert [rule["result"] for rule in gate["rules"]] == ["pass", "pass"]


def test_require_baseline_with_baseline_none_is_a_config_error(tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo", "main")
    write_params(
        repo,
        "tracking:\n  enabled: false\nevaluate:\n  baseline: none\n  require_baseline: true\n",
    )
    result = run_cxml("train", cwd=repo, env={**os.environ, **GIT_ENV}, timeout=60)
    assert result.returncode == 2
    assert "evaluate.require_baseline: true needs a baseline" in result.stderr
    assert not (repo / "model/model.pt").exists()


def test_the_report_shows_a_line_for_skipped_rules() -> None:
    from cxml.gate.rules import decide, parse_rules
    from cxml.records.gate import BaselineInfo
    from cxml.report.markdown import gate_section

    rules = parse_rules(["accuracy >= 0.9", "accuracy >= baseline - 0.005"])
    gate = decide(rules, {"accuracy": 0.95}, None)
    why = "no baseline: no base branch found; the checkout is shallow: use fetch-depth: 0"
    gate = type(gate)(
        decision=gate.decision,
        rules=gate.rules,
        baseline=BaselineInfo(source="none", description=why, metrics=None),
    )
    section = gate_section(gate)
    notice = [line for line in section.splitlines() if "not checked" in line]
    assert len(notice) == 1 and "1 rule not checked" in notice[0]
    assert "fetch-depth: 0" in notice[0] and "require_baseline" in notice[0]

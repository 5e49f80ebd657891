"""`cxml init`: what it writes, that it is idempotent and careful, and that the result works."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from cxml import init
from cxml.core.config import Params, load_params
from cxml.core.errors import ConfigError
from tests.support.actions import PYTHON, git, tool_env

ACTIONS = "acme/cxml@v1.2.0"


def init_env(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in tool_env().items() if k != "CXML_ACTIONS"}
    return {**environ, **extra}


def run_init(directory: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "cxml.init", str(directory), *args],
        capture_output=True,
        text=True,
        check=False,
        env=init_env(**extra_env),
        timeout=300,
    )


def run_module(
    repo: Path, env: dict[str, str], *argv: str, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """`python -m ARGV` in `repo`, its output captured."""
    return subprocess.run(
        [PYTHON, "-m", *argv],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=timeout,
    )


@pytest.fixture(autouse=True)
def no_actions_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CXML_ACTIONS", raising=False)


def test_init_writes_params_dvc_workflows_and_ignores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    git(tmp_path, "init", "--quiet")
    assert init.main([str(tmp_path), "--actions", ACTIONS]) == 0
    out = capsys.readouterr().out
    for name in ("params.yaml", "deploy.yaml", "dvc.yaml", ".dvcignore", ".gitignore"):
        assert (tmp_path / name).is_file(), name
    workflows = sorted(p.name for p in (tmp_path / ".github" / "workflows").iterdir())
    assert workflows == ["cxml-main.yml", "cxml-pr-comment.yml", "cxml-pull-request.yml"]
    assert (tmp_path / ".dvc").is_dir(), "dvc init ran"
    assert "labels: [gpu, deploy]" in (tmp_path / ".github" / "actionlint.yaml").read_text(
        encoding="utf-8"
    )
    assert "/mlflow.db" in (tmp_path / ".gitignore").read_text(encoding="utf-8")
    assert "next steps:" in out and "DEPLOY_KEY" in out and "`gpu`" in out


def test_the_written_params_are_the_defaults_and_every_section_dvc_tracks(tmp_path: Path) -> None:
    assert init.main([str(tmp_path), "--no-dvc", "--workflows", "none"]) == 0
    params = load_params(tmp_path / "params.yaml", required=True)
    assert params == Params(source=params.source)
    raw = yaml.safe_load((tmp_path / "params.yaml").read_text(encoding="utf-8"))
    pipeline = yaml.safe_load(init.template_text("dvc-pipeline.yaml"))
    for stage in pipeline["stages"].values():
        for section in stage.get("params", []):
            assert section in raw, f"dvc.yaml tracks {section}, which params.yaml must contain"


def test_init_is_idempotent_and_never_overwrites_without_force(tmp_path: Path) -> None:
    first = run_init(tmp_path, "--workflows", "all", "--no-dvc", "--actions", ACTIONS)
    assert first.returncode == 0, first.stderr
    snapshot = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    again = run_init(tmp_path, "--workflows", "all", "--no-dvc")
    assert again.returncode == 0
    assert "wrote" not in again.stdout and "added" not in again.stdout
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == snapshot

    params = tmp_path / "params.yaml"
    params.write_text("train:\n  epochs: 3\n", encoding="utf-8")
    kept = run_init(tmp_path, "--no-dvc")
    assert "kept      params.yaml (it exists and differs; --force overwrites it)" in kept.stdout
    assert params.read_text(encoding="utf-8") == "train:\n  epochs: 3\n"

    forced = run_init(tmp_path, "--no-dvc", "--force")
    assert "overwrote params.yaml" in forced.stdout
    assert params.read_text(encoding="utf-8") == init.template_text("params.yaml")


def test_init_writes_a_deploy_yaml_that_loads_and_keeps_an_edited_one(tmp_path: Path) -> None:
    from cxml.deploy.config import load_deploy_config

    assert init.main([str(tmp_path), "--no-dvc", "--workflows", "none"]) == 0
    deploy_yaml = tmp_path / "deploy.yaml"
    assert deploy_yaml.read_text(encoding="utf-8") == init.template_text("deploy.yaml")
    config = load_deploy_config(deploy_yaml)
    assert {"staging", "production"} <= set(config.environments)
    assert config.environment("production").host_settings().proxy_config is not None

    deploy_yaml.write_text("# ours\n", encoding="utf-8")
    kept = run_init(tmp_path, "--no-dvc", "--workflows", "none")
    assert "kept      deploy.yaml (it exists and differs; --force overwrites it)" in kept.stdout
    assert deploy_yaml.read_text(encoding="utf-8") == "# ours\n"
    forced = run_init(tmp_path, "--no-dvc", "--workflows", "none", "--force")
    assert "overwrote deploy.yaml" in forced.stdout
    assert deploy_yaml.read_text(encoding="utf-8") == init.template_text("deploy.yaml")


def test_ignore_files_are_merged_not_replaced(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("node_modules/\n/mlflow.db", encoding="utf-8")
    assert init.main([str(tmp_path), "--no-dvc", "--workflows", "none"]) == 0
    lines = (tmp_path / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["node_modules/", "/mlflow.db"]
    assert lines.count("/mlflow.db") == 1
    assert "/model/" in lines  # without DVC, the model is ignored by git directly


def test_actions_reference_is_rewritten(tmp_path: Path) -> None:
    assert (
        init.main(
            [
                str(tmp_path),
                "--no-dvc",
                "--workflows",
                "pull-request",
                "--actions",
                "acme/cxml@v2.1",
            ]
        )
        == 0
    )
    text = (tmp_path / ".github" / "workflows" / "cxml-pull-request.yml").read_text(
        encoding="utf-8"
    )
    assert "acme/cxml/actions/train@v2.1" in text
    assert "org/cxml" not in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workflows", "nightly"], "--workflows: unknown workflow 'nightly'"),
        (["--actions", "cxml"], "--actions: expected OWNER/REPO@REF"),
        ([], "pass --actions OWNER/REPO@REF (the repository and tag you use cxml's actions from"),
    ],
)
def test_bad_options_are_one_clear_error(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_init(tmp_path, "--no-dvc", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "params.yaml").exists()


def test_a_file_is_not_a_directory(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a directory"):
        init.main([str(target)])


def test_cli_front_door_knows_init() -> None:
    result = subprocess.run(
        [PYTHON, "-m", "cxml.cli", "init", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0 and "--workflows" in result.stdout


@pytest.mark.slow
def test_init_then_dvc_repro_runs_the_pipeline_end_to_end(tmp_path: Path) -> None:
    repo = tmp_path / "empty-repo"
    repo.mkdir()
    git(repo, "init", "--quiet")
    result = run_init(repo, "--actions", ACTIONS)
    assert result.returncode == 0, result.stdout + result.stderr
    params = repo / "params.yaml"
    params.write_text(
        params.read_text(encoding="utf-8").replace("epochs: 15", "epochs: 1"), encoding="utf-8"
    )

    env = {**tool_env(), "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1"}
    env = {
        k: v for k, v in env.items() if not k.startswith(("GITHUB_", "CXML_", "MLFLOW_TRACKING"))
    }
    repro = run_module(repo, env, "dvc", "repro", timeout=600)
    assert repro.returncode == 0, repro.stdout + repro.stderr
    for output in (
        "model/model.pt",
        "run.json",
        "metrics/train.json",
        "metrics/eval.json",
        "plots/confusion.csv",
        "dvc.lock",
    ):
        assert (repo / output).is_file(), output
    status = run_module(repo, env, "dvc", "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.strip() == "{}", "everything up to date after repro"
    metrics = run_module(repo, env, "dvc", "metrics", "show", "--json")
    assert metrics.returncode == 0, metrics.stdout + metrics.stderr
    assert '"accuracy"' in metrics.stdout
    assert os.path.exists(repo / ".github" / "workflows" / "cxml-pull-request.yml")

    # The report (charts next to report.md), then init's own next step: `git add -A`.
    report = run_module(repo, env, "cxml.report.step", "--target", "none")
    assert report.returncode == 0, report.stdout + report.stderr
    assert list(repo.glob("*.png")), "the report drew its charts"
    git(repo, "add", "-A")
    staged = git(repo, "diff", "--cached", "--name-only").splitlines()
    assert staged, "git add -A staged the repository's files"
    committed_outputs = {"dvc.lock", "metrics/train.json", "metrics/eval.json"}
    generated = [
        path
        for path in staged
        if not (
            path in committed_outputs
            or path.endswith(".gitignore")
            or path.startswith((".github/", ".dvc/"))
            or path in {"params.yaml", "deploy.yaml", "dvc.yaml", ".dvcignore"}
        )
    ]
    assert generated == [], f"git add -A picked up generated files: {generated}"
    assert not [path for path in staged if path.endswith((".png", ".pt", ".db"))]


def test_written_workflows_pass_actionlint_with_the_written_config(tmp_path: Path) -> None:
    from tests.support.actions import tool

    git(tmp_path, "init", "--quiet")
    assert init.main([str(tmp_path), "--no-dvc", "--workflows", "all", "--actions", ACTIONS]) == 0
    result = subprocess.run(
        [tool("actionlint")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env=tool_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_init_outside_a_git_repository_stops_before_writing_anything(tmp_path: Path) -> None:
    result = run_init(tmp_path / "project")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not inside a git repository" in result.stderr and "git init" in result.stderr
    assert "--no-dvc" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "project" / "params.yaml").exists()


def workflow_uses(repo: Path) -> set[str]:
    text = (repo / ".github" / "workflows" / "cxml-pull-request.yml").read_text(encoding="utf-8")
    return {line.split("uses:", 1)[1].strip() for line in text.splitlines() if "/actions/" in line}


def test_without_a_reference_init_stops_and_asks_before_writing(tmp_path: Path) -> None:
    git(tmp_path, "init", "--quiet")
    result = run_init(tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: pass --actions OWNER/REPO@REF")
    assert "CXML_ACTIONS" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "params.yaml").exists()
    assert not (tmp_path / ".github").exists()


def test_a_rerun_keeps_the_reference_the_workflows_use(tmp_path: Path) -> None:
    assert run_init(tmp_path, "--no-dvc", CXML_ACTIONS="team/cxml@v3").returncode == 0
    again = run_init(tmp_path, "--no-dvc", "--workflows", "all")
    assert again.returncode == 0, again.stderr
    assert "actions from team/cxml@v3 (from cxml-pull-request.yml there)" in again.stdout
    ci = (tmp_path / ".github" / "workflows" / "cxml-schedule.yml").read_text(encoding="utf-8")
    assert "team/cxml/actions/train@v3" in ci


def test_no_workflows_need_no_reference(tmp_path: Path) -> None:
    result = run_init(tmp_path, "--no-dvc", "--workflows", "none")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "params.yaml").is_file()
    assert "actions from" not in result.stdout


def test_the_reference_comes_from_cxml_actions_and_next_steps_say_so(tmp_path: Path) -> None:
    result = run_init(tmp_path, "--no-dvc", CXML_ACTIONS="team/cxml-fork@v3")
    assert result.returncode == 0, result.stderr
    assert workflow_uses(tmp_path) == {
        "team/cxml-fork/actions/train@v3",
        "team/cxml-fork/actions/evaluate@v3",
        "team/cxml-fork/actions/report@v3",
    }
    assert "actions from team/cxml-fork@v3 (from CXML_ACTIONS)" in result.stdout
    assert "cxml init --force --actions OWNER/REPO@REF" in result.stdout


def test_a_bad_cxml_actions_is_one_clear_error(tmp_path: Path) -> None:
    result = run_init(tmp_path, "--no-dvc", CXML_ACTIONS="not a reference")
    assert result.returncode == 2
    assert "error: CXML_ACTIONS: expected OWNER/REPO@REF" in result.stderr
    assert not (tmp_path / "params.yaml").exists()


def test_the_option_wins_over_the_environment(tmp_path: Path) -> None:
    result = run_init(tmp_path, "--no-dvc", "--actions", ACTIONS, CXML_ACTIONS="team/x@v3")
    assert result.returncode == 0, result.stderr
    assert "acme/cxml/actions/train@v1.2.0" in workflow_uses(tmp_path)


@pytest.mark.parametrize(
    ("direct_url", "expected"),
    [
        (
            {
                "url": "https://github.com/acme/cxml.git",
                "vcs_info": {"vcs": "git", "requested_revision": "v1.4", "commit_id": "a" * 40},
            },
            "acme/cxml@v1.4",
        ),
        (
            {
                "url": "ssh://git@github.com/acme/cxml",
                "vcs_info": {"vcs": "git", "commit_id": "b" * 40},
            },
            f"acme/cxml@{'b' * 40}",
        ),
        ({"url": "file:///work/cxml", "dir_info": {"editable": True}}, None),
        (
            {"url": "https://gitlab.com/acme/cxml", "vcs_info": {"vcs": "git", "commit_id": "c"}},
            None,
        ),
        ("not json", None),
    ],
)
def test_a_pip_install_from_github_gives_the_reference(
    direct_url: object, expected: str | None
) -> None:
    import json

    text = direct_url if isinstance(direct_url, str) else json.dumps(direct_url)
    found = init.actions_from_direct_url(text)
    assert (found.text if found else None) == expected

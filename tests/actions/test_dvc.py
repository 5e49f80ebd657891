"""The train action with DVC: `dvc pull` -> `dvc repro` -> `dvc push`, and "model unchanged".

- A local DVC remote, through act: the first run trains and pushes; once dvc.lock is committed
  (as a pull request's author would), the next run on a fresh checkout pulls the model and
  retrains nothing (`model-changed: false`).
- An S3-compatible remote (moto's server on 127.0.0.1, credentials in AWS_* variables, the way
  a workflow passes secrets), through the train step the action runs, in two fresh clones.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.actions import (
    PYTHON,
    ActEnvironment,
    act_env,
    git,
    make_action_repo,
    outputs_step,
    pull_request_payload,
    run_act,
    tool_env,
)

__all__ = ["act_env"]

SMALL_PARAMS_EDIT = ("epochs: 15", "epochs: 2")


def cxml_init(repo: Path) -> None:
    """`cxml init` (no workflows) and small params, as a user would start."""
    result = subprocess.run(
        [PYTHON, "-m", "cxml.init", str(repo), "--workflows", "none", "--force"],
        capture_output=True,
        text=True,
        check=False,
        env=tool_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    params = repo / "params.yaml"
    params.write_text(
        params.read_text(encoding="utf-8").replace(*SMALL_PARAMS_EDIT), encoding="utf-8"
    )


def dvc(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [PYTHON, "-m", "dvc", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
        env={**tool_env(), **(env or {})},
        timeout=300,
    )
    assert result.returncode == 0, f"dvc {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


def remote_files(remote: Path) -> list[Path]:
    return [p for p in remote.rglob("*") if p.is_file()]


def train_workflow(outputs_file: Path, *, push: bool, report: bool = False) -> str:
    report_steps = f"""
      - id: evaluate
        uses: ./actions/evaluate
        with:
          python: {PYTHON}
          fail-on-gate: 'false'
      - id: report
        uses: ./actions/report
        with:
          python: {PYTHON}
          dry-run: 'true'
          model-changed: ${{{{ steps.train.outputs.model-changed }}}}"""
    return f"""name: cxml dvc test
on: pull_request
jobs:
  model:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v6
      - id: train
        uses: ./actions/train
        with:
          python: {PYTHON}
          dvc-push: '{"true" if push else "false"}'{report_steps if report else ""}
{outputs_step(outputs_file)}"""


@pytest.mark.slow
def test_train_action_runs_dvc_and_skips_an_unchanged_model(
    act_env: ActEnvironment, tmp_path: Path
) -> None:
    outputs_file = act_env.work / "outputs.json"
    remote = tmp_path / "dvc-remote"
    repo = make_action_repo(tmp_path / "widgets", workflow=train_workflow(outputs_file, push=True))
    cxml_init(repo)
    dvc(repo, "remote", "add", "-d", "local", str(remote))
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "cxml init, DVC remote")
    event = pull_request_payload(
        7, head_sha=git(repo, "rev-parse", "HEAD"), title="Add DVC", head_ref="dvc"
    )

    first = run_act(repo, "pull_request", event, act_env, outputs_file=outputs_file).check()
    trained = first.outputs("train")
    assert trained["model-changed"] == "true"
    assert trained["model-path"] == "model/model.pt"
    assert trained["run-id"]
    assert "$ dvc repro" in first.log
    assert "$ dvc push" in first.log
    assert remote_files(remote), "dvc push stored nothing in the remote"

    # The author commits what `dvc repro` wrote (dvc.lock, the metrics), as DVC says to.
    committed = (
        ("dvc.lock", "dvc.lock"),
        ("train.json", "metrics/train.json"),
        ("eval.json", "metrics/eval.json"),
    )
    for name, target in committed:
        exported = outputs_file.with_name(f"{outputs_file.name}.{name}")
        (repo / target).parent.mkdir(parents=True, exist_ok=True)
        (repo / target).write_text(exported.read_text(encoding="utf-8"), encoding="utf-8")
    (repo / ".github" / "workflows" / "test.yml").write_text(
        train_workflow(outputs_file, push=False, report=True), encoding="utf-8"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "dvc.lock after repro")

    second = run_act(repo, "pull_request", event, act_env, outputs_file=outputs_file).check()
    unchanged = second.outputs("train")
    assert unchanged["model-changed"] == "false", second.log[-4000:]
    assert unchanged["run-id"] == trained["run-id"]  # run.json came from the remote
    assert "$ dvc pull" in second.log
    assert "model unchanged" in second.log
    assert "epoch 1" not in second.log.lower()  # nothing was trained
    # ...and the report the reviewer reads says so, next to the verdict.
    assert "**Model unchanged**: this change touches nothing the train stage" in second.log
    assert second.outputs("evaluate")["gate"] in ("pass", "fail")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[str]:
    """moto's S3-compatible server on a loopback port; yields its endpoint URL."""
    pytest.importorskip("moto.server")
    pytest.importorskip("dvc_s3")
    port = free_port()
    log = (tmp_path / "moto.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"moto server did not start: {(tmp_path / 'moto.log').read_text()}"
                    ) from None
                time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log.close()


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def run_train_step(
    workspace: Path, *, push: bool, s3_env: dict[str, str], targets: str = ""
) -> dict[str, str]:
    """The train action's step, exactly as action.yml runs it, with `$GITHUB_OUTPUT` read back."""
    output_file = workspace.parent / f"{workspace.name}-output.txt"
    output_file.write_text("", encoding="utf-8")
    env = {
        **tool_env(),
        **s3_env,
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(output_file),
        "GITHUB_STEP_SUMMARY": str(workspace.parent / f"{workspace.name}-summary.md"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "CXML_TRAIN_DVC": "auto",
        "CXML_TRAIN_DVC_PULL": "auto",
        "CXML_TRAIN_DVC_PUSH": "true" if push else "false",
        "CXML_TRAIN_DVC_TARGETS": targets,
    }
    result = subprocess.run(
        [PYTHON, "-m", "cxml.action", "train"],
        cwd=workspace,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    outputs = {}
    for line in output_file.read_text(encoding="utf-8").splitlines():
        name, _, value = line.partition("=")
        outputs[name] = value  # later lines win, as on GitHub
    return outputs


@pytest.mark.slow
def test_train_step_pulls_and_pushes_through_an_s3_remote(s3_server: str, tmp_path: Path) -> None:
    import boto3  # type: ignore[import-untyped]

    boto3.client("s3", endpoint_url=s3_server, **_boto_credentials()).create_bucket(Bucket="models")
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "--quiet", "--initial-branch", "main")
    cxml_init(origin)
    dvc(origin, "remote", "add", "-d", "s3", "s3://models/widgets")
    dvc(origin, "remote", "modify", "s3", "endpointurl", s3_server)
    git(origin, "add", "-A")
    git(origin, "commit", "--quiet", "-m", "cxml init with an S3 remote")

    first_clone = tmp_path / "ci-run-1"
    git(tmp_path, "clone", "--quiet", str(origin), str(first_clone))
    first = run_train_step(first_clone, push=True, s3_env=S3_ENV)
    assert first["model-changed"] == "true"
    stored = boto3.client("s3", endpoint_url=s3_server, **_boto_credentials()).list_objects_v2(
        Bucket="models"
    )
    assert stored.get("KeyCount", 0) > 0, "dvc push stored nothing in the S3 remote"

    # Commit the lock file and metrics from the first run, then a fresh clone runs again.
    for name in ("dvc.lock", "metrics/train.json", "metrics/eval.json"):
        (origin / name).parent.mkdir(parents=True, exist_ok=True)
        (origin / name).write_bytes((first_clone / name).read_bytes())
    git(origin, "add", "-A")
    git(origin, "commit", "--quiet", "-m", "dvc.lock")
    second_clone = tmp_path / "ci-run-2"
    git(tmp_path, "clone", "--quiet", str(origin), str(second_clone))
    assert not (second_clone / "model" / "model.pt").exists()
    # Only the train stage is asked for: only what it needs comes from the remote.
    second = run_train_step(second_clone, push=False, s3_env=S3_ENV, targets="train")
    assert second["model-changed"] == "false"
    assert not (second_clone / "plots" / "confusion.csv").exists()  # evaluate's, not pulled
    assert second["run-id"] == first["run-id"]
    assert (second_clone / "model" / "model.pt").read_bytes() == (
        first_clone / "model" / "model.pt"
    ).read_bytes()
    summary = (tmp_path / "ci-run-2-summary.md").read_text(encoding="utf-8")
    assert "Model unchanged" in summary


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }


def test_locked_model_hash_reads_the_model_output_of_dvc_lock(tmp_path: Path) -> None:
    from cxml.repro import locked_model_hash

    lock = tmp_path / "dvc.lock"
    lock.write_text(
        json.dumps(
            {
                "schema": "2.0",
                "stages": {
                    "train": {
                        "cmd": "python -m cxml.train",
                        "outs": [
                            {"path": "run.json", "hash": "md5", "md5": "r" * 32},
                            {"path": "model/model.pt", "hash": "md5", "md5": "m" * 32},
                        ],
                    }
                },
            }
        ),
        encoding="utf-8",
    )
    assert locked_model_hash(lock, "model/model.pt") == "m" * 32
    assert locked_model_hash(lock, "model/other.pt") is None
    assert locked_model_hash(tmp_path / "missing.lock", "model/model.pt") is None


def test_the_dvc_input_decides_between_the_pipeline_and_cxml_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cxml.core.errors import ConfigError
    from cxml.repro import use_dvc

    monkeypatch.chdir(tmp_path)
    assert (use_dvc("auto"), use_dvc("false")) == (False, False)
    with pytest.raises(ConfigError, match=r"input dvc: true, but there is no dvc\.yaml here"):
        use_dvc("true")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n", encoding="utf-8")
    assert (use_dvc("auto"), use_dvc("true"), use_dvc("false")) == (True, True, False)

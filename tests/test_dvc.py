"""Real DVC in a temporary git repository: cxml's outputs are DVC metrics, params and plots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DVC_YAML = """
stages:
  train:
    cmd: python -m cxml.train
    params: [train]
    outs:
      - model/model.pt
      - run.json:
          cache: false
    metrics:
      - metrics/train.json:
          cache: false
    plots:
      - plots/train.csv:
          cache: false
  evaluate:
    cmd: python -m cxml.evaluate --no-fail
    deps: [model/model.pt]
    params: [evaluate]
    metrics:
      - metrics/eval.json:
          cache: false
    plots:
      - plots/confusion.csv:
          cache: false
          template: confusion
          x: actual
          y: predicted
      - plots/per_class.csv:
          cache: false
    outs:
      - gate.json:
          cache: false
"""

PARAMS = (
    "train:\n  epochs: 2\n  batch_size: 128\n  lr: {lr}\n"
    "evaluate:\n  gate: ['accuracy >= baseline - 0.5']\n"
    "tracking:\n  enabled: false\n"
)


def sh(*args: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=600
    )
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_dvc_repro_metrics_and_params_diff(workdir: Path) -> None:
    sh("git", "init", "-q", "-b", "main", cwd=workdir)
    sh("git", "config", "user.email", "test@example.com", cwd=workdir)
    sh("git", "config", "user.name", "test", cwd=workdir)
    sh("dvc", "init", "-q", cwd=workdir)
    (workdir / "dvc.yaml").write_text(DVC_YAML)
    (workdir / "params.yaml").write_text(PARAMS.format(lr=0.05))
    sh("dvc", "repro", cwd=workdir)
    sh("git", "add", "-A", cwd=workdir)
    sh("git", "commit", "-q", "-m", "baseline model", cwd=workdir)

    # nothing changed: DVC retrains nothing
    sh("dvc", "repro", cwd=workdir)
    assert sh("git", "status", "--porcelain", cwd=workdir) == ""
    status = sh("dvc", "status", "--json", cwd=workdir)
    assert json.loads(status) == {}

    (workdir / "params.yaml").write_text(PARAMS.format(lr=0.01))
    sh("dvc", "repro", cwd=workdir)

    params_diff = json.loads(sh("dvc", "params", "diff", "--json", cwd=workdir))
    lr_change = params_diff["params.yaml"]["train.lr"]
    assert (lr_change["old"], lr_change["new"]) == (0.05, 0.01)

    metrics_diff = json.loads(sh("dvc", "metrics", "diff", "--json", "--all", cwd=workdir))
    eval_diff = metrics_diff["metrics/eval.json"]
    assert eval_diff, "dvc metrics diff read nothing from metrics/eval.json"
    assert "accuracy" in eval_diff and "per_class_accuracy.3" in eval_diff
    assert (
        metrics_diff["metrics/train.json"]["val_loss"]["old"]
        != metrics_diff["metrics/train.json"]["val_loss"]["new"]
    )

    # cxml's baseline-from-git-ref reads the same numbers DVC shows as "old"
    gate = json.loads((workdir / "gate.json").read_text())
    assert gate["baseline"]["source"] == "git:main"
    from cxml.core.metrics import flatten

    baseline = flatten(gate["baseline"]["metrics"])
    for name, values in eval_diff.items():
        assert baseline[name] == pytest.approx(values["old"]), name
        assert gate["metrics"][name] == pytest.approx(values["new"]), name

    plots = json.loads(sh("dvc", "plots", "diff", "--json", "--split", "main", cwd=workdir))
    plotted = set(plots["data"])
    assert {"plots/confusion.csv", "plots/train.csv", "plots/per_class.csv"} <= plotted, plotted

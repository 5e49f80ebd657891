"""torchrun with 2 gloo processes on CPU: identical weights, rank 0 alone writes, same metrics as 1 process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cxml, write_params
from tests.support.train import wait_for_checkpoint_epoch

PARAMS = "train:\n  epochs: {epochs}\n  batch_size: 128\ntracking:\n  enabled: false\n"
TORCHRUN = [
    sys.executable,
    "-m",
    "torch.distributed.run",
    "--standalone",
    "--nproc-per-node",
    "2",
    "-m",
    "cxml.train",
]
# Each rank normalises its half of a global batch with its own BatchNorm statistics, so the
# two runs are the same optimisation but not bit-identical: agree within these tolerances.
ACCURACY_TOLERANCE = 0.03
LOSS_RELATIVE_TOLERANCE = 0.15


def kill_process_tree(process: subprocess.Popen[str]) -> None:
    """SIGKILL torchrun and its workers: the elastic agent starts them in sessions of their own,
    so killing torchrun's process group alone would leave them training."""
    import psutil

    parent = psutil.Process(process.pid)
    victims = [parent, *parent.children(recursive=True)]
    for victim in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.kill()
    psutil.wait_procs(victims, timeout=30)
    process.wait(timeout=30)


def torchrun_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path: Path) -> None:
    single, multi = tmp_path / "single", tmp_path / "multi"
    for directory in (single, multi):
        directory.mkdir()
        write_params(directory, PARAMS.format(epochs=4))
    assert run_cxml("train", cwd=single).returncode == 0

    result = subprocess.run(
        TORCHRUN,
        cwd=multi,
        env=torchrun_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "2 processes (gloo)" in out
    assert "distributed: weights identical on all 2 ranks" in out
    # rank 0 alone prints and writes
    assert out.count("epoch 1/4") == 1 and out.count("model: model/model.pt") == 1

    one = json.loads((single / "metrics/train.json").read_text())
    two = json.loads((multi / "metrics/train.json").read_text())
    assert one["epochs"] == two["epochs"] == 4
    for name in ("accuracy", "val_accuracy"):
        assert abs(one[name] - two[name]) <= ACCURACY_TOLERANCE, (name, one[name], two[name])
    for name in ("loss", "val_loss"):
        assert abs(one[name] - two[name]) <= LOSS_RELATIVE_TOLERANCE * one[name], (
            name,
            one[name],
            two[name],
        )


@pytest.mark.slow
def test_torchrun_resumes_from_checkpoint(tmp_path: Path) -> None:
    epochs = 30
    write_params(
        tmp_path, PARAMS.format(epochs=epochs).replace("batch_size: 128", "batch_size: 16")
    )
    process = subprocess.Popen(
        TORCHRUN,
        cwd=tmp_path,
        env=torchrun_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_checkpoint_epoch(tmp_path / ".cxml/checkpoints/last.pt", 2, process, timeout=300)
    finally:
        kill_process_tree(process)
    assert not (tmp_path / "model/model.pt").exists()

    result = subprocess.run(
        [*TORCHRUN, "--resume"],
        cwd=tmp_path,
        env=torchrun_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("resume: continuing after epoch") == 1
    assert json.loads((tmp_path / "metrics/train.json").read_text())["epochs"] == epochs
    assert "distributed: weights identical on all 2 ranks" in result.stdout


def test_kubeflow_template_runs_the_same_module_under_torchrun() -> None:
    import yaml

    from tests.conftest import REPO_ROOT

    job = yaml.safe_load((REPO_ROOT / "workflows-templates/kubeflow-pytorchjob.yaml").read_text())
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    for role in ("Master", "Worker"):
        container = job["spec"]["pytorchReplicaSpecs"][role]["template"]["spec"]["containers"][0]
        assert container["command"] == ["torchrun"]
        assert container["args"][-3:] == ["-m", "cxml.train", "--resume"]

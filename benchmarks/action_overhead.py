"""What the cxml actions cost beyond the training itself: setup (cold vs warm) and evaluate+report.

Claim: on a warm self-hosted runner the setup step costs well under a second (a cache check),
and evaluate + report together cost a few seconds on the example data, both small next to
training. Measured here with the actions' own scripts, the way the actions call them:

- setup: `actions/setup/cxml_setup.py` with `python` = this interpreter (the venv is layered
  over its site-packages, as in the tests and inside Dockerfile.gpu), into a fresh tool cache
  (cold: venv + pip install of cxml) and then again (warm: the cache hit), `--runs` times each;
- evaluate + report: `python -m cxml.evaluate --no-fail` and `python -m cxml.report --target none`
  after one `python -m cxml.train` on the built-in digits, `--runs` times each;
- baseline in the same run: a bare `python -c pass` start, and the training run itself.

Prints medians (seconds) and ratios. Hardware and versions are printed first. Run:

    .venv/bin/python benchmarks/action_overhead.py [--runs 3] [--epochs 3] [--skip-cold]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SETUP_SCRIPT = REPO_ROOT / "actions" / "setup" / "cxml_setup.py"
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}


def timed(command: Sequence[str], *, cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stdout}\n{result.stderr}")
    return seconds


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITHUB_", "RUNNER_", "CXML_", "MLFLOW_"))
    }
    return {**env, **QUIET_ENV, **extra}


def setup_times(runs: int, work: Path, *, skip_cold: bool) -> tuple[list[float], list[float]]:
    cold, warm = [], []
    for run in range(runs):
        cache = work / f"tool-cache-{run}"
        env = clean_env(
            RUNNER_TOOL_CACHE=str(cache),
            CXML_SETUP_PYTHON=sys.executable,
            CXML_SETUP_EXTRAS="train,report,dvc",
        )
        command = [sys.executable, str(SETUP_SCRIPT)]
        if not skip_cold or run == 0:
            cold.append(timed(command, cwd=work, env=env))
        warm.append(timed(command, cwd=work, env=env))
        if skip_cold:
            warm += [timed(command, cwd=work, env=env) for _ in range(runs - 1)]
            break
    return cold, warm


def step_times(runs: int, epochs: int, work: Path) -> dict[str, list[float]]:
    project = work / "project"
    project.mkdir()
    (project / "params.yaml").write_text(
        f"train:\n  epochs: {epochs}\n  batch_size: 128\ntracking:\n  enabled: false\n",
        encoding="utf-8",
    )
    env = clean_env()
    python = sys.executable
    times: dict[str, list[float]] = {"python start": [], "train": [], "evaluate": [], "report": []}
    times["train"].append(
        timed([python, "-m", "cxml.train", "--no-progress"], cwd=project, env=env)
    )
    for _ in range(runs):
        times["python start"].append(timed([python, "-c", "pass"], cwd=project, env=env))
        times["evaluate"].append(
            timed(
                [python, "-m", "cxml.evaluate", "--no-fail", "--baseline", "none"],
                cwd=project,
                env=env,
            )
        )
        times["report"].append(
            timed([python, "-m", "cxml.report", "--target", "none"], cwd=project, env=env)
        )
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--skip-cold", action="store_true", help="one cold setup only")
    args = parser.parse_args(argv)

    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}; runs: {args.runs}")
    with tempfile.TemporaryDirectory(prefix="cxml-bench-") as tmp:
        work = Path(tmp)
        cold, warm = setup_times(args.runs, work, skip_cold=args.skip_cold)
        steps = step_times(args.runs, args.epochs, work)

    def median(values: list[float]) -> float:
        return statistics.median(values)

    start = median(steps["python start"])
    train = median(steps["train"])
    evaluate_report = median(steps["evaluate"]) + median(steps["report"])
    rows = [
        ("setup, cold (venv + pip install cxml)", median(cold), len(cold)),
        ("setup, warm (cache hit)", median(warm), len(warm)),
        ("python -c pass (baseline)", start, len(steps["python start"])),
        (f"train, {args.epochs} epochs on digits (baseline)", train, 1),
        ("evaluate", median(steps["evaluate"]), args.runs),
        ("report --target none", median(steps["report"]), args.runs),
    ]
    print()
    for label, seconds, count in rows:
        print(f"{label:45} {seconds:8.3f} s  (median of {count})")
    print()
    print(f"warm setup / python start:        {median(warm) / start:6.2f}x")
    print(f"cold setup / warm setup:          {median(cold) / median(warm):6.1f}x")
    print(f"evaluate + report / train:        {evaluate_report / train:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

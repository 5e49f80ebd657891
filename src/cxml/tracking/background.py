"""Evaluation metrics that reach a local MLflow store after `cxml evaluate` has exited.

Opening a SQLite or file store takes the mlflow import and the store's set-up (about 2 s of CPU on
2 cores), and evaluate would wait for it at its end. With `--tracking-in-background` evaluate
leaves its logging child (`runs.EarlyEvalMetrics`) running, and the step that ends the pipeline
on this machine (`cxml report`, `cxml run`) collects the outcome from a small hand-off file once
its own work is done. The outcome is judged as evaluate would have judged it: a required tracking
failure is exit 3, else a warning. A tracking server is always logged before evaluate exits (one
REST call of milliseconds).

The hand-off file names the training run, so a stale one (an evaluation whose outcome nobody
collected) is ignored by the next report, and every evaluate removes the previous one.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cxml.core import console
from cxml.core.processes import process_exists
from cxml.tracking.rest import TrainingRunNotFound

if TYPE_CHECKING:
    from cxml.core.config import Params

HANDOFF = Path(".cxml") / "eval-tracking.json"
"""Relative to the working directory, beside the step's other outputs (ignored by git and DVC)."""

COLLECT_WAIT_S = 60.0
"""How long the collecting step waits for the logging child (as evaluate would have)."""

PENDING, LOGGED, RUN_NOT_FOUND, FAILED = "pending", "logged", "run-not-found", "failed"
STATES = (PENDING, LOGGED, RUN_NOT_FOUND, FAILED)


@dataclass(frozen=True)
class Handoff:
    run_id: str
    pid: int
    state: str = PENDING
    detail: str = ""


def write_handoff(handoff: Handoff, path: Path = HANDOFF) -> None:
    from cxml.core.files import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, asdict(handoff))


def read_handoff(path: Path = HANDOFF) -> Handoff | None:
    """The hand-off file, or None when there is none or it is not one (then it is removed)."""
    try:
        text = path.read_text(encoding="utf-8")[:10_000]
        data = json.loads(text)
        handoff = Handoff(
            run_id=str(data["run_id"]),
            pid=int(data["pid"]),
            state=str(data["state"]),
            detail=str(data.get("detail", ""))[:500],
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        remove_handoff(path)
        return None
    return handoff if handoff.state in STATES else None


def remove_handoff(path: Path = HANDOFF) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def outcome_error(handoff: Handoff) -> BaseException | None:
    """What went wrong in a finished hand-off (None: logged)."""
    if handoff.state == LOGGED:
        return None
    if handoff.state == RUN_NOT_FOUND:
        return TrainingRunNotFound(handoff.detail)
    return RuntimeError(handoff.detail or "the logging process gave no reason")


def still_running(pid: int) -> bool:
    """Whether `pid` has not exited; reaps it when it is this process's child (`cxml run`)."""
    try:
        finished, _status = os.waitpid(pid, os.WNOHANG)
        return finished == 0
    except ChildProcessError:  # not our child: ask the kernel
        pass
    return process_exists(pid)


def wait_for_outcome(run_id: str, timeout_s: float, path: Path = HANDOFF) -> BaseException | None:
    """Wait (bounded) for the logging child of `run_id` to record its outcome; the hand-off file
    is removed once read. None also when there is nothing to collect for this run."""
    deadline = time.monotonic() + timeout_s
    while True:
        handoff = read_handoff(path)
        if handoff is None:
            return None
        if handoff.run_id != run_id:  # left by an earlier evaluation nobody collected
            remove_handoff(path)
            return None
        if handoff.state != PENDING:
            remove_handoff(path)
            return outcome_error(handoff)
        if not still_running(handoff.pid):
            handoff = read_handoff(path) or handoff  # it may have written just before exiting
            remove_handoff(path)
            if handoff.state != PENDING:
                return outcome_error(handoff)
            return RuntimeError("the background logging process stopped without an answer")
        if time.monotonic() > deadline:
            remove_handoff(path)
            return TimeoutError(f"no answer within {timeout_s:.0f} s")
        time.sleep(0.05)


def collect_eval_metrics(params: Params, timeout_s: float = COLLECT_WAIT_S) -> None:
    """The pipeline's last step: wait for metrics evaluate left logging in the background and
    judge the outcome (exit 3 when tracking is required, else a warning)."""
    from cxml.records.run import read_run

    if not HANDOFF.exists():
        return
    run = read_run(params.outputs.run_info)
    if run is None or not run.run_id:
        remove_handoff()
        return
    error = wait_for_outcome(run.run_id, timeout_s)
    if error is None:
        console.info("MLflow: the evaluation metrics logged in the background are in the store")
        return
    judge_eval_logging(params, error)


def judge_eval_logging(params: Params, error: BaseException) -> None:
    """A failed `eval.*` logging: a warning for a run missing from the store, else exit 3 while
    tracking is required (TrackingError), a warning otherwise. The files are written either way."""
    from cxml.core.errors import TrackingError
    from cxml.core.redact import redact_text

    detail = redact_text(str(error).splitlines()[0] if str(error) else type(error).__name__)
    if isinstance(error, TrainingRunNotFound):
        console.warn(
            f"MLflow: the training run in {params.outputs.run_info} is not in this tracking store "
            f"({detail}); was the model trained against another store (a model DVC reused)? "
            "The evaluation metrics are not logged to MLflow; the files are written"
        )
        return
    if params.tracking.required:
        raise TrackingError(
            f"MLflow: logging evaluation metrics failed ({detail}); metrics/eval.json is written; "
            "fix the tracking server or MLFLOW_TRACKING_URI, or set tracking.required: false"
        )
    console.warn(f"MLflow: logging evaluation metrics failed ({detail}); the files are written")

"""MLflow runs: the training run (params, epochs, the model and its registered version)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cxml.core.errors import TrackingError
from cxml.core.redact import redact_uri
from cxml.tracking.client import client, quiet_mlflow, resolve_tracking_uri
from cxml.tracking.registry import CANDIDATE, set_model_alias

if TYPE_CHECKING:
    import torch
    from mlflow.tracking import MlflowClient

    from cxml.core.config import Params
    from cxml.ml.data import Dataset
    from cxml.ml.models import ModelMetadata


class RunLogger:
    """Logs one training run to MLflow. A tracking failure stops training (TrackingError) while
    `tracking.required` holds; with `tracking.required: false` it warns and training carries on."""

    def __init__(self, params: Params, *, enabled: bool) -> None:
        self.params = params
        self.enabled = enabled
        self.run_id: str | None = None
        self.experiment_id: str | None = None

    def _warn_and_disable(self, what: str, exc: BaseException) -> None:
        from cxml.core import console

        detail = redact_uri(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        if self.run_id is not None:
            with contextlib.suppress(Exception):
                import mlflow

                mlflow.end_run(status="FAILED")
        if self.params.tracking.required:
            raise TrackingError(
                f"MLflow: {what} failed ({detail}); fix the tracking server or "
                "MLFLOW_TRACKING_URI, or set tracking.required: false in params.yaml to train "
                "without tracking"
            ) from None
        console.warn(f"MLflow: {what} failed ({detail}); training goes on without tracking")
        self.enabled = False
        self.run_id = None

    def start(self, resume_run_id: str | None = None) -> None:
        if not self.enabled:
            return
        cfg = self.params.tracking
        try:
            quiet_mlflow()
            import mlflow

            mlflow.set_tracking_uri(resolve_tracking_uri(cfg.uri))
            mlflow.set_experiment(cfg.experiment)
            # MLflow would tag cxml's own entry point and checkout; the user's repository counts.
            tags = source_tags()
            if resume_run_id:
                run = mlflow.start_run(run_id=resume_run_id)
                mlflow.set_tags(tags)
            else:
                run = mlflow.start_run(tags=tags)
                mlflow.log_params({k: _param_value(v) for k, v in self.params.flat().items()})
            self.run_id = run.info.run_id
            self.experiment_id = run.info.experiment_id
        except Exception as exc:
            self._warn_and_disable("starting the run", exc)

    def log_epoch(self, stats: dict[str, float]) -> None:
        if not self.enabled:
            return
        try:
            import mlflow

            step = int(stats["epoch"])
            mlflow.log_metrics({k: float(v) for k, v in stats.items() if k != "epoch"}, step=step)
        except Exception as exc:
            self._warn_and_disable("logging epoch metrics", exc)

    def finish(self, model: torch.nn.Module, metadata: ModelMetadata, data: Dataset) -> str | None:
        """Log the model, register a version with alias `candidate`; returns the version."""
        if not self.enabled:
            return None
        cfg = self.params.tracking
        try:
            import mlflow

            version = log_pixel_model(
                model, metadata, data, cfg.model_name if cfg.register else None
            )
            mlflow.set_tags(
                {
                    "cxml.data_hash": metadata.data_hash or "",
                    "cxml.params_hash": metadata.params_hash or "",
                }
            )
            if version is not None:
                set_model_alias(cfg.uri, cfg.model_name, version, CANDIDATE)
            mlflow.end_run()
            return version
        except Exception as exc:
            self._warn_and_disable("logging the model", exc)
            return None


def _param_value(value: Any) -> Any:
    return ",".join(str(v) for v in value) if isinstance(value, list) else value


def log_pixel_model(
    model: torch.nn.Module, metadata: ModelMetadata, data: Dataset, registered_name: str | None
) -> str | None:
    """Log the model as an MLflow pytorch model taking raw 0..255 pixels (any batch size)."""
    import copy

    import mlflow.pytorch

    import cxml
    from cxml.ml.models import unwrap
    from cxml.ml.nets import PixelClassifier

    pixel_model = PixelClassifier(
        copy.deepcopy(unwrap(model)).cpu().float().eval(),
        metadata.mean,
        metadata.std,
        metadata.input_scale,
    )
    example = data.test.images[:2].float().numpy()
    info = mlflow.pytorch.log_model(
        pixel_model,
        name="model",
        input_example=example,
        serialization_format="pickle",
        code_paths=[str(Path(cxml.__file__).parent)],
        pip_requirements=pinned_requirements(),
        registered_model_name=registered_name,
        metadata={"cxml": metadata.to_dict()},
    )
    version = getattr(info, "registered_model_version", None)
    return str(version) if version is not None else None


SERVED_MODEL_PACKAGES = ("torch", "torchvision", "numpy", "cloudpickle")
"""What the logged pyfunc model imports; cxml itself travels in the model's `code_paths`."""


def pinned_requirements(packages: Sequence[str] = SERVED_MODEL_PACKAGES) -> list[str]:
    """`name==version` as installed here, so the served model runs on what trained it. A local
    build tag (`+cu130`) is dropped: `==2.14.1` still matches it, and the CPU wheel on PyPI."""
    from importlib.metadata import PackageNotFoundError, version

    pinned: list[str] = []
    for name in packages:
        try:
            pinned.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return pinned


def source_tags() -> dict[str, str]:
    """`mlflow.source.*` for the user's repository (not cxml's), and in GitHub Actions the pull
    request and the workflow run that trained the model."""
    from cxml.core import env
    from cxml.core.git import current_branch, current_commit

    tags = {"mlflow.source.type": "LOCAL"}
    repository = repository_url()
    tags["mlflow.source.name"] = repository
    tags["mlflow.source.git.repoURL"] = repository
    commit = current_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    branch = (
        env.get(env.GITHUB_HEAD_REF) or env.get(env.GITHUB_REF_NAME) or current_branch()
        if env.in_github_actions()
        else current_branch()
    )
    if branch:
        tags["mlflow.source.git.branch"] = branch
    if env.in_github_actions():
        pull = pull_request_number()
        if pull is not None:
            tags["cxml.pr_number"] = str(pull)
        run_url = workflow_run_url()
        if run_url:
            tags["cxml.workflow_run_url"] = run_url
    return tags


def repository_url() -> str:
    """The user's repository: its GitHub URL in Actions, else the `origin` remote (credentials
    removed), else the checkout's path (the working directory outside git)."""
    import subprocess

    from cxml.core import env
    from cxml.core.git import git_toplevel, run_git

    if env.in_github_actions() and env.get(env.GITHUB_REPOSITORY):
        server = (env.get(env.GITHUB_SERVER_URL) or "https://github.com").rstrip("/")
        return redact_uri(f"{server}/{env.get(env.GITHUB_REPOSITORY)}")
    top = git_toplevel()
    if top is None:
        return str(Path.cwd().resolve())
    try:
        remote = run_git(["remote", "get-url", "origin"], top, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        remote = None
    if remote is not None and remote.returncode == 0 and remote.stdout.strip():
        return redact_uri(remote.stdout.strip())
    return str(top)


def pull_request_number() -> int | None:
    """The PR number from the event payload (pull_request events), else from `refs/pull/N/...`."""
    import json
    import re

    from cxml.core import env

    event_path = env.get(env.GITHUB_EVENT_PATH)
    if event_path:
        try:
            event = json.loads(Path(event_path).read_text(encoding="utf-8"))
            number = event.get("pull_request", {}).get("number")
            if isinstance(number, int) and not isinstance(number, bool):
                return number
        except (OSError, ValueError, AttributeError):
            pass
    match = re.fullmatch(r"refs/pull/(\d+)/(merge|head)", env.get(env.GITHUB_REF) or "")
    return int(match.group(1)) if match else None


def workflow_run_url() -> str | None:
    from cxml.core import env

    repository, run_id = env.get(env.GITHUB_REPOSITORY), env.get(env.GITHUB_RUN_ID)
    if not repository or not run_id:
        return None
    server = (env.get(env.GITHUB_SERVER_URL) or "https://github.com").rstrip("/")
    return redact_uri(f"{server}/{repository}/actions/runs/{run_id}")


def log_eval_metrics(tracking_uri: str | None, run_id: str, metrics: Mapping[str, float]) -> None:
    """Add `eval.<name>` metrics (step 0) to a finished run in one `log_batch` call, so its
    registered version carries them. MLflow names a missing or deleted run itself."""
    eval_metrics_batch(tracking_uri, run_id).log(metrics)


def eval_metrics_batch(tracking_uri: str | None, run_id: str) -> EvalMetricsBatch:
    """Import mlflow and open its store for `run_id` (seconds; the run is read, so a missing
    one fails here); `log` then takes milliseconds."""
    mlflow_client = client(tracking_uri)
    mlflow_client.get_run(run_id)
    return EvalMetricsBatch(mlflow_client, run_id)


@dataclass(frozen=True)
class EvalMetricsBatch:
    """An open MLflow client for one run, ready to take the evaluation metrics."""

    mlflow_client: MlflowClient
    run_id: str

    def log(self, metrics: Mapping[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        batch = [
            Metric(f"eval.{name}", float(value), timestamp, 0) for name, value in metrics.items()
        ]
        self.mlflow_client.log_batch(self.run_id, metrics=batch)


class EvalMetricsLogger(Protocol):
    """Takes the `eval.*` metrics once (`send`) and says what went wrong (`wait`, None when
    logged); started before the metrics exist."""

    def send(self, metrics: Mapping[str, float]) -> None: ...

    def wait(self, timeout: float) -> BaseException | None: ...

    @property
    def in_background(self) -> bool: ...

    @property
    def runs_beside(self) -> bool:
        """Whether a process works beside the step (taking a core) until it has logged."""
        ...


def start_eval_metrics(
    tracking_uri: str | None, run_id: str, *, in_background: bool = False
) -> EvalMetricsLogger:
    """For an http(s) tracking server, MLflow's REST API (one log-batch call of a few ms, no
    mlflow import); for a SQLite or file store, which only the mlflow package can write (or an
    auth plugin only it has), the child process that opens it while the step runs the model.
    `in_background`: that child outlives the step and a later one collects its outcome
    (tracking/background.py)."""
    from cxml.tracking.rest import RestEvalMetrics, is_server_uri, needs_mlflow_client

    uri = resolve_tracking_uri(tracking_uri)
    if is_server_uri(uri) and not needs_mlflow_client():
        return RestEvalMetrics(uri, run_id)
    from cxml.tracking.background import HANDOFF

    return EarlyEvalMetrics(tracking_uri, run_id, handoff=HANDOFF if in_background else None)


class EarlyEvalMetrics:
    """`eval.*` metrics logged by a child process started before they exist: it imports mlflow
    and opens the store while the step imports torch and runs the model, then waits for `send`
    on its stdin. `wait` collects it with a bound and returns what went wrong (None when logged).

    A process, not a thread: importing mlflow is seconds of Python holding the GIL, and a thread
    doing it stalls the latency trials' single-image calls at every GIL hand-off (measured on 2
    cores: 7.4 s of trials instead of about 1 s, timings of the stall, not of the model). The
    tracking URI and run go through stdin, never argv (a URI may carry credentials); a step
    that stops before `send` closes stdin and the child exits without logging anything.

    With a `handoff` file the child is left running by `wait` (in its own session, so a Ctrl-C
    meant for the step does not cut its transaction short) and records its outcome there for
    the step that collects it (tracking/background.py)."""

    def __init__(self, tracking_uri: str | None, run_id: str, handoff: Path | None = None) -> None:
        import subprocess
        import sys
        import tempfile

        self.run_id = run_id
        self.handoff = handoff

        # a file, not a pipe: chatter cannot block the child; closed in `wait`. The child gets
        # the step's environment (MLflow's credentials) and interpreter, so this same cxml.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._child: subprocess.Popen[str] | None = None
        self._start_error: OSError | None = None
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-c", EVAL_BATCH_CHILD],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                text=True,
                start_new_session=handoff is not None,
            )
        except OSError as exc:  # reported by `wait`, per tracking.required
            self._start_error = exc
        request: dict[str, Any] = {"tracking_uri": tracking_uri, "run_id": run_id}
        if handoff is not None:
            request["handoff"] = str(handoff)
        self._write(request)

    @property
    def in_background(self) -> bool:
        """Whether `wait` leaves the logging to a later step."""
        return self.handoff is not None and self._child is not None

    @property
    def runs_beside(self) -> bool:
        return self._child is not None

    def _write(self, message: Mapping[str, Any] | None) -> None:
        """One JSON line to the child, or (None) the end of its input."""
        import json

        stdin = self._child.stdin if self._child is not None else None
        if stdin is None or stdin.closed:
            return
        try:
            if message is not None:
                stdin.write(json.dumps(message) + "\n")
                stdin.flush()
                return
        except OSError:  # the child has stopped; `wait` reports why
            pass
        with contextlib.suppress(OSError):
            stdin.close()

    def send(self, metrics: Mapping[str, float]) -> None:
        if self.in_background and self._child is not None:
            from cxml.tracking.background import Handoff, write_handoff

            # before the metrics: the child records its outcome only after reading them
            assert self.handoff is not None
            write_handoff(Handoff(self.run_id, self._child.pid), self.handoff)
        self._write({name: float(value) for name, value in metrics.items()})
        self._write(None)

    def wait(self, timeout: float) -> BaseException | None:
        """The child's outcome; a child not sent anything exits without logging. In the
        background: None at once, the child carries on and the hand-off file gets its outcome."""
        import subprocess

        self._write(None)
        if self._child is None:
            self._stderr.close()
            return self._start_error
        if self.in_background:
            self._stderr.close()  # the child keeps its own descriptor
            return None
        try:
            self._child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait(timeout=10)
            self._stderr.close()
            return TimeoutError(f"no answer within {timeout:.0f} s")
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        self._stderr.close()
        if self._child.returncode == 0:
            return None
        detail = lines[-1] if lines else f"exit status {self._child.returncode}"
        if self._child.returncode == RUN_NOT_FOUND_EXIT:
            from cxml.tracking.rest import TrainingRunNotFound

            return TrainingRunNotFound(detail)
        return RuntimeError(detail)


RUN_NOT_FOUND_EXIT = 4
"""The child's exit status when the store has no run with run.json's id."""


EVAL_BATCH_CHILD = (
    "from cxml.tracking.runs import eval_batch_child; raise SystemExit(eval_batch_child())"
)


def eval_batch_child() -> int:
    """The child of `EarlyEvalMetrics`: stdin line 1 names the run, line 2 (when it comes) holds
    the metrics; end of input first means the step stopped: nothing is logged. A failure is one
    line on stderr and exit 3 (4: no such run); with a hand-off file the outcome also goes there,
    written only once line 2 is read (after the step's own "pending")."""
    import json
    import os
    import sys

    request = json.loads(sys.stdin.readline() or "null")
    if not isinstance(request, dict):
        return 0
    state, detail = log_requested_metrics(request)
    if state is None:  # the step stopped before sending metrics
        return 0
    handoff = request.get("handoff")
    if handoff:
        from cxml.tracking.background import Handoff, write_handoff

        run_id = str(request.get("run_id"))
        write_handoff(Handoff(run_id, os.getpid(), state, detail), Path(handoff))
    if detail:
        print(detail, file=sys.stderr)
    from cxml.tracking.background import LOGGED, RUN_NOT_FOUND

    return {LOGGED: 0, RUN_NOT_FOUND: RUN_NOT_FOUND_EXIT}.get(state, 3)


def log_requested_metrics(request: Mapping[str, Any]) -> tuple[str | None, str]:
    """Open the store for the run, read the metrics from stdin, log them: (state, detail) as in
    tracking/background.py, state None when stdin ended without metrics."""
    import json
    import sys

    from cxml.tracking.background import FAILED, LOGGED, RUN_NOT_FOUND

    metrics_line: str | None = None
    try:
        quiet_mlflow()  # the import: most of the seconds
        from mlflow.exceptions import MlflowException

        try:
            batch = eval_metrics_batch(request.get("tracking_uri"), str(request.get("run_id")))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            metrics_line = sys.stdin.readline()
            first = redact_uri(str(exc).strip().splitlines()[0])
            return (RUN_NOT_FOUND if metrics_line else None), first
        metrics_line = sys.stdin.readline()
        if not metrics_line:
            return None, ""
        batch.log(json.loads(metrics_line))
    except Exception as exc:
        if metrics_line is None:
            metrics_line = sys.stdin.readline()
        lines = str(exc).strip().splitlines()
        detail = redact_uri(lines[0]) if lines else type(exc).__name__
        return (FAILED if metrics_line else None), detail
    return LOGGED, ""

"""Gathering the report's data: this run's files, and the baseline's at its git ref."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxml import __version__
from cxml.core import console, env
from cxml.core.config import Params, params_from_mapping
from cxml.core.errors import ConfigError, ReportError
from cxml.core.metrics import flatten
from cxml.report.markdown import (
    PER_CLASS_PREFIX,
    ParamChange,
    ReportData,
    RunLinks,
    diff_params,
)
from cxml.report.model import (
    ConfusionMatrix,
    GateResult,
    PerClassRow,
    TrainCurve,
    load_text_or_none,
    parse_confusion,
    parse_metrics_text,
    parse_per_class,
    parse_train_curve,
    read_gate,
    read_metrics_file,
    read_optional_metrics,
    read_run_info,
)


def load_report_data(params: Params, params_path: Path, *, name: str) -> ReportData:
    """Read everything the report shows; only eval.json and gate.json are required."""
    outputs = params.outputs
    eval_metrics = flatten(read_metrics_file(outputs.eval_metrics, step="evaluate"))
    train_raw = read_optional_metrics(outputs.train_metrics, step="train")
    gate = read_gate(Path(outputs.gate))
    run_info = read_run_info(Path(outputs.run_info))
    per_class = load_per_class(outputs.per_class_plot, eval_metrics)
    ref = gate.baseline_ref
    return ReportData(
        name=name,
        metrics=eval_metrics,
        gate=gate,
        links=run_links(run_info),
        train_metrics=flatten(train_raw) if train_raw is not None else None,
        baseline_train_metrics=baseline_metrics_at(outputs.train_metrics, ref),
        train_curve=load_curve(outputs.train_plot),
        baseline_train_curve=baseline_curve_at(outputs.train_plot, ref),
        per_class=per_class,
        confusion=load_confusion(outputs.confusion_plot, per_class),
        param_changes=params_changes(params, params_path, gate),
    )


def load_curve(path: Path) -> TrainCurve | None:
    text = load_text_or_none(path)
    return parse_train_curve(text, label=str(path)) if text is not None else None


def load_per_class(path: Path, eval_metrics: dict[str, float]) -> tuple[PerClassRow, ...] | None:
    text = load_text_or_none(path)
    if text is not None:
        return parse_per_class(text, label=str(path))
    from_metrics = tuple(
        PerClassRow(key[len(PER_CLASS_PREFIX) :], value, 0)
        for key, value in eval_metrics.items()
        if key.startswith(PER_CLASS_PREFIX)
    )
    return from_metrics or None


def load_confusion(path: Path, per_class: tuple[PerClassRow, ...] | None) -> ConfusionMatrix | None:
    text = load_text_or_none(path)
    if text is None:
        return None
    order = tuple(row.name for row in per_class or ())
    return parse_confusion(text, label=str(path), class_order=order)


def git_show(path: str | Path, ref: str) -> str | None:
    from cxml.gate.baseline import git_show as show

    return show(path, ref)


def baseline_metrics_at(path: Path, ref: str | None) -> dict[str, float] | None:
    if ref is None:
        return None
    text = git_show(path, ref)
    if text is None:
        return None
    try:
        return flatten(parse_metrics_text(text, label=f"{path} at {ref}", fix="ignored"))
    except ReportError as error:
        console.warn(f"baseline metrics not used: {error}")
        return None


def baseline_curve_at(path: Path, ref: str | None) -> TrainCurve | None:
    if ref is None:
        return None
    text = git_show(path, ref)
    if text is None:
        return None
    try:
        return parse_train_curve(text, label=f"{path} at {ref}")
    except ReportError as error:
        console.warn(f"baseline training curve not shown: {error}")
        return None


def params_changes(
    params: Params, params_path: Path, gate: GateResult
) -> tuple[ParamChange, ...] | None:
    """Changed effective params (defaults filled in) against params.yaml at the baseline ref."""
    import yaml

    ref = gate.baseline_ref
    if ref is None:
        return None
    text = git_show(params_path, ref)
    if text is None:
        return None
    label = f"{params_path} at {ref}"
    try:
        baseline = params_from_mapping(yaml.safe_load(text) or {}, source=label)
    except (yaml.YAMLError, ConfigError) as error:
        console.warn(f"params diff not shown: {label} cannot be read ({error})")
        return None
    return diff_params(baseline.flat(), params.flat())


def run_links(run_info: dict[str, Any] | None) -> RunLinks:
    info = run_info or {}
    run_id = string_or_none(info.get("run_id"))
    return RunLinks(
        version=__version__,
        commit=string_or_none(info.get("git_commit")) or env.get(env.CI_COMMIT_SHA),
        run_url=workflow_run_url(),
        mlflow_run_id=run_id,
        mlflow_run_url=mlflow_run_url(info) if run_id else None,
        model_name=string_or_none(info.get("model_name")),
        model_version=string_or_none(info.get("model_version")),
    )


def string_or_none(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def workflow_run_url() -> str | None:
    """The GitHub Actions run, or the GitLab pipeline, that produced the report."""
    repository, run_id = env.get(env.GITHUB_REPOSITORY), env.get(env.GITHUB_RUN_ID)
    if not repository or not run_id:
        return env.get(env.CI_PIPELINE_URL)
    server = env.get(env.GITHUB_SERVER_URL) or "https://github.com"
    return f"{server.rstrip('/')}/{repository}/actions/runs/{run_id}"


def mlflow_run_url(info: dict[str, Any]) -> str | None:
    """A link into the MLflow UI when the tracking URI is a server (not a local SQLite file)."""
    uri = string_or_none(info.get("tracking_uri")) or env.get(env.MLFLOW_TRACKING_URI)
    if not uri or not uri.startswith(("http://", "https://")):
        return None
    experiment = string_or_none(info.get("experiment_id")) or "0"
    return f"{uri.rstrip('/')}/#/experiments/{experiment}/runs/{info['run_id']}"

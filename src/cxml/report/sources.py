"""Gathering the report's data: this run's files, and the baseline's at its git ref.

gate.json, run.json and metrics are read through `cxml.records`; the plot files only the report
reads (plots/train.csv, per_class.csv, confusion.csv) are parsed here.
"""

from __future__ import annotations

from pathlib import Path

from cxml import __version__
from cxml.core import console, env
from cxml.core.config import Params, params_from_mapping
from cxml.core.errors import ConfigError, RecordError
from cxml.core.files import parse_csv
from cxml.core.git import git_show
from cxml.core.metrics import flatten
from cxml.core.redact import redact_uri, without_query
from cxml.records.gate import GateResult, read_gate
from cxml.records.metrics import parse_metrics_text, read_metrics, read_optional_metrics
from cxml.records.run import RunRecord, read_run
from cxml.report.model import (
    PER_CLASS_PREFIX,
    ConfusionMatrix,
    ParamChange,
    PerClassRow,
    ReportData,
    RunLinks,
    TrainCurve,
    diff_params,
)


def load_report_data(params: Params, params_path: Path, *, name: str) -> ReportData:
    """Read everything the report shows; only eval.json and gate.json are required."""
    outputs = params.outputs
    eval_metrics = flatten(read_metrics(outputs.eval_metrics, step="evaluate"))
    train_raw = read_optional_metrics(outputs.train_metrics, step="train")
    gate = read_gate(outputs.gate)
    per_class = load_per_class(outputs.per_class_plot, eval_metrics)
    ref = gate.baseline_ref
    return ReportData(
        name=name,
        metrics=eval_metrics,
        gate=gate,
        links=run_links(read_run(outputs.run_info)),
        train_metrics=flatten(train_raw) if train_raw is not None else None,
        baseline_train_metrics=baseline_metrics_at(outputs.train_metrics, ref),
        train_curve=load_curve(outputs.train_plot),
        baseline_train_curve=baseline_curve_at(outputs.train_plot, ref),
        per_class=per_class,
        confusion=load_confusion(outputs.confusion_plot, per_class),
        param_changes=params_changes(params, params_path, gate),
    )


# --------------------------------------------------------------------------- plot files


def load_text_or_none(path: Path) -> str | None:
    """A plots file's text, or None when the step did not write it."""
    try:
        return path.read_text(encoding="utf-8") if path.exists() else None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(
            f"{path}: cannot be read ({exc}); re-run the step that writes it"
        ) from None


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


def parse_csv_rows(text: str, label: str = "plots file") -> list[dict[str, str]]:
    """Rows of a plots CSV; an oversized field or a malformed file is one RecordError."""
    return parse_csv(text, label=label, fix="re-run the step that writes it")


def parse_train_curve(text: str, *, label: str) -> TrainCurve:
    """plots/train.csv -> one `{column: number}` per epoch; non-numeric cells are left out."""
    curve: list[dict[str, float]] = []
    for index, row in enumerate(parse_csv_rows(text, label)):
        values: dict[str, float] = {}
        for column, cell in row.items():
            if column is None or cell is None or cell == "":
                continue
            try:
                values[column] = float(cell)
            except ValueError:
                continue
        values.setdefault("epoch", float(index + 1))
        curve.append(values)
    if not curve:
        raise RecordError(f"{label}: no epochs in the training plot file; re-run `cxml train`")
    return tuple(curve)


def parse_per_class(text: str, *, label: str) -> tuple[PerClassRow, ...]:
    rows: list[PerClassRow] = []
    for index, row in enumerate(parse_csv_rows(text, label)):
        try:
            rows.append(
                PerClassRow(
                    name=row["class"],
                    accuracy=float(row["accuracy"]),
                    support=int(float(row.get("support") or 0)),
                )
            )
        except (KeyError, TypeError, ValueError, OverflowError):
            raise RecordError(
                f"{label}: row {index + 2} needs class,accuracy,support; re-run `cxml evaluate`"
            ) from None
    return tuple(rows)


def parse_confusion(text: str, *, label: str, class_order: tuple[str, ...] = ()) -> ConfusionMatrix:
    """plots/confusion.csv (`actual,predicted` per test image) -> a count matrix."""
    pairs: list[tuple[str, str]] = []
    for index, row in enumerate(parse_csv_rows(text, label)):
        actual, predicted = row.get("actual"), row.get("predicted")
        if actual is None or predicted is None:
            raise RecordError(
                f"{label}: row {index + 2} needs actual,predicted; re-run `cxml evaluate`"
            )
        pairs.append((actual, predicted))
    seen = {name for pair in pairs for name in pair}
    classes = [name for name in class_order if name in seen]
    classes += sorted(seen - set(classes), key=_natural_key)
    position = {name: i for i, name in enumerate(classes)}
    counts = [[0] * len(classes) for _ in classes]
    for actual, predicted in pairs:
        counts[position[actual]][position[predicted]] += 1
    return ConfusionMatrix(tuple(classes), tuple(tuple(row) for row in counts))


def _natural_key(name: str) -> tuple[int, float, str]:
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


# --------------------------------------------------------------------------- the baseline


def baseline_metrics_at(path: Path, ref: str | None) -> dict[str, float] | None:
    if ref is None:
        return None
    text = git_show(path, ref)
    if text is None:
        return None
    try:
        return flatten(parse_metrics_text(text, label=f"{path} at {ref}", fix="ignored"))
    except RecordError as error:
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
    except RecordError as error:
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


# --------------------------------------------------------------------------- links


def run_links(run: RunRecord | None) -> RunLinks:
    record = run or RunRecord()
    return RunLinks(
        version=__version__,
        commit=record.git_commit or env.get(env.CI_COMMIT_SHA),
        run_url=workflow_run_url(),
        mlflow_run_id=record.run_id,
        mlflow_run_url=mlflow_run_url(record),
        model_name=record.model_name,
        model_version=record.model_version,
    )


def workflow_run_url() -> str | None:
    """The GitHub Actions run, or the GitLab pipeline, that produced the report."""
    repository, run_id = env.get(env.GITHUB_REPOSITORY), env.get(env.GITHUB_RUN_ID)
    if not repository or not run_id:
        pipeline = env.get(env.CI_PIPELINE_URL)
        return redact_uri(pipeline) if pipeline else None
    server = redact_uri(env.get(env.GITHUB_SERVER_URL) or "https://github.com")
    return f"{server.rstrip('/')}/{repository}/actions/runs/{run_id}"


def mlflow_run_url(run: RunRecord) -> str | None:
    """A link into the MLflow UI when the tracking URI is a server (not a local SQLite file).

    The link is posted, so it never carries the URI's credentials (user, password, `?token=`):
    the query is cut off (the UI's own `#/...` route follows the path) and the rest redacted.
    """
    if not run.run_id:
        return None
    uri = run.tracking_uri or env.get(env.MLFLOW_TRACKING_URI)
    if not uri or not uri.startswith(("http://", "https://")):
        return None
    experiment = run.experiment_id or "0"
    server = redact_uri(without_query(uri)).rstrip("/")
    return f"{server}/#/experiments/{experiment}/runs/{run.run_id}"

"""Gathering the report's data: this run's files, and the baseline's at its git ref.

gate.json, run.json and metrics are read through `cxml.records`; the plot files only the report
reads (plots/train.csv, per_class.csv, confusion.csv) are parsed here. So is a markdown file the
user posts as it is (`cxml report --markdown FILE`), with the local images it links.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from cxml import __version__
from cxml.core import console, env
from cxml.core.config import Params, params_from_mapping
from cxml.core.errors import ConfigError, RecordError
from cxml.core.files import parse_csv, read_utf8
from cxml.core.git import git_show
from cxml.core.metrics import flatten
from cxml.core.redact import redact_uri, without_query
from cxml.records.gate import GateResult, read_gate
from cxml.records.metrics import parse_metrics_text, read_metrics, read_optional_metrics
from cxml.records.run import RunRecord, read_run
from cxml.report.escape import link_destination
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


# --------------------------------------------------------------------------- a markdown file

MAX_MARKDOWN_BYTES = 8 * 1024 * 1024
MAX_IMAGE_BYTES = 10 * 1024 * 1024
"""GitHub shows images up to 10 MB in comments."""
MARKDOWN_IMAGE = re.compile(
    r"!\[(?P<alt>[^\]\n]*)\]\(\s*(?P<dest><[^>\n]*>|[^)\s]+)(?:\s+\"[^\"\n]*\")?\s*\)"
)
HTML_IMAGE = re.compile(
    r"<img\b[^>]*?\bsrc\s*=\s*(?P<quote>[\"'])(?P<dest>[^\"'\n]*)(?P=quote)[^>]*>", re.IGNORECASE
)
URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True)
class LocalImage:
    """An image the markdown links by a path (not a URL), read from under the working directory."""

    name: str
    """Its path relative to the working directory (posix): where it is published."""
    data: bytes


@dataclass(frozen=True)
class MarkdownFile:
    path: Path
    text: str
    images: tuple[LocalImage, ...]


def load_markdown_file(path: Path) -> MarkdownFile:
    """The file and every local image it links; anything missing or unsafe is one ConfigError."""
    fix = "give --markdown a UTF-8 markdown file"
    if path.is_dir():
        raise ConfigError(f"--markdown {path}: is a folder; {fix}")
    if not path.exists():
        raise ConfigError(
            f"--markdown {path}: file not found; check the path (relative to {Path.cwd()})"
        )
    if path.stat().st_size > MAX_MARKDOWN_BYTES:
        raise ConfigError(f"--markdown {path}: larger than {MAX_MARKDOWN_BYTES} bytes; {fix}")
    text = read_utf8(path, fix=fix, error=ConfigError, label=f"--markdown {path}")
    names = dict.fromkeys(image_name(link, path) for link in local_image_links(text))
    return MarkdownFile(path, text, tuple(LocalImage(n, read_image(n, path)) for n in names))


def local_destination(destination: str) -> str | None:
    """The file path an image destination names, or None for a URL (`https:`, `data:`, `//`)."""
    dest = destination.strip().removeprefix("<").removesuffix(">").strip()
    if not dest or dest.startswith(("#", "//")) or URL_SCHEME.match(dest):
        return None
    return unquote(dest.split("#", 1)[0].split("?", 1)[0]) or None


def local_image_links(text: str) -> list[str]:
    """The destinations of images (`![x](a.png)`, `<img src="a.png">`) that are file paths."""
    found = [m["dest"] for m in MARKDOWN_IMAGE.finditer(text)]
    found += [m["dest"] for m in HTML_IMAGE.finditer(text)]
    return [local for dest in found if (local := local_destination(dest)) is not None]


def image_name(link: str, markdown_path: Path) -> str:
    """`link` relative to the markdown file, as a path under the working directory.

    A path outside it (`../x.png`, `/etc/x`, or a link leading out) is refused: publishing it
    would copy a file the report never meant to show onto a public branch.
    """
    workdir = Path.cwd().resolve()
    target = (markdown_path.parent / link).resolve()
    if not target.is_relative_to(workdir):
        raise ConfigError(
            f"--markdown {markdown_path}: image {link!r} is outside the working directory "
            f"{workdir}; link images under it"
        )
    return target.relative_to(workdir).as_posix()


def read_image(name: str, markdown_path: Path) -> bytes:
    where = f"--markdown {markdown_path}: image {name!r}"
    path = Path.cwd() / name
    if not path.is_file():
        raise ConfigError(f"{where} not found; write it before `cxml report` or fix the link")
    if path.stat().st_size > MAX_IMAGE_BYTES:
        raise ConfigError(
            f"{where} is larger than {MAX_IMAGE_BYTES} bytes; GitHub shows up to 10 MB"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read ({exc.strerror}); fix its permissions") from None


def rewrite_local_images(
    markdown: MarkdownFile, urls: Mapping[str, str], note: Callable[[str, str], str]
) -> str:
    """The text with each local image pointing at its URL in `urls`, else replaced by `note(alt,
    name)`: never a link to a file the reader cannot open."""

    def markdown_image(match: re.Match[str]) -> str:
        local = local_destination(match["dest"])
        if local is None:
            return match[0]
        name = image_name(local, markdown.path)
        if name in urls:
            return f"![{match['alt']}]({link_destination(urls[name])})"
        return note(match["alt"], name)

    def html_image(match: re.Match[str]) -> str:
        local = local_destination(match["dest"])
        if local is None:
            return match[0]
        name = image_name(local, markdown.path)
        if name in urls:
            start, end = match.span("dest")
            return match[0][: start - match.start()] + urls[name] + match[0][end - match.start() :]
        alt = re.search(r"\balt\s*=\s*([\"'])([^\"'\n]*)\1", match[0], re.IGNORECASE)
        return note(alt[2] if alt else "", name)

    return HTML_IMAGE.sub(html_image, MARKDOWN_IMAGE.sub(markdown_image, markdown.text))

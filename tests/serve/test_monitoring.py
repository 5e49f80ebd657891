"""docs/monitoring/: the alert rules pass promtool, the dashboard and the rules name only metrics
cxml serve exports, and a real Prometheus scraping a real `cxml serve` fires the error-rate alert."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cxml.records import release as bundle
from cxml.serve.metrics import ServiceMetrics
from tests.support.deploy import free_port, make_model_file, png_bytes, stop_process
from tests.support.serving import running_serve, save_release

MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
RULES = MONITORING / "cxml-alerts.yml"
DASHBOARD = MONITORING / "cxml-dashboard.json"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(
    PROMTOOL is None or PROMETHEUS is None,
    reason="Debian's prometheus package (prometheus, promtool) is not installed: "
    "apt-get install prometheus (.ci/apt-packages.txt lists it)",
)

PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
     "and", "or", "unless", "inf", "nan"}
)  # fmt: skip
PROMQL_FUNCTIONS = frozenset(
    {"sum", "max", "min", "avg", "count", "topk", "bottomk", "rate", "irate", "increase",
     "histogram_quantile", "abs", "absent", "clamp_min", "clamp_max", "label_values", "vector",
     "sum_over_time", "avg_over_time", "max_over_time", "delta", "changes", "resets", "time"}
)  # fmt: skip
PROMETHEUS_OWN = frozenset({"up"})
"""Series Prometheus makes for every scrape target, not cxml."""


def exported_metrics() -> set[str]:
    """Every series name cxml serve can export, image and tabular models alike."""
    metrics = ServiceMetrics()
    texts = [
        metrics.render("1", "r1", ("a",), reference_brightness=100.0),
        metrics.render("1", "r1", ("a",), tabular=True),
    ]
    names: set[str] = set()
    for text in texts:
        for kind_line in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
            name, kind = kind_line
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (label names, functions and keywords removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: label values, legends
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)
    text = re.sub(r"\$\w+", "", text)  # Grafana variables ($__rate_interval)
    text = re.sub(r"\b\d+(?:ms|[smhdwy])\b", "", text)  # durations (offset 1h)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?", text):
        word, call = match.group(0).rstrip("( \t\n"), match.group(1)
        if word.lower() in PROMQL_WORDS or word in PROMQL_FUNCTIONS:  # `sum by (...) (...)`
            continue
        if call:
            assert word in PROMQL_FUNCTIONS, f"unknown PromQL function {word!r} in {expr}"
        else:
            names.add(word)
    return names


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            expressions.append(
                re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", variable["definition"])
            )
    return expressions


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_name_check_itself_sees_metrics_not_labels() -> None:
    expr = (
        'sum by (job, le) (rate(cxml_x_bucket{code=~"5..",job="a b"}[5m] offset 1h)) '
        "/ on (job) group_left () cxml_y_info > 0.5 and up == 0"
    )
    assert metric_names(expr) == {"cxml_x_bucket", "cxml_y_info", "up"}


def test_the_dashboard_reads_only_metrics_cxml_exports() -> None:
    exported = exported_metrics()
    expressions = dashboard_expressions()
    assert len(expressions) >= 10
    used = set().union(*(metric_names(expr) for expr in expressions))
    assert used - exported == set()
    # what the issue asks the dashboard to show
    for wanted in ("cxml_requests_total", "cxml_predict_latency_seconds_bucket",
                   "cxml_batch_images_bucket", "cxml_predicted_class_total",
                   "cxml_input_brightness_sum", "cxml_release_info"):  # fmt: skip
        assert wanted in used, wanted


def test_the_dashboard_is_grafana_json_with_unique_panel_ids() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["type"] == "prometheus", panel["title"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}, panel["title"]


def test_the_alert_rules_read_only_metrics_cxml_exports() -> None:
    exported = exported_metrics() | PROMETHEUS_OWN
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert {"CxmlHighErrorRate", "CxmlHighLatencyP99", "CxmlNoTraffic",
            "CxmlPredictedClassShift", "CxmlInputBrightnessDrift"} <= names  # fmt: skip
    for rule in rules:
        assert metric_names(rule["expr"]) - exported == set(), rule["alert"]
        assert rule["annotations"]["summary"] and rule["labels"]["severity"], rule["alert"]


@needs_prometheus
def test_the_alert_rules_pass_promtool() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def drift_rule_tests() -> dict[str, Any]:
    """A `promtool test rules` file: instance "a" drifts (images brighter than the training ones,
    class shares 50/50 then 90/10), instance "b" does not; only "a" may alert."""
    annotations = {rule["alert"]: rule["annotations"] for rule in alert_rules()}

    def expected(alert: str, summary: str, **labels: str) -> dict[str, Any]:
        description = annotations[alert]["description"]
        for name, value in labels.items():
            description = description.replace(f"{{{{ $labels.{name} }}}}", value)
        return {
            "exp_labels": {"severity": "warning", "job": "cxml", "instance": "a", **labels},
            "exp_annotations": {"summary": summary, "description": description},
        }

    def series(name: str, values: str, instance: str, **labels: str) -> dict[str, str]:
        label_text = ",".join(
            f'{k}="{v}"' for k, v in {"job": "cxml", "instance": instance, **labels}.items()
        )
        return {"series": f"{name}{{{label_text}}}", "values": values}

    inputs = []
    for instance, reference, cat, dog in (("a", "60", "1800+54x90", "1800+6x90"),
                                          ("b", "95", "1800+30x90", "1800+30x90")):  # fmt: skip
        inputs += [
            series("cxml_input_brightness_sum", "0+6000x150", instance),  # 60 images/min at 100
            series("cxml_input_brightness_count", "0+60x150", instance),
            series("cxml_input_brightness_reference", f"{reference}x150", instance),
            series("cxml_predicted_class_total", f"0+30x60 {cat}", instance, **{"class": "cat"}),
            series("cxml_predicted_class_total", f"0+30x60 {dog}", instance, **{"class": "dog"}),
        ]
    shift = "CxmlPredictedClassShift"
    return {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": inputs,
                "alert_rule_test": [
                    {"eval_time": "120m", "alertname": "CxmlInputBrightnessDrift", "exp_alerts": [
                        expected("CxmlInputBrightnessDrift",
                                 "cxml a: input brightness is 40 off the training images")]},
                    {"eval_time": "120m", "alertname": shift, "exp_alerts": [
                        expected(shift, f"cxml a: class {name} moved 40% of the predictions",
                                 **{"class": name})
                        for name in ("cat", "dog")]},
                    {"eval_time": "50m", "alertname": shift, "exp_alerts": []},  # one hour only
                ],
            }
        ],
    }  # fmt: skip


@needs_prometheus
def test_the_drift_alerts_fire_on_drift_and_only_there(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    tests = tmp_path / "drift-tests.yml"
    tests.write_text(yaml.safe_dump(drift_rule_tests()), encoding="utf-8")
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# --- a real Prometheus scraping a real cxml serve ---------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """A real `cxml serve` of a small release bundle: its base URL."""
    model = make_model_file(tmp_path / "model" / "model.pt", seed=3)
    serving = bundle.ServingConfig(max_batch=8, max_request_bytes=200_000)
    release_dir = save_release(model, tmp_path / "release", version="4", serving=serving)
    with running_serve(["--bundle", str(release_dir)], tmp_path / "serve.log") as server:
        yield server.url


@pytest.fixture
def prometheus(tmp_path: Path, served: str) -> Iterator[str]:
    """A real Prometheus scraping `served` every second and evaluating docs/monitoring's rules."""
    assert PROMETHEUS is not None
    target = served.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [{"job_name": "cxml", "static_configs": [{"targets": [target]}]}],
            }
        ),
        encoding="utf-8",
    )
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log,
            stderr=log,
        )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)
        if process.returncode not in (0, -signal.SIGTERM):
            print(log_path.read_text(errors="replace"))


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def error_rate_alert(prometheus: str) -> dict[str, Any] | None:
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return next((a for a in alerts if a["labels"]["alertname"] == "CxmlHighErrorRate"), None)


def wait_until_up(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer")


@needs_prometheus
@pytest.mark.slow
def test_a_real_prometheus_fires_the_error_rate_alert_on_bad_requests(
    served: str, prometheus: str
) -> None:
    deadline = time.monotonic() + 60  # both start in seconds; bounded on a loaded machine
    wait_until_up(f"{served}/healthz", deadline)
    wait_until_up(f"{prometheus}/-/ready", deadline)
    good = [("file", ("a.png", png_bytes(200), "image/png"))]
    alert = None
    deadline = time.monotonic() + 45
    while alert is None or alert["state"] not in ("pending", "firing"):
        assert time.monotonic() < deadline, f"no CxmlHighErrorRate alert: {alert}"
        # mostly bad requests (400: not an image), a few good ones: well past the 5% threshold
        assert httpx.post(f"{served}/predict", files=good, timeout=10).status_code == 200
        for _ in range(3):
            bad = httpx.post(
                f"{served}/predict",
                content=b"not an image",
                headers={"content-type": "image/png"},
                timeout=10,
            )
            assert bad.status_code == 400
        time.sleep(0.5)
        alert = error_rate_alert(prometheus)
    assert alert["labels"]["instance"] == served.removeprefix("http://")
    assert float(alert["value"]) > 0.5
    # the release joins onto any series through cxml_release_info, in real PromQL
    joined = query(
        prometheus,
        'sum by (job, instance) (cxml_requests_total{endpoint="/predict"}) '
        "* on (job, instance) group_left (release, model_version) cxml_release_info",
    )
    assert [series["metric"]["model_version"] for series in joined] == ["4"]
    assert joined[0]["metric"]["release"].startswith("4-")
    # the images were mid-grey-bright (200 of 255): the brightness summary says so
    brightness = query(prometheus, "cxml_input_brightness_sum / cxml_input_brightness_count")
    assert brightness and float(brightness[0]["value"][1]) == pytest.approx(200.0)

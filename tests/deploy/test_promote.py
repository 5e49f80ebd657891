"""`cxml promote`: the canary decision (pure), deploy.yaml's `canary:` section, and promotions
staging -> production over real sshd and real nginx, with real `cxml serve` processes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cxml.core.errors import ConfigError, DeployError
from cxml.deploy.config import CanarySettings, deploy_config_from_mapping
from cxml.deploy.host.proxy import weighted_upstream_config
from cxml.deploy.promote import (
    Reading,
    ServiceFigures,
    Snapshot,
    agreed_release,
    canary_status_line,
    class_check_warning,
    figures,
    judge_canary,
    kept_release,
    parse_metrics,
    promotion_plan,
    quantile_ms,
)
from cxml.records.release import ReleaseInfo
from cxml.serve.metrics import ServiceMetrics
from tests.support.deploy import (
    PROCESS_SERVE,
    PYTHON,
    DeployHost,
    RequestLoop,
    assert_ok,
    client_env,
    host_state,
    served_version,
    start_deploy_hosts,
    write_workspace,
)

# --- /metrics and the decision -------------------------------------------------------------------


def rendered(latencies_s: list[float], errors: int = 0) -> str:
    metrics = ServiceMetrics()
    for seconds in latencies_s:
        metrics.record_response("/predict", 200)
        metrics.record_prediction(seconds, 1)
    for _ in range(errors):
        metrics.record_response("/predict", 500)
    metrics.record_response("/healthz", 200)
    return metrics.render("1", "r1")


def test_parse_metrics_reads_what_cxml_serve_exports() -> None:
    snapshot = parse_metrics(rendered([0.002] * 90 + [0.2] * 10, errors=5))
    assert snapshot.requests == 105 and snapshot.errors == 5
    assert snapshot.latency_buckets[-1][1] == 100
    p50 = quantile_ms(snapshot.latency_buckets, 0.5)
    p99 = quantile_ms(snapshot.latency_buckets, 0.99)
    assert p50 is not None and 1.0 < p50 <= 2.5
    assert p99 is not None and 100.0 < p99 <= 250.0
    assert quantile_ms((), 0.99) is None


def test_a_window_is_the_difference_of_two_snapshots() -> None:
    before = parse_metrics(rendered([0.002] * 50))
    after = parse_metrics(rendered([0.002] * 50 + [0.4] * 20, errors=2))
    window = after.minus(before)
    assert window.requests == 22 and window.errors == 2
    p95 = quantile_ms(window.latency_buckets, 0.95)
    assert p95 is not None and p95 > 250


def service(release: str, *, requests: int = 100, errors: float = 0.0, p99: float = 20.0,
            classes: dict[str, float] | None = None) -> ServiceFigures:  # fmt: skip
    return ServiceFigures(release, requests, errors, p99 * 0.8, p99, classes or {})


def test_judge_names_the_metric_and_the_measured_values() -> None:
    settings = CanarySettings(max_p95_ratio=100, max_p99_ratio=1.5)
    slow = judge_canary(service("r1", p99=120), service("r2", p99=412), settings, "production",
                        final=False)  # fmt: skip
    assert not slow.healthy and slow.decided
    assert "canary p99 412 ms > 1.5 x production 120 ms" in slow.reason

    erroring = judge_canary(service("r1"), service("r2", errors=0.2), settings, "production",
                            final=False)  # fmt: skip
    assert not erroring.healthy
    assert "canary error rate 20.0% > production 0.0% + 1.0%" in erroring.reason

    fine = judge_canary(service("r1"), service("r2", p99=22), settings, "production", final=True)
    assert fine.healthy and fine.decided


def test_judge_waits_for_enough_requests_and_aborts_without_them() -> None:
    settings = CanarySettings(min_requests=20)
    few = service("r2", requests=5, errors=1.0)
    waiting = judge_canary(service("r1"), few, settings, "production", final=False)
    assert waiting.healthy and not waiting.decided
    ended = judge_canary(service("r1"), few, settings, "production", final=True)
    assert not ended.healthy and "fewer than canary.min_requests (20)" in ended.reason


def test_latencies_of_a_few_milliseconds_are_not_compared_as_ratios() -> None:
    settings = CanarySettings(max_p99_ratio=1.5, max_p95_ratio=1.5)
    verdict = judge_canary(service("r1", p99=0.9), service("r2", p99=4.0), settings, "prod",
                           final=True)  # fmt: skip
    assert verdict.healthy


def test_predicted_class_shift() -> None:
    settings = CanarySettings(max_class_shift=0.2)
    stable = service("r1", classes={"cat": 0.5, "dog": 0.5})
    shifted = judge_canary(stable, service("r2", classes={"cat": 0.9, "dog": 0.1}), settings,
                           "production", final=True)  # fmt: skip
    assert not shifted.healthy and "differ from production's by 0.40" in shifted.reason
    same = judge_canary(stable, service("r2", classes={"cat": 0.45, "dog": 0.55}), settings,
                        "production", final=True)  # fmt: skip
    assert same.healthy
    counted = figures("r2", Snapshot(requests=4, classes={"cat": 3, "dog": 1}))
    assert counted.class_shares == {"cat": 0.75, "dog": 0.25}


def test_the_predicted_class_counter_is_read_and_its_absence_noticed() -> None:
    metrics = ServiceMetrics()
    metrics.record_response("/predict", 200)
    metrics.record_prediction(0.003, 3, [0, 1, 1])
    current = parse_metrics(metrics.render("1", "r1", ("cat", "dog")))
    assert current.class_metric and current.classes == {"cat": 1.0, "dog": 2.0}
    assert figures("r1", current).class_shares == {"cat": 1 / 3, "dog": 2 / 3}
    # a service from before the counter: its /metrics lacks the family altogether
    older = parse_metrics(rendered([0.002]).replace("cxml_predicted_class_total", "gone"))
    assert not older.class_metric and older.classes == {}
    assert not older.minus(older).class_metric and current.minus(current).class_metric

    settings = CanarySettings(max_class_shift=0.2)
    assert class_check_warning(settings, Reading("r1", current, "r2", current)) is None
    assert class_check_warning(CanarySettings(), Reading("r1", older, "r2", current)) is None
    warning = class_check_warning(settings, Reading("r1", older, "r2", current))
    assert warning is not None
    assert "the current release r1 export no cxml_predicted_class_total" in warning
    assert "NOT compared" in warning and "r2" not in warning


def test_the_source_hosts_must_agree_on_one_release() -> None:
    assert agreed_release("staging", {"a:22": "r1", "b:22": "r1"}) == "r1"
    with pytest.raises(DeployError) as caught:
        agreed_release("staging", {"a:22": "r1", "b:22": "r2", "c:22": None})
    message = str(caught.value)
    assert caught.value.exit_code == 3
    assert "its hosts do not serve one release (a:22 serves r1, b:22 serves r2, c:22 serves " \
           "nothing)" in message  # fmt: skip
    with pytest.raises(ConfigError, match="nothing is deployed"):
        agreed_release("staging", {"a:22": None})


def kept(version: str, name: str) -> dict[str, object]:
    return {"release": name, "model_name": "digits", "model_version": version}


def test_a_chosen_version_is_the_newest_release_a_source_host_keeps() -> None:
    hosts = [
        ("a:22", [kept("3", "3-aaa"), kept("4", "4-aaa")]),
        ("b:22", [kept("3", "3-old"), kept("5", "5-bbb"), kept("3", "3-new")]),
    ]
    assert kept_release("staging", "4", hosts) == ("4-aaa", "a:22")
    assert kept_release("staging", "5", hosts) == ("5-bbb", "b:22")
    assert kept_release("staging", "3", hosts[1:]) == ("3-new", "b:22")  # the newest kept
    with pytest.raises(ConfigError) as caught:
        kept_release("staging", "7", [*hosts, ("c:22", [kept("10", "10-c"), kept("local", "x")])])
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        "environment staging keeps no release of registered version 7 (it keeps versions 3, 4, "
        "5, 10, local); deploy version 7 to staging first (cxml redeploy --env staging --model "
        "<its model file> --version 7), check it, then promote again"
    )
    with pytest.raises(ConfigError, match=r"version 7 \(it keeps none\)"):
        kept_release("staging", "7", [("a:22", [])])
    # a record naming something that is not a release directory is never chosen
    with pytest.raises(ConfigError):
        kept_release("staging", "7", [("a:22", [kept("7", "../../etc")])])


def test_a_running_canary_is_one_status_line() -> None:
    running = {"release": "2-abc", "weight": 10, "stable": "1-def",
               "started_at": "2026-11-30T04:00:00Z", "lease_left_s": 21.4, "alive": True}  # fmt: skip
    assert canary_status_line(running) == (
        "CANARY release 2-abc takes 10% of the traffic next to 1-def since 2026-11-30T04:00:00Z; "
        "its promotion's lease holds 21 s more"
    )
    stale = canary_status_line({**running, "lease_left_s": 0.0, "alive": False})
    assert "2-abc (its service is NOT running)" in stale
    assert stale.endswith("its promotion stopped watching it: the next deploy or promote aborts it")
    assert "unreadable: broken" in canary_status_line({"problem": "broken"})


def test_the_dry_run_plan_names_the_release_hosts_and_thresholds() -> None:
    raw = config_with({"weight": 5, "window": 120, "interval": 10, "max_p99_ratio": 2.0})
    raw["environments"]["production"]["hosts"] = ["prod1.example.com", "prod2.example.com"]
    config = deploy_config_from_mapping(raw)
    release = ReleaseInfo(
        release="3-abc", model_version="3", model_name="digits", run_id=None, tracking_uri=None,
        git_commit=None, created_at="2026-11-25T11:00:00Z", model_sha256="f" * 64,
        model_metadata={}, metrics={}, gate_decision="pass",
    )  # fmt: skip
    lines = promotion_plan(
        config.environment("staging"), config.environment("production"), release, ["s:22"]
    )
    text = "\n".join(lines)
    assert f"sha256 {'f' * 64}" in text and "served by staging on s:22" in text
    assert "target production: prod1.example.com:22, prod2.example.com:22" in text
    assert "canary on prod1.example.com:22: 5% of the traffic for 120 s" in text
    assert "p99 at most 2x" in text and "predicted-class shift not compared" in text
    assert "then prod2.example.com:22 one at a time" in text
    plain = promotion_plan(
        config.environment("production"), config.environment("staging"), release, ["p:22"]
    )
    assert "no canary configured for staging" in plain[-1]
    chosen = promotion_plan(
        config.environment("staging"), config.environment("production"), release, ["s:22"],
        kept=True,
    )  # fmt: skip
    assert "kept by staging on s:22" in chosen[0]


def test_the_environment_unknown_key_message_lists_its_sections() -> None:
    raw = config_with({})
    raw["environments"]["production"]["canery"] = {}
    with pytest.raises(ConfigError) as caught:
        deploy_config_from_mapping(raw)
    assert "canery: unknown key (did you mean canary?)" in str(caught.value)
    assert str(caught.value).endswith("docker, canary, checks")


def test_weighted_upstream() -> None:
    text = weighted_upstream_config(8001, 8002, 10)
    assert "server 127.0.0.1:8001 weight=90;" in text
    assert "server 127.0.0.1:8002 weight=10;" in text


# --- deploy.yaml's canary section ----------------------------------------------------------------


def config_with(canary: object) -> dict[str, Any]:
    return {
        "serve": {"proxy": {"upstream_file": "/etc/nginx/cxml-upstream.conf"}},
        "environments": {
            "staging": {"hosts": ["staging.example.com"]},
            "production": {"hosts": ["prod.example.com"], "canary": canary},
        },
    }


def test_canary_section_is_typed() -> None:
    config = deploy_config_from_mapping(
        config_with(
            {
                "weight": 10,
                "window": 300,
                "interval": 10,
                "max_p99_ratio": 1.5,
                "max_error_rate_increase": 0.02,
                "max_class_shift": 0.1,
            }
        )
    )
    canary = config.environment("production").canary
    assert canary == CanarySettings(
        weight=10, window=300.0, interval=10.0, max_p99_ratio=1.5,
        max_error_rate_increase=0.02, max_class_shift=0.1,
    )  # fmt: skip
    assert config.environment("staging").canary is None
    assert deploy_config_from_mapping(config_with({})).environment("production").canary == (
        CanarySettings()
    )


@pytest.mark.parametrize(
    ("canary", "expected"),
    [
        ({"weight": 0}, "environments.production.canary.weight: a canary takes 1 to 99 percent"),
        ({"weight": 100}, "canary.weight: a canary takes 1 to 99 percent of the traffic, got 100"),
        ({"weight": "10%"}, "canary.weight: expected a whole percent of the traffic like 10"),
        ({"weight": True}, "canary.weight: expected a whole percent"),
        ({"window": -5}, "canary.window: must be a finite number greater than 0"),
        ({"window": 10, "interval": 30}, "canary.interval: 30 s is longer than the window (10 s)"),
        ({"max_p99_ratio": 0.5}, "canary.max_p99_ratio: a ratio to the current release is at "
                                 "least 1"),
        ({"max_error_rate_increase": 5}, "canary.max_error_rate_increase: a fraction is between "
                                         "0 and 1"),
        ({"min_requests": 0}, "canary.min_requests: expected a whole number of requests"),
        ({"wieght": 10}, "canary.wieght: unknown key (did you mean weight?)"),
        ("ten percent", "environments.production.canary: expected a mapping with weight"),
    ],
)  # fmt: skip
def test_bad_canary_numbers_are_one_clear_error(canary: object, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        deploy_config_from_mapping(config_with(canary))
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


# --- promotions over real sshd and nginx ---------------------------------------------------------


@dataclass
class Hosts:
    staging: DeployHost
    production: list[DeployHost]

    def client_env(self) -> dict[str, str]:
        return client_env([self.staging, *self.production])


@pytest.fixture
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    """Staging on one host, production on two; two sshd that accept one key, an nginx each."""
    with contextlib.ExitStack() as stack:
        made = start_deploy_hosts(stack, tmp_path_factory, on_servers=(0, 0, 1))
        yield Hosts(staging=made[0], production=made[1:])


SERVE = {**PROCESS_SERVE, "serve_args": ["--workers", "1", "--threads", "1"]}


def write_deploy_yaml(
    workspace: Path,
    hosts: Hosts,
    *,
    production_hosts: int = 2,
    canary: dict[str, object] | None = None,
    production_serve_args: list[str] | None = None,
    staging_checks: dict[str, object] | None = None,
) -> None:
    production: dict[str, object] = {
        "hosts": [host.entry() for host in hosts.production[:production_hosts]]
    }
    if canary is not None:
        production["canary"] = canary
    if production_serve_args is not None:
        production["serve_args"] = production_serve_args
    staging: dict[str, object] = {"hosts": [hosts.staging.entry()]}
    if staging_checks is not None:
        staging["checks"] = staging_checks
    config = {"serve": SERVE, "environments": {"staging": staging, "production": production}}
    (workspace / "deploy.yaml").write_text(yaml.safe_dump(config))


def run_cxml(
    workspace: Path,
    hosts: Hosts,
    *argv: str,
    summary: Path | None = None,
    tracking_uri: str | None = None,
) -> subprocess.CompletedProcess[str]:
    env = hosts.client_env()
    if tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    if summary is not None:
        env["GITHUB_STEP_SUMMARY"] = str(summary)
    return subprocess.run(
        [PYTHON, "-m", "cxml", *argv],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def deployed(tmp_path: Path, hosts: Hosts, production_hosts: int) -> Path:
    """Release 1 on production, release 2 on staging; the workspace of release 2."""
    first = write_workspace(tmp_path / "v1", "1")
    write_deploy_yaml(first, hosts, production_hosts=production_hosts)
    assert_ok(run_cxml(first, hosts, "redeploy", "--env", "production", "--no-alias"))
    second = write_workspace(tmp_path / "v2", "2")
    write_deploy_yaml(second, hosts, production_hosts=production_hosts)
    assert_ok(run_cxml(second, hosts, "redeploy", "--env", "staging", "--no-alias"))
    return second


def model_sha256(root: Path, release: object) -> str:
    return hashlib.sha256((root / "releases" / str(release) / "model.pt").read_bytes()).hexdigest()


def history_actions(root: Path) -> list[tuple[str, str]]:
    history = host_state(root)["history"]
    assert isinstance(history, list)
    return [(str(event["action"]), str(event["result"])) for event in history]


def registry_with_versions(tmp_path: Path, count: int) -> str:
    """A SQLite MLflow registry with versions 1..count of cxml-model (the workspaces' model)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("cxml-model")
    for _ in range(count):
        client.create_model_version("cxml-model", source=str(tmp_path / "model"))
    return uri


def aliases(uri: str, version: str) -> list[str]:
    from cxml.tracking.registry import aliases_of

    return list(aliases_of(uri, "cxml-model", version))


def kept_release_of(root: Path, version: str) -> str:
    releases = host_state(root)["releases"]
    assert isinstance(releases, list)
    kept = [str(r) for r in releases if str(r).startswith(f"{version}-")]
    assert len(kept) == 1, releases
    return kept[0]


@pytest.mark.slow
def test_staging_check_then_a_chosen_version_goes_to_production_through_a_canary(
    tmp_path: Path, hosts: Hosts
) -> None:
    """The promotion path end to end: deploys move the aliases, staging is checked, and the
    version picked by hand (kept by staging, no longer served there) takes production through a
    canary under load, without a failed request; production and champion follow it."""
    uri = registry_with_versions(tmp_path, 3)
    checks = {"sample": 16, "rate": 10, "duration": 1, "max_p99_ms": 5000}
    workspaces = {}
    for version, env_name in (("1", "production"), ("2", "staging"), ("3", "staging")):
        workspace = write_workspace(tmp_path / f"v{version}", version)
        write_deploy_yaml(workspace, hosts, production_hosts=2, staging_checks=checks)
        assert_ok(run_cxml(workspace, hosts, "redeploy", "--env", env_name, tracking_uri=uri))
        workspaces[version] = workspace
    assert aliases(uri, "1") == ["champion", "production"] and aliases(uri, "3") == ["staging"]
    workspace = workspaces["3"]
    checked = run_cxml(workspace, hosts, "check", "--env", "staging", tracking_uri=uri)
    assert_ok(checked)
    assert json.loads((workspace / "checks" / "staging.json").read_text())["passed"]

    chosen = kept_release_of(hosts.staging.root, "2")
    assert host_state(hosts.staging.root)["current"] != chosen  # staging serves 3, keeps 2
    canary = {"weight": 30, "window": 8, "interval": 2, "min_requests": 10,
              "max_p95_ratio": 50, "max_p99_ratio": 50, "max_error_rate_increase": 0.05}  # fmt: skip
    write_deploy_yaml(workspace, hosts, canary=canary, staging_checks=checks)
    summary = tmp_path / "summary.md"
    loop = RequestLoop(hosts.production[0].proxy.url, interval_s=0.02)
    loop.start()
    try:
        result = run_cxml(workspace, hosts, "promote", "--from", "staging", "--to", "production",
                          "--version", "2", summary=summary, tracking_uri=uri)  # fmt: skip
    finally:
        loop.stop()
    assert_ok(result)
    assert f"staging keeps release {chosen}" in result.stdout
    assert loop.failures == []
    # while both served, the canary answered about its weight of the requests
    first_new = loop.answers.index("2")
    last_old = len(loop.answers) - 1 - loop.answers[::-1].index("1")
    mixed = loop.answers[first_new : last_old + 1]
    assert len(mixed) > 20, loop.answers
    share = mixed.count("2") / len(mixed)
    assert 0.15 <= share <= 0.45, (share, len(mixed))
    assert loop.answers[-1] == "2"

    assert [served_version(host.proxy) for host in hosts.production] == ["2", "2"]
    for host in hosts.production:
        current = host_state(host.root)["current"]
        assert current == chosen  # the same content-addressed release
        assert model_sha256(host.root, current) == model_sha256(hosts.staging.root, current)
    canary_history = history_actions(hosts.production[0].root)
    assert ("canary", "started") in canary_history and ("promote", "ok") in canary_history
    assert not (hosts.production[0].root / "canary.json").exists()
    services = sorted(p.stem for p in (hosts.production[0].root / "services").glob("*.json"))
    assert services == [chosen]  # the old release was stopped
    # production and champion follow the promoted version; staging stays on what it serves
    assert aliases(uri, "2") == ["champion", "production"]
    assert aliases(uri, "1") == [] and aliases(uri, "3") == ["staging"]
    text = summary.read_text()
    assert "cxml promote staging → production" in text and "canary promoted to 100%" in text
    assert "production now serves release" in text
    assert "registry alias production, champion -> cxml-model version 2" in text


@pytest.mark.slow
def test_an_erroring_canary_is_aborted_and_traffic_returns(tmp_path: Path, hosts: Hosts) -> None:
    workspace = deployed(tmp_path, hosts, production_hosts=1)
    production = hosts.production[0]
    before = host_state(production.root)["current"]
    # the canary starts with a serving setting that refuses every image (413): a real setting
    canary = {"weight": 30, "window": 20, "interval": 2, "min_requests": 5,
              "max_p95_ratio": 50, "max_p99_ratio": 50}  # fmt: skip
    write_deploy_yaml(
        workspace, hosts, production_hosts=1, canary=canary,
        production_serve_args=["--workers", "1", "--threads", "1", "--max-request-bytes", "10"],
    )  # fmt: skip
    summary = tmp_path / "summary.md"
    loop = RequestLoop(production.proxy.url, interval_s=0.02)
    loop.start()
    try:
        result = run_cxml(workspace, hosts, "promote", "--from", "staging", "--to", "production",
                          summary=summary)  # fmt: skip
        after = RequestLoop(production.proxy.url, interval_s=0.02)
        after.start()
        time.sleep(1.5)
        after.stop()
    finally:
        loop.stop()
    assert result.returncode == 3, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "canary error rate 100.0% > production 0.0%" in errors[0]
    assert "serves all the traffic again" in errors[0]
    # only the canary's own answers failed (413); nothing on the stable path did
    assert loop.failures and all(f.startswith("HTTP 413") for f in loop.failures), loop.failures
    assert set(loop.answers) == {"1"}
    assert after.failures == [] and after.ok > 5 and set(after.answers) == {"1"}
    assert served_version(production.proxy) == "1"
    assert host_state(production.root)["current"] == before
    assert ("canary", "aborted") in history_actions(production.root)
    assert not (production.root / "canary.json").exists()
    services = sorted(p.stem for p in (production.root / "services").glob("*.json"))
    assert services == [before]
    assert "canary aborted" in summary.read_text()


def test_bad_inputs_are_one_line(tmp_path: Path, hosts: Hosts) -> None:
    write_deploy_yaml(tmp_path, hosts)
    unknown = run_cxml(tmp_path, hosts, "promote", "--from", "staging", "--to", "prodution")
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        "error: deploy.yaml: no environment 'prodution' (did you mean production?); the "
        "environments are: production, staging"
    ]
    empty = run_cxml(tmp_path, hosts, "promote", "--from", "staging", "--to", "production")
    assert empty.returncode == 2, empty.stderr
    last = empty.stderr.strip().splitlines()[-1]
    assert last == (
        "error: environment staging: nothing is deployed (no host serves a release); deploy it "
        "first: cxml redeploy --env staging"
    )
    assert not any(line.startswith("Traceback") for line in empty.stderr.splitlines())
    absent = run_cxml(tmp_path, hosts, "promote", "--from", "staging", "--to", "production",
                      "--version", "7")  # fmt: skip
    assert absent.returncode == 2, absent.stderr
    assert (
        absent.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: environment staging keeps no release of registered version 7 (it keeps none); "
            "deploy version 7 to staging first"
        )
    )
    for typed in ("7; rm -rf /", "v7", ""):
        odd = run_cxml(tmp_path, hosts, "promote", "--from", "staging", "--to", "production",
                       "--version", typed)  # fmt: skip
        assert odd.returncode == 2 and "is not a registered model version" in odd.stderr
    write_deploy_yaml(tmp_path, hosts, canary={"weight": 150})
    bad = run_cxml(tmp_path, hosts, "promote", "--from", "staging", "--to", "production")
    assert bad.returncode == 2
    assert "canary.weight: a canary takes 1 to 99 percent of the traffic, got 150" in bad.stderr
    assert json.dumps(bad.stderr)


def wait_for_canary(root: Path, client: subprocess.Popen[str], log: Path) -> dict[str, Any]:
    """The host's canary record once the canary takes traffic (the client is then watching)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert client.poll() is None, log.read_text()
        if (root / "canary.json").exists() and "canary ok" in log.read_text():
            return dict(json.loads((root / "canary.json").read_text()))
        time.sleep(0.5)
    raise AssertionError(f"no canary started: {log.read_text()}")


@pytest.mark.slow
def test_a_killed_promotion_holds_the_host_until_the_next_promote_aborts_its_canary(
    tmp_path: Path, hosts: Hosts
) -> None:
    workspace = deployed(tmp_path, hosts, production_hosts=1)
    production = hosts.production[0]
    before = host_state(production.root)["current"]
    release = host_state(hosts.staging.root)["current"]
    canary = {"weight": 30, "window": 600, "interval": 2, "min_requests": 1,
              "max_p95_ratio": 50, "max_p99_ratio": 50, "max_error_rate_increase": 0.5}  # fmt: skip
    write_deploy_yaml(workspace, hosts, production_hosts=1, canary=canary)

    dry = run_cxml(workspace, hosts, "promote", "--from", "staging", "--to", "production",
                   "--dry-run")  # fmt: skip
    assert_ok(dry)
    assert f"sha256 {model_sha256(hosts.staging.root, release)}" in dry.stdout
    assert (
        "canary on root@127.0.0.1:" in dry.stdout and "30% of the traffic for 600 s" in dry.stdout
    )
    assert "nothing was changed (dry run)" in dry.stdout
    assert not (production.root / "releases" / str(release)).exists()
    assert host_state(production.root)["current"] == before

    env = hosts.client_env()
    log = tmp_path / "promote.log"
    with log.open("w") as output:
        client = subprocess.Popen(
            [PYTHON, "-m", "cxml", "promote", "--from", "staging", "--to", "production"],
            cwd=workspace, env=env, stdout=output, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_for_canary(production.root, client, log)
        # the window holds the host: a deploy now is refused, saying why
        refused = run_cxml(workspace, hosts, "redeploy", "--env", "production", "--no-alias")
        assert refused.returncode == 3, refused.stdout + refused.stderr
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, refused.stderr
        assert f"a canary of release {release} is under way on this host" in errors[0]
        status = run_cxml(workspace, hosts, "redeploy", "--env", "production", "--status")
        assert_ok(status)
        line = next(x for x in status.stdout.splitlines() if "CANARY" in x)
        assert f"CANARY release {release} takes 30% of the traffic next to {before}" in line
        assert "its promotion's lease holds" in line, line
    finally:
        os.killpg(client.pid, signal.SIGKILL)  # the promotion's client and its ssh, as a CI cancel
        client.wait(timeout=30)
    record = json.loads((production.root / "canary.json").read_text())
    assert record["release"] == release  # nobody decided: the host still holds the canary

    # once the dead client's lease runs out, the next promote aborts its canary, says so, goes on
    time.sleep(max(0.0, float(record["watched_until"]) - time.time() + 0.5))
    write_deploy_yaml(workspace, hosts, production_hosts=1, canary={**canary, "window": 4})
    loop = RequestLoop(production.proxy.url, interval_s=0.05)
    loop.start()
    try:
        again = run_cxml(workspace, hosts, "promote", "--from", "staging", "--to", "production",
                         "--no-alias")  # fmt: skip
    finally:
        loop.stop()
    assert_ok(again)
    assert f"aborted a stale canary of release {release}" in again.stdout
    assert loop.failures == []
    assert served_version(production.proxy) == "2"
    assert host_state(production.root)["current"] == release
    history = history_actions(production.root)
    assert ("canary", "aborted") in history and history[-1] == ("promote", "ok")
    services = sorted(p.stem for p in (production.root / "services").glob("*.json"))
    assert services == [release]  # one release serves: the old one and both canaries stopped
    assert not (production.root / "canary.json").exists()


def replace_with_a_larger_model(workspace: Path, side: int) -> None:
    """A ResNet-18 at side x side in the workspace: a real model that answers far slower than the
    8x8 small CNN on one thread (served images are resized to its input)."""
    import torch

    from cxml.ml import models
    from cxml.ml.models import ModelMetadata

    torch.manual_seed(0)
    metadata = ModelMetadata(
        architecture="resnet18", num_classes=10, class_names=tuple(str(i) for i in range(10)),
        input_size=(1, side, side), mean=(0.3,), std=(0.35,), cxml_version="0.1.0",
        created_at="2026-11-25T11:00:00Z",
    )  # fmt: skip
    network = models.build_model("resnet18", 10, 1)
    models.save_model_file(workspace / "model" / "model.pt", network, metadata)


@pytest.mark.slow
def test_a_slow_canary_is_aborted_on_its_measured_latency(tmp_path: Path, hosts: Hosts) -> None:
    production = hosts.production[0]
    first = write_workspace(tmp_path / "v1", "1")
    write_deploy_yaml(first, hosts, production_hosts=1)
    assert_ok(run_cxml(first, hosts, "redeploy", "--env", "production", "--no-alias"))
    larger = write_workspace(tmp_path / "v3", "3")
    replace_with_a_larger_model(larger, 192)
    write_deploy_yaml(larger, hosts, production_hosts=1)
    assert_ok(run_cxml(larger, hosts, "redeploy", "--env", "staging", "--no-alias"))
    before = host_state(production.root)["current"]
    canary = {"weight": 30, "window": 20, "interval": 2, "min_requests": 10,
              "max_p95_ratio": 1.5, "max_p99_ratio": 1.5}  # fmt: skip
    write_deploy_yaml(larger, hosts, production_hosts=1, canary=canary)
    loop = RequestLoop(production.proxy.url, interval_s=0.02)
    loop.start()
    try:
        result = run_cxml(larger, hosts, "promote", "--from", "staging", "--to", "production")
    finally:
        loop.stop()
    assert result.returncode == 3, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "canary p95 " in errors[0] and "(canary.max_p95_ratio)" in errors[0], errors[0]
    assert "x production " in errors[0] and "serves all the traffic again" in errors[0]
    assert loop.failures == []  # slow, not failing: every request was answered
    assert set(loop.answers) == {"1", "3"}
    assert served_version(production.proxy) == "1"
    assert host_state(production.root)["current"] == before
    assert ("canary", "aborted") in history_actions(production.root)
    assert not (production.root / "canary.json").exists()

"""`cxml check --env staging` against a real `cxml serve` on 127.0.0.1: online = offline (a
faithful release passes, a skewed one fails naming the first differing image), load-test
thresholds, the checks: section of deploy.yaml, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from cxml.core.errors import ConfigError
from cxml.deploy.bundle import describe_release
from cxml.deploy.check import (
    HeldOutExample,
    LoadResult,
    find_first_mismatch,
    load_failures,
    percentile,
    predict_body,
    summary_markdown,
)
from cxml.deploy.config import CheckSettings, deploy_config_from_mapping
from cxml.records.release import (
    ServingConfig,
    read_model_metadata,
    save_bundle,
    sha256_file,
)
from tests.support.deploy import (
    PYTHON,
    NginxProxy,
    SshServer,
    assert_ok,
    deploy_env,
    free_port,
    make_model_file,
    nginx_proxy,
    ssh_server,
    stop_services,
    write_workspace,
)
from tests.support.serving import running_serve
from tests.support.tabular import (
    TABULAR_PARAMS,
    skewed_tabular_model_file,
    trained_tabular_model_file,
)

__all__ = ["nginx_proxy", "ssh_server"]  # fixtures, used by name

TIMEOUT_S = 300


def run_cxml(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m cxml *args` in `cwd`, its output captured."""
    return subprocess.run(
        [PYTHON, "-m", "cxml", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env,
        check=False,
    )


# --- pure parts -----------------------------------------------------------------------------------


def test_first_mismatch_names_the_image_and_both_classes() -> None:
    images = [HeldOutExample(f"test[{i}]", offline) for i, offline in enumerate([1, 2, 3, 4])]
    count, first = find_first_mismatch(
        images, [1, 2, 7, 5], ("a", "b", "c", "d", "e", "f", "g", "h")
    )
    assert count == 2
    assert first is not None
    assert (first.image, first.offline_class, first.online_class) == ("test[2]", "d", "h")
    assert find_first_mismatch(images, [1, 2, 3, 4], ()) == (0, None)


def test_a_tabular_model_is_sent_rows_and_an_image_model_pngs() -> None:
    rows = [HeldOutExample(f"test row {i}", 0, row=(1.5, -2.0 * i)) for i in range(2)]
    assert json.loads(predict_body(rows)) == {"rows": [[1.5, -0.0], [1.5, -2.0]]}
    images = [HeldOutExample("test[0]", 0, png=b"\x89PNG")]
    assert json.loads(predict_body(images)) == {"images": ["iVBORw=="]}


def load_result(**overrides: object) -> LoadResult:
    values: dict[str, object] = dict(
        requests=100, errors=0, duration_s=5.0, rps=20.0, p50_ms=4.0, p99_ms=30.0, first_error=None
    )
    values.update(overrides)
    return LoadResult(**values)  # type: ignore[arg-type]


def test_load_thresholds_pass_and_fail_on_each_limit() -> None:
    settings = CheckSettings(max_p99_ms=50, max_error_rate=0.01, min_rps=15)
    assert load_failures(load_result(), settings) == []
    slow = load_failures(load_result(p99_ms=80.0), settings)
    assert len(slow) == 1 and "p99 latency 80 ms is over max_p99_ms 50" in slow[0]
    failing = load_failures(load_result(errors=5, first_error="HTTP 503"), settings)
    assert (
        len(failing) == 1 and "5 of 100 requests failed" in failing[0] and "HTTP 503" in failing[0]
    )
    assert load_failures(load_result(errors=1), settings) == []  # 1% is allowed
    starved = load_failures(load_result(rps=9.5), settings)
    assert len(starved) == 1 and "under min_rps 15" in starved[0]


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 99) == 0.0
    assert percentile([float(v) for v in range(1, 101)], 99) == 99.0
    assert percentile([5.0], 50) == 5.0


def test_summary_lists_numbers_and_failures() -> None:
    online = {"compared": 4, "mismatches": 0, "served_release": "3-abc"}
    text = summary_markdown(
        {
            "environment": "staging",
            "passed": False,
            "failures": ["load test: p99 latency 80 ms is over max_p99_ms 50"],
            "urls": [
                {
                    "url": "http://x",
                    "online": online,
                    "load": {
                        "requests": 10,
                        "duration_s": 1.0,
                        "rps": 10.0,
                        "p50_ms": 2.0,
                        "p99_ms": 80.0,
                        "errors": 0,
                    },
                }
            ],
        }
    )
    assert "FAILED" in text and "10 req/s" in text and "p99 80 ms" in text


def config_with_checks(checks: object) -> dict[str, object]:
    return {
        "serve": {"proxy": {"upstream_file": "/etc/nginx/cxml/upstream.conf"}},
        "environments": {"staging": {"hosts": ["127.0.0.1"], "checks": checks}},
    }


def test_checks_section_is_typed_with_defaults() -> None:
    config = deploy_config_from_mapping(
        config_with_checks(
            {
                "sample": 32,
                "rate": 50,
                "duration": 3,
                "max_p99_ms": 250,
                "max_error_rate": 0.01,
                "min_rps": 40,
            }
        )
    )
    assert config.environment("staging").checks == CheckSettings(
        sample=32, rate=50.0, duration=3.0, max_p99_ms=250.0, max_error_rate=0.01, min_rps=40.0
    )
    plain = deploy_config_from_mapping(config_with_checks(None))
    assert plain.environment("staging").checks == CheckSettings()


@pytest.mark.parametrize(
    ("checks", "message"),
    [
        ({"rate": "fast"}, "environments.staging.checks.rate: expected a number greater than 0"),
        ({"sample": 0}, "checks.sample: expected a whole number of images from 1 to 10000"),
        ({"max_error_rate": 2}, "checks.max_error_rate: a fraction is between 0 and 1"),
        ({"rps": 3}, "rps"),
        ({"rate": 1000, "duration": 1000}, "lower rate or duration"),
        ("yes", "environments.staging.checks: expected a mapping"),
    ],
)
def test_bad_checks_settings_name_the_key(checks: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        deploy_config_from_mapping(config_with_checks(checks))


# --- a real service -------------------------------------------------------------------------------


def skewed_model_file(original: Path, path: Path) -> Path:
    """The same weights with other normalisation statistics: a serving side that preprocesses
    differently from training (as a serving image with its own `normalise` would)."""
    from cxml.ml import models

    network, metadata = models.load_model_file(str(original))
    models.save_model_file(path, network, replace(metadata, mean=(0.6,), std=(0.2,)))
    return path


def bundle_of(model: Path, directory: Path) -> Path:
    release = describe_release(
        sha256_file(model),
        read_model_metadata(model),
        None,
        None,
        {},
        version="3",
        forced_reason=None,
        created_at="2026-11-30T00:00:00Z",
        serving=ServingConfig(),
    )
    return save_bundle(directory / release.release, model, release).directory


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("check")
    make_model_file(root / "model.pt", seed=3)
    skewed_model_file(root / "model.pt", root / "skewed.pt")
    return root


def serve(bundle: Path, log: Path) -> Iterator[str]:
    with running_serve(["--bundle", str(bundle)], log, timeout_s=90) as served:
        yield served.url


@pytest.fixture(scope="module")
def faithful_url(workspace: Path) -> Iterator[str]:
    yield from serve(bundle_of(workspace / "model.pt", workspace / "a"), workspace / "a.log")


@pytest.fixture(scope="module")
def skewed_url(workspace: Path) -> Iterator[str]:
    yield from serve(bundle_of(workspace / "skewed.pt", workspace / "b"), workspace / "b.log")


def run_check(
    workspace: Path, url: str, checks: dict[str, object], *extra: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, object] | None]:
    config = {
        "serve": {"proxy": {"upstream_file": "/etc/nginx/cxml/upstream.conf", "public_url": url}},
        "environments": {"staging": {"hosts": ["127.0.0.1"], "checks": checks}},
    }
    (workspace / "deploy.yaml").write_text(json.dumps(config))
    output = workspace / "checks" / "staging.json"
    output.unlink(missing_ok=True)
    summary = workspace / "summary.md"
    summary.write_text("")
    environment = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary)}
    result = run_cxml(
        workspace, "check", "--env", "staging", "--model", "model.pt", *extra, env=environment
    )
    report = json.loads(output.read_text()) if output.exists() else None
    return result, report


def urls(report: dict[str, object] | None) -> list[dict[str, object]]:
    assert report is not None
    results = report["urls"]
    assert isinstance(results, list) and len(results) == 1
    return results


QUICK_LOAD = {"sample": 64, "rate": 20, "duration": 1.5, "max_p99_ms": 5000}


@pytest.mark.slow
def test_a_faithful_release_passes_and_records_the_numbers(
    workspace: Path, faithful_url: str
) -> None:
    result, report = run_check(workspace, faithful_url, QUICK_LOAD)
    assert result.returncode == 0, result.stdout + result.stderr
    assert report is not None and report["passed"] is True
    online = urls(report)[0]["online"]
    assert isinstance(online, dict) and online["compared"] == 64 and online["mismatches"] == 0
    assert online["served_model_sha256"] == sha256_file(workspace / "model.pt")
    load = urls(report)[0]["load"]
    assert isinstance(load, dict) and load["requests"] == 30 and load["errors"] == 0
    assert load["rps"] > 0 and load["p99_ms"] >= load["p50_ms"] > 0
    assert "cxml check `staging`: passed" in (workspace / "summary.md").read_text()


@pytest.mark.slow
def test_a_skewed_release_fails_with_the_first_differing_image(
    workspace: Path, skewed_url: str
) -> None:
    result, report = run_check(workspace, skewed_url, QUICK_LOAD, "--skip-load")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1
    assert "online != offline" in error[0] and "preprocessing skew" in error[0]
    assert "the first is test[" in error[0] and "offline class" in error[0]
    assert report is not None and report["passed"] is False
    online = urls(report)[0]["online"]
    assert isinstance(online, dict) and online["mismatches"] > 0
    first = online["first_mismatch"]
    assert isinstance(first, dict) and first["offline_class"] != first["online_class"]


@pytest.mark.slow
def test_load_thresholds_fail_the_check_with_the_measurement(
    workspace: Path, faithful_url: str
) -> None:
    strict = {**QUICK_LOAD, "max_p99_ms": 0.001, "min_rps": 10_000}
    result, report = run_check(workspace, faithful_url, strict, "--sample", "4")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "p99 latency" in result.stderr and "over max_p99_ms 0.001" in result.stderr
    assert report is not None and len(report["failures"]) == 2  # type: ignore[arg-type]
    assert "under min_rps 10000" in (workspace / "summary.md").read_text()


@pytest.mark.slow
def test_an_unreachable_environment_is_a_runtime_error(workspace: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result, _ = run_check(workspace, url, QUICK_LOAD, "--skip-load", "--sample", "2")
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stderr.count("error:") == 1 and "is unreachable" in result.stderr
    assert "Traceback" not in result.stderr


# --- a real service of a trained tabular model ---------------------------------------------------


@pytest.fixture(scope="module")
def tabular_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("check-tabular")
    (root / "params.yaml").write_text(TABULAR_PARAMS, encoding="utf-8")
    trained_tabular_model_file(root / "model.pt", seed=4)
    skewed_tabular_model_file(root / "model.pt", root / "skewed.pt")
    return root


@pytest.fixture(scope="module")
def tabular_url(tabular_workspace: Path) -> Iterator[str]:
    root = tabular_workspace
    yield from serve(bundle_of(root / "model.pt", root / "a"), root / "a.log")


@pytest.fixture(scope="module")
def skewed_tabular_url(tabular_workspace: Path) -> Iterator[str]:
    root = tabular_workspace
    yield from serve(bundle_of(root / "skewed.pt", root / "b"), root / "b.log")


@pytest.mark.slow
def test_a_tabular_release_is_checked_with_its_test_rows(
    tabular_workspace: Path, tabular_url: str
) -> None:
    result, report = run_check(tabular_workspace, tabular_url, QUICK_LOAD)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "64 held-out rows" in result.stderr + result.stdout
    assert report is not None and report["passed"] is True
    online = urls(report)[0]["online"]
    assert isinstance(online, dict) and online["examples"] == "rows"
    assert online["compared"] == 64 and online["mismatches"] == 0
    load = urls(report)[0]["load"]
    assert isinstance(load, dict) and load["errors"] == 0  # the load test sends a row too
    assert "64/64 held-out rows match" in (tabular_workspace / "summary.md").read_text()


@pytest.mark.slow
def test_a_skewed_tabular_release_fails_naming_the_first_differing_row(
    tabular_workspace: Path, skewed_tabular_url: str
) -> None:
    result, report = run_check(tabular_workspace, skewed_tabular_url, QUICK_LOAD, "--skip-load")
    assert result.returncode == 1, result.stdout + result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in result.stderr
    assert "held-out rows get another class; the first is test row " in error[0]
    assert report is not None
    first = urls(report)[0]["online"]["first_mismatch"]  # type: ignore[index]
    assert first["image"].startswith("test row ")
    assert {first["offline_class"], first["online_class"]} == {"malignant", "benign"}


def test_an_environment_without_public_url_is_a_config_error(tmp_path: Path) -> None:
    config = config_with_checks(None)
    (tmp_path / "deploy.yaml").write_text(json.dumps(config))
    make_model_file(tmp_path / "model.pt")
    result = run_cxml(tmp_path, "check", "--env", "staging", "--model", "model.pt")
    assert result.returncode == 2
    assert (
        "has no proxy.public_url to check (host 127.0.0.1:22); set it in deploy.yaml or pass --url"
        in result.stderr
    )


# --- the whole staging path on a real host ----------------------------------------------------


@pytest.mark.slow
def test_redeploy_to_staging_moves_its_alias_and_the_check_passes_through_nginx(
    tmp_path: Path, ssh_server: SshServer, nginx_proxy: NginxProxy
) -> None:
    from mlflow.tracking import MlflowClient

    workspace = write_workspace(tmp_path / "repo", "1")
    root = tmp_path / "host" / "cxml"
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    registry.create_registered_model("cxml-model")
    registry.create_model_version("cxml-model", source=str(workspace / "model"))
    config = {
        "serve": {
            "mode": "process",
            "remote_python": PYTHON,
            "ssh": {"user": "root"},
            "health_timeout": 60,
            "drain": 1,
        },
        "environments": {
            "staging": {
                "hosts": [
                    {
                        "host": "127.0.0.1",
                        "port": ssh_server.port,
                        "root": str(root),
                        "proxy": {
                            "upstream_file": str(nginx_proxy.upstream_config),
                            "reload": nginx_proxy.reload_command,
                            "public_url": nginx_proxy.url,
                        },
                    }
                ],
                "checks": {"sample": 32, "rate": 10, "duration": 1, "max_p99_ms": 5000},
            }
        },
    }
    (workspace / "deploy.yaml").write_text(json.dumps(config))
    environment = deploy_env()
    environment["CXML_SSH_KEY"] = ssh_server.key_file.read_text()
    environment["CXML_KNOWN_HOSTS"] = ssh_server.known_hosts
    environment["MLFLOW_TRACKING_URI"] = tracking_uri
    try:
        deployed = run_cxml(workspace, "redeploy", "--env", "staging", env=environment)
        assert_ok(deployed)
        assert "registry alias staging -> cxml-model version 1" in deployed.stdout
        aliases = registry.get_model_version("cxml-model", "1").aliases
        assert list(aliases) == ["staging"]  # champion follows production only
        checked = run_cxml(workspace, "check", "--env", "staging", env=environment)
        assert_ok(checked)
        report = json.loads((workspace / "checks" / "staging.json").read_text())
        assert report["passed"] and report["urls"][0]["online"]["mismatches"] == 0
        assert report["urls"][0]["online"]["served_model_sha256"] == sha256_file(
            workspace / "model" / "model.pt"
        )
    finally:
        stop_services(root)

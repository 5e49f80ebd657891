"""MLflow aliases per environment, in a real MLflow (a SQLite store and a real `mlflow server`): a
deploy to E moves alias E, `champion` follows production only, and an unreachable server follows
`tracking.required`."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cxml.core.errors import TrackingError
from cxml.redeploy import move_alias
from cxml.tracking.registry import (
    CHAMPION,
    alias_version,
    aliases_of,
    deploy_aliases,
)
from tests.support.mlflow_server import running_mlflow_server

MODEL = "cxml-model"


def test_each_environment_moves_its_own_alias_and_production_the_champion() -> None:
    assert deploy_aliases("staging") == ("staging",)
    assert deploy_aliases("production") == ("production", CHAMPION)
    assert deploy_aliases(None) == (CHAMPION,)
    assert deploy_aliases(None, "blue") == (CHAMPION, "blue")
    assert deploy_aliases("staging", "qa") == ("staging", "qa")
    assert deploy_aliases("production", CHAMPION) == ("production", CHAMPION)


def make_versions(uri: str) -> None:
    """Versions 1, 2 and 3 of cxml-model in the registry at `uri`, each from a run (a server
    refuses a version whose source no run or logged model backs)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(MODEL)
    run_id = client.create_run("0").info.run_id
    for _ in range(3):
        client.create_model_version(MODEL, source=f"runs:/{run_id}/model", run_id=run_id)


@pytest.fixture(params=["sqlite", pytest.param("server", marks=pytest.mark.slow)])
def registry_uri(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A registry with versions 1, 2 and 3 of cxml-model: a SQLite file, or a real `mlflow
    server` (REST, as a team's shared tracking server is reached)."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        make_versions(uri)
        yield uri
        return
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    with running_mlflow_server(tmp_path / "server") as url:
        make_versions(url)
        yield url


def record(version: str, uri: str | None) -> dict[str, Any]:
    return {
        "release": f"{version}-abc",
        "model_name": MODEL,
        "model_version": version,
        "tracking_uri": uri,
    }


def test_deploys_move_the_environment_aliases(registry_uri: str) -> None:
    move_alias(record("1", registry_uri), deploy_aliases("staging"))
    assert aliases_of(registry_uri, MODEL, "1") == ("staging",)
    assert alias_version(registry_uri, MODEL, CHAMPION) is None  # staging never crowns

    move_alias(record("1", registry_uri), deploy_aliases("production"))
    move_alias(record("2", registry_uri), deploy_aliases("staging"))
    assert aliases_of(registry_uri, MODEL, "1") == (CHAMPION, "production")
    assert aliases_of(registry_uri, MODEL, "2") == ("staging",)

    # promoting 2: production and champion follow it, staging stays where it is
    move_alias(record("2", registry_uri), deploy_aliases("production"))
    assert aliases_of(registry_uri, MODEL, "1") == ()
    assert aliases_of(registry_uri, MODEL, "2") == (CHAMPION, "production", "staging")
    champion = alias_version(registry_uri, MODEL, CHAMPION)
    assert champion is not None and str(champion.version) == "2"


def test_a_release_without_a_registered_version_moves_nothing(
    registry_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    move_alias(record("local", registry_uri), deploy_aliases("staging"))
    assert "registry alias staging not moved" in capsys.readouterr().out
    assert alias_version(registry_uri, MODEL, "staging") is None


def unreachable_server() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_an_unreachable_server_follows_tracking_required(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    server = unreachable_server()
    with pytest.raises(TrackingError, match="is live, but moving registry alias staging"):
        move_alias(record("1", server), deploy_aliases("staging"), required=True)
    move_alias(record("1", server), deploy_aliases("staging"), required=False)
    output = capsys.readouterr()
    assert "tracking.required is false: carrying on" in output.out + output.err

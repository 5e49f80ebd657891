"""HostSettings: one set of defaults, carried from the client to the host as argv and back."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cxml import redeploy
from cxml.core.errors import ConfigError
from cxml.deploy.host.command import parse_args as host_parse_args
from cxml.deploy.host.settings import DEFAULTS, HostSettings, add_arguments


def parse(argv: list[str]) -> HostSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return HostSettings.from_args(parser.parse_args(argv))


@pytest.mark.parametrize(
    "settings",
    [
        HostSettings(),
        HostSettings(root=Path("/opt/cxml"), mode="process", keep=2, health_timeout_s=0.25,
                     lock_timeout_s=1e-3, drain_s=123456789.5, proxy_check=()),
        HostSettings(
            public_url="http://127.0.0.1:8080",
            proxy_config=Path("/etc/nginx/cxml-upstream.conf"),
            proxy_reload=("sudo", "nginx", "-p", "/srv/px dir", "-s", "reload"),
            proxy_check=("-t", "--weird arg"),
            docker=("podman", "--runtime", "runc"),
            image="localhost:5000/team/cxml-serve:test",
            docker_build_context=Path("/srv/cxml-src"),
            docker_build_args=("BASE_IMAGE=localhost/base:2", "-X=1"),
            serve_args=("--host", "127.0.0.2", "--workers=2"),
        ),
        HostSettings(root=Path("-odd root"), image="-image", serve_args=("-v",)),
    ],
)  # fmt: skip
def test_to_argv_then_from_args_gives_the_same_settings(settings: HostSettings) -> None:
    assert parse(settings.to_argv()) == settings
    host_args = host_parse_args(["activate", *settings.to_argv()])
    assert HostSettings.from_args(host_args) == settings


def test_the_client_and_the_host_share_the_defaults() -> None:
    client = redeploy.parse_args(["--host", "h"])
    host = host_parse_args(["status", "--root", str(DEFAULTS.root)])
    assert HostSettings.from_args(client) == HostSettings.from_args(host) == DEFAULTS
    assert DEFAULTS.mode == "docker"  # the client's default since the first release


@pytest.mark.parametrize(
    ("argv", "phrase"),
    [
        (["--keep", "1"], "--keep"),
        (["--mode", "process", "--docker-build-context", "/src"], "--docker-build-context"),
        (["--proxy-reload", "nginx 'unclosed"], "--proxy-reload"),
        (["--docker-command", ""], "--docker-command: needs a command"),
    ],
)
def test_settings_that_cannot_work_are_config_errors(argv: list[str], phrase: str) -> None:
    with pytest.raises(ConfigError, match=phrase):
        parse(argv)

"""`cxml redeploy --env NAME` across two hosts: two real sshd, two real nginx, two deploy roots.

Each "host" is an sshd on its own loopback port with its own root and its own nginx; the deploys
are driven only by deploy.yaml plus the key and known_hosts in the environment, as in CI.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.deploy import (
    PROCESS_SERVE,
    PYTHON,
    DeployHost,
    RequestLoop,
    assert_ok,
    client_env,
    deploy_env,
    host_state,
    served_version,
    start_deploy_hosts,
    write_workspace,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[DeployHost]]:
    """Two hosts that accept one deploy key (the first sshd's client key)."""
    with contextlib.ExitStack() as stack:
        yield start_deploy_hosts(stack, tmp_path_factory, on_servers=(0, 1))


def write_deploy_yaml(workspace: Path, hosts: list[DeployHost], **host_overrides: object) -> None:
    """deploy.yaml with `production` on both hosts; `host_overrides` go to the second host."""
    config = {
        "serve": PROCESS_SERVE,
        "environments": {
            "production": {"hosts": [hosts[0].entry(), hosts[1].entry(**host_overrides)]}
        },
    }
    (workspace / "deploy.yaml").write_text(yaml.safe_dump(config))


def redeploy(
    workspace: Path, hosts: list[DeployHost], *extra: str
) -> subprocess.CompletedProcess[str]:
    """`cxml redeploy --env production`: everything else from deploy.yaml and the environment."""
    return subprocess.run(
        [PYTHON, "-m", "cxml.redeploy", "--env", "production", "--no-alias", *extra],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=600,
        env=client_env(hosts),
    )


def versions(hosts: list[DeployHost]) -> list[str]:
    return [served_version(host.proxy) for host in hosts]


def currents(hosts: list[DeployHost]) -> list[object]:
    return [host_state(host.root)["current"] for host in hosts]


def test_an_environment_never_ends_on_two_releases(tmp_path: Path, hosts: list[DeployHost]) -> None:
    first = write_workspace(tmp_path / "v1", "1")
    write_deploy_yaml(first, hosts)
    assert_ok(redeploy(first, hosts))
    assert versions(hosts) == ["1", "1"]
    r1 = currents(hosts)
    assert r1[0] == r1[1]

    status = redeploy(first, hosts, "--status")
    assert_ok(status)
    for host in hosts:
        assert f"{host.label}: release {r1[0]} (serving)" in status.stdout

    # release 2 fails its health check on host 2 only: host 1, already switched, goes back
    second = write_workspace(tmp_path / "v2", "2")
    write_deploy_yaml(second, hosts, serve_args=["--no-such-option"])
    failed = redeploy(second, hosts)
    assert failed.returncode == 3, failed.stderr
    error_lines = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, failed.stderr
    assert hosts[1].label in error_lines[0] and f"rolled back {hosts[0].label}" in error_lines[0]
    assert "host: error:" not in failed.stderr  # the host's error is printed once
    assert versions(hosts) == ["1", "1"] and currents(hosts) == r1

    write_deploy_yaml(second, hosts)
    assert_ok(redeploy(second, hosts))
    assert versions(hosts) == ["2", "2"]

    rolled_back = redeploy(second, hosts, "--rollback")
    assert_ok(rolled_back)
    assert versions(hosts) == ["1", "1"] and currents(hosts) == r1


def test_a_config_without_a_proxy_is_refused_before_upload(
    tmp_path: Path, hosts: list[DeployHost]
) -> None:
    workspace = write_workspace(tmp_path / "v1", "1")
    entry = hosts[0].entry()
    del entry["proxy"]
    config = {"serve": {"mode": "process", "remote_python": PYTHON}, "environments": {
        "production": {"hosts": [entry]}}}  # fmt: skip
    (workspace / "deploy.yaml").write_text(yaml.safe_dump(config))
    result = redeploy(workspace, hosts)
    assert result.returncode == 2
    assert "a deploy must switch a proxy; set serve.proxy.upstream_file" in result.stderr

    # flag mode: no --proxy-config is refused too, naming the flag and deploy.yaml's key
    env = deploy_env()
    env["CXML_KNOWN_HOSTS"] = hosts[0].ssh.known_hosts
    flags = subprocess.run(
        [PYTHON, "-m", "cxml.redeploy", "--host", "127.0.0.1", "--port", str(hosts[0].ssh.port),
         "--user", "root", "--ssh-key-file", str(hosts[0].ssh.key_file), "--root",
         str(hosts[0].root), "--mode", "process", "--remote-python", PYTHON, "--no-alias"],
        cwd=workspace, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert flags.returncode == 2, flags.stderr
    assert "--proxy-config" in flags.stderr and "serve.proxy.upstream_file" in flags.stderr
    assert not any((hosts[0].root / "incoming").glob("*"))
    assert not (hosts[0].root / "state.json").exists()
    assert json.dumps(flags.stderr)  # one printable line


def test_no_op_rollback_and_roll_forward_under_load_drop_no_request(
    tmp_path: Path, hosts: list[DeployHost]
) -> None:
    first = write_workspace(tmp_path / "v1", "1")
    second = write_workspace(tmp_path / "v2", "2")
    write_deploy_yaml(first, hosts)
    write_deploy_yaml(second, hosts)
    assert_ok(redeploy(first, hosts))
    assert versions(hosts) == ["1", "1"]
    r1 = currents(hosts)

    loops = [RequestLoop(host.proxy.url, interval_s=0.05) for host in hosts]
    for loop in loops:
        loop.start()
    try:
        assert_ok(redeploy(second, hosts))
        assert versions(hosts) == ["2", "2"]
        r2 = currents(hosts)
        assert r2[0] == r2[1] and r2 != r1

        again = redeploy(second, hosts)
        assert_ok(again)
        output = again.stdout + again.stderr
        assert "already serving" in output and "nothing to do" in output, output
        assert currents(hosts) == r2

        assert_ok(redeploy(second, hosts, "--rollback"))
        assert versions(hosts) == ["1", "1"] and currents(hosts) == r1

        forward = redeploy(second, hosts)
        assert_ok(forward)
        assert "no upload needed" in forward.stdout and "upload the bundle" not in forward.stdout
        assert versions(hosts) == ["2", "2"] and currents(hosts) == r2
        time.sleep(0.5)
    finally:
        for loop in loops:
            loop.stop()
    for loop in loops:
        assert loop.failures == []
        assert loop.ok > 10
    assert all(set(loop.versions) == {"1", "2"} for loop in loops)

    status = redeploy(second, hosts, "--status")
    assert_ok(status)
    for host in hosts:
        assert f"{host.label}: release {r2[0]} (serving)" in status.stdout, status.stdout

"""`cxml redeploy` end to end: a real sshd, a real nginx and real `cxml serve` processes on 127.0.0.1."""

from __future__ import annotations

import fcntl
import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.deploy import (
    PYTHON,
    NginxProxy,
    RequestLoop,
    SshServer,
    assert_ok,
    deploy_env,
    deploy_root,
    host_state,
    nginx_proxy,
    served_version,
    ssh_server,
    write_workspace,
)

__all__ = ["deploy_root", "nginx_proxy", "ssh_server"]  # fixtures used by name below

pytestmark = pytest.mark.slow


def redeploy(
    workspace: Path,
    server: SshServer,
    proxy: NginxProxy,
    root: Path,
    *extra: str,
    known_hosts: str | None = None,
    timeout_s: float = 240,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        redeploy_argv(server, proxy, root, *extra, known_hosts=known_hosts),
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=deploy_env(),
    )


def redeploy_argv(
    server: SshServer, proxy: NginxProxy, root: Path, *extra: str, known_hosts: str | None = None
) -> list[str]:
    return [
        PYTHON, "-m", "cxml.redeploy",
        "--host", server.host, "--port", str(server.port), "--user", server.user,
        "--ssh-key-file", str(server.key_file),
        "--known-hosts", known_hosts if known_hosts is not None else server.known_hosts,
        "--root", str(root), "--mode", "process", "--remote-python", PYTHON,
        "--proxy-config", str(proxy.upstream_config), "--proxy-reload", proxy.reload_command,
        "--public-url", proxy.url, "--health-timeout", "60", "--drain", "1", "--no-alias",
        *extra,
    ]  # fmt: skip


def test_swap_under_load_drops_no_request(
    tmp_path: Path, ssh_server: SshServer, nginx_proxy: NginxProxy, deploy_root: Path
) -> None:
    first = write_workspace(tmp_path / "v1", "1")
    assert_ok(redeploy(first, ssh_server, nginx_proxy, deploy_root))
    assert served_version(nginx_proxy) == "1"
    state = host_state(deploy_root)
    assert state["current"] and str(state["current"]).startswith("1-")

    loop = RequestLoop(nginx_proxy.url)
    loop.start()
    try:
        time.sleep(1.0)
        second = write_workspace(tmp_path / "v2", "2")
        result = redeploy(second, ssh_server, nginx_proxy, deploy_root)
        time.sleep(1.0)
    finally:
        loop.stop()
    assert_ok(result)
    assert loop.failures == []
    assert loop.ok > 50
    # While nginx's old worker drains, answers from 1 and 2 may interleave for a moment.
    assert loop.versions[0] == "1" and loop.versions[-1] == "2" and set(loop.versions) == {"1", "2"}
    assert served_version(nginx_proxy) == "2"
    state = host_state(deploy_root)
    assert str(state["current"]).startswith("2-") and str(state["previous"]).startswith("1-")
    assert (deploy_root / "current").resolve() == (
        deploy_root / "releases" / str(state["current"])
    ).resolve()
    assert "now serving release 2-" in result.stdout


def test_unhealthy_release_rolls_back(
    tmp_path: Path, ssh_server: SshServer, nginx_proxy: NginxProxy, deploy_root: Path
) -> None:
    assert_ok(redeploy(write_workspace(tmp_path / "v1", "1"), ssh_server, nginx_proxy, deploy_root))
    broken = write_workspace(tmp_path / "v2", "2")
    model = broken / "model" / "model.pt"
    # Weights for 5 classes under metadata that says 10: a valid file that cannot load.
    import torch

    payload = torch.load(model, weights_only=True)
    for key in list(payload["state_dict"])[-2:]:  # the classifier's weight and bias
        payload["state_dict"][key] = payload["state_dict"][key][:5]
    torch.save(payload, model)

    result = redeploy(broken, ssh_server, nginx_proxy, deploy_root)
    assert result.returncode == 3
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: release 2-"), result.stderr
    assert "failed its health check" in message and "rolled back, release 1-" in message
    assert served_version(nginx_proxy) == "1"
    assert str(host_state(deploy_root)["current"]).startswith("1-")


def test_slow_health_check_times_out_and_rolls_back(
    tmp_path: Path, ssh_server: SshServer, nginx_proxy: NginxProxy, deploy_root: Path
) -> None:
    assert_ok(redeploy(write_workspace(tmp_path / "v1", "1"), ssh_server, nginx_proxy, deploy_root))
    second = write_workspace(tmp_path / "v2", "2")
    # A serve option that keeps the service from ever answering on its port: --host of another address.
    result = redeploy(
        second,
        ssh_server,
        nginx_proxy,
        deploy_root,
        "--health-timeout",
        "3",
        "--serve-args",
        "--host 127.0.0.2",
    )
    assert result.returncode == 3
    assert "not healthy within 3 s" in result.stderr
    assert served_version(nginx_proxy) == "1"


def test_interrupted_upload_activates_nothing_and_next_deploy_succeeds(
    tmp_path: Path, ssh_server: SshServer, nginx_proxy: NginxProxy, deploy_root: Path
) -> None:
    assert_ok(redeploy(write_workspace(tmp_path / "v1", "1"), ssh_server, nginx_proxy, deploy_root))
    second = write_workspace(tmp_path / "v2", "2")
    process = subprocess.Popen(
        redeploy_argv(ssh_server, nginx_proxy, deploy_root, "--upload-limit-kbit", "400"),
        cwd=second,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=deploy_env(),
    )
    incoming = deploy_root / "incoming"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        partial = [p for p in incoming.glob("2-*/model.pt") if p.stat().st_size > 0]
        if partial:
            break
        time.sleep(0.05)
    else:
        process.kill()
        pytest.fail("the upload never started")
    ssh_server.drop_connections()
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 3, stdout + stderr
    assert "upload to" in stderr and "nothing was activated" in stderr
    assert not any(p.name.startswith("2-") for p in (deploy_root / "releases").iterdir())
    assert str(host_state(deploy_root)["current"]).startswith("1-")
    assert served_version(nginx_proxy) == "1"

    assert_ok(redeploy(second, ssh_server, nginx_proxy, deploy_root))
    assert served_version(nginx_proxy) == "2"


def test_wrong_host_key_is_refused_before_upload(
    tmp_path: Path, ssh_server: SshServer, nginx_proxy: NginxProxy, deploy_root: Path
) -> None:
    workspace = write_workspace(tmp_path / "v1", "1")
    result = redeploy(
        workspace, ssh_server, nginx_proxy, deploy_root, known_hosts=ssh_server.wrong_known_hosts
    )
    assert result.returncode == 2
    assert "host key of 127.0.0.1" in result.stderr and "does not match" in result.stderr
    assert not deploy_root.exists()
    assert "PRIVATE KEY" not in result.stdout + result.stderr


def test_failed_gate_is_refused(
    tmp_path: Path, ssh_server: SshServer, nginx_proxy: NginxProxy, deploy_root: Path
) -> None:
    workspace = write_workspace(tmp_path / "v1", "1", decision="fail")
    result = redeploy(workspace, ssh_server, nginx_proxy, deploy_root)
    assert result.returncode == 2
    assert "the gate failed" in result.stderr and "--force --reason" in result.stderr
    assert not deploy_root.exists()

    forced = redeploy(
        workspace,
        ssh_server,
        nginx_proxy,
        deploy_root,
        "--force",
        "--reason",
        "hotfix for incident 7",
    )
    assert_ok(forced)
    history = host_state(deploy_root)["history"]
    assert isinstance(history, list) and history[-1]["forced_reason"] == "hotfix for incident 7"
    record = json.loads((deploy_root / "current" / "release.json").read_text())
    assert record["forced_reason"] == "hotfix for incident 7" and record["gate_decision"] == "fail"


def test_concurrent_deploy_fails_clearly_while_lock_is_held(
    tmp_path: Path, ssh_server: SshServer, nginx_proxy: NginxProxy, deploy_root: Path
) -> None:
    assert_ok(redeploy(write_workspace(tmp_path / "v1", "1"), ssh_server, nginx_proxy, deploy_root))
    with (deploy_root / "deploy.lock").open("a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        handle.write("pid 4242 (deploy of another release, since now)\n")
        handle.flush()
        result = redeploy(
            write_workspace(tmp_path / "v2", "2"),
            ssh_server,
            nginx_proxy,
            deploy_root,
            "--lock-timeout",
            "1",
        )
    assert result.returncode == 3  # a runtime failure on the host, not bad input
    assert "another deploy is running" in result.stderr and "pid 4242" in result.stderr
    assert served_version(nginx_proxy) == "1"


def test_concurrent_deploys_take_turns(
    tmp_path: Path, ssh_server: SshServer, nginx_proxy: NginxProxy, deploy_root: Path
) -> None:
    assert_ok(redeploy(write_workspace(tmp_path / "v1", "1"), ssh_server, nginx_proxy, deploy_root))
    workspaces = [write_workspace(tmp_path / f"v{n}", str(n)) for n in (2, 3)]
    processes = [
        subprocess.Popen(
            redeploy_argv(ssh_server, nginx_proxy, deploy_root),
            cwd=ws,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=deploy_env(),
        )
        for ws in workspaces
    ]
    outputs = [p.communicate(timeout=240) for p in processes]
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stdout + stderr
    state = host_state(deploy_root)
    assert {str(state["current"])[:2], str(state["previous"])[:2]} == {"2-", "3-"}
    assert served_version(nginx_proxy) == str(state["current"])[0]


def test_rollback_command_and_release_pruning(
    tmp_path: Path, ssh_server: SshServer, nginx_proxy: NginxProxy, deploy_root: Path
) -> None:
    for version in ("1", "2", "3"):
        ws = write_workspace(tmp_path / f"v{version}", version)
        assert_ok(redeploy(ws, ssh_server, nginx_proxy, deploy_root, "--keep", "2"))
    releases = sorted(p.name[:2] for p in (deploy_root / "releases").iterdir())
    assert releases == ["2-", "3-"]
    assert served_version(nginx_proxy) == "3"

    result = redeploy(tmp_path, ssh_server, nginx_proxy, deploy_root, "--rollback", "--keep", "2")
    assert_ok(result)
    assert served_version(nginx_proxy) == "2"
    state = host_state(deploy_root)
    assert str(state["current"]).startswith("2-") and str(state["previous"]).startswith("3-")


def test_cxml_run_then_redeploy_serves_the_model_and_moves_champion(
    tmp_path: Path, ssh_server: SshServer, nginx_proxy: NginxProxy, deploy_root: Path
) -> None:
    """The issue's "done when": `cxml run`, then `cxml redeploy` against the test sshd, then /predict works."""
    workspace = tmp_path / "repo"
    workspace.mkdir()
    (workspace / "params.yaml").write_text(
        "train: {epochs: 4}\nevaluate: {gate: ['accuracy >= 0.5']}\n"
    )
    run = subprocess.run(
        [PYTHON, "-m", "cxml.cli", "run"],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=300,
        env=deploy_env(),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    run_info = json.loads((workspace / "run.json").read_text())
    assert run_info["model_version"] == "1"

    argv = [a for a in redeploy_argv(ssh_server, nginx_proxy, deploy_root) if a != "--no-alias"]
    result = subprocess.run(
        [PYTHON, "-m", "cxml.cli", "redeploy", *argv[3:]],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=240,
        env=deploy_env(),
    )
    assert_ok(result)
    assert "registry alias champion -> cxml-model version 1" in result.stdout

    from sklearn.datasets import load_digits

    from cxml.tracking import registry as tracking
    from tests.support.deploy import png_bytes_of

    digits = load_digits()
    images = [png_bytes_of(digits.images[i] * 16) for i in range(20)]
    files = [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    response = httpx.post(f"{nginx_proxy.url}/predict", files=files, timeout=30)
    assert response.status_code == 200, response.text
    predicted = [int(p["class"]) for p in response.json()["predictions"]]
    correct = sum(int(p == t) for p, t in zip(predicted, digits.target[:20], strict=True))
    assert correct >= 15
    version = tracking.alias_version(run_info["tracking_uri"], "cxml-model", "champion")
    assert version is not None and str(version.version) == "1"


def test_a_failed_proxy_reload_rolls_back(
    tmp_path: Path, ssh_server: SshServer, nginx_proxy: NginxProxy, deploy_root: Path
) -> None:
    assert_ok(redeploy(write_workspace(tmp_path / "v1", "1"), ssh_server, nginx_proxy, deploy_root))
    upstream_before = nginx_proxy.upstream_config.read_text()
    workspace = write_workspace(tmp_path / "v2", "2")
    argv = redeploy_argv(ssh_server, nginx_proxy, deploy_root)
    argv[argv.index("--proxy-reload") + 1] = "false"
    result = subprocess.run(
        argv, cwd=workspace, capture_output=True, text=True, timeout=240, env=deploy_env()
    )
    assert result.returncode == 3  # a runtime failure on the host, not bad input
    assert (
        "proxy reload `false` failed" in result.stderr
        and "rolled back, release 1-" in result.stderr
    )
    assert nginx_proxy.upstream_config.read_text() == upstream_before
    assert served_version(nginx_proxy) == "1"
    assert str(host_state(deploy_root)["current"]).startswith("1-")


def test_a_proxy_config_that_nginx_rejects_rolls_back_before_the_old_release_stops(
    tmp_path: Path, ssh_server: SshServer, nginx_proxy: NginxProxy, deploy_root: Path
) -> None:
    assert_ok(redeploy(write_workspace(tmp_path / "v1", "1"), ssh_server, nginx_proxy, deploy_root))
    upstream_before = nginx_proxy.upstream_config.read_text()
    # Someone breaks nginx.conf on the host between deploys with a log in a missing directory: the
    # `nginx -s reload` signaller only parses the config and exits 0, the master then fails to open
    # the log and keeps the old config (the old port), so only `nginx -t` notices.
    config = nginx_proxy.config.read_text()
    broken = config.replace("access_log off;", "access_log /nonexistent-cxml-dir/access.log;")
    assert broken != config
    nginx_proxy.config.write_text(broken)
    argv = redeploy_argv(ssh_server, nginx_proxy, deploy_root)
    result = subprocess.run(
        argv,
        cwd=write_workspace(tmp_path / "v2", "2"),
        capture_output=True,
        text=True,
        timeout=240,
        env=deploy_env(),
    )
    assert result.returncode == 3, result.stdout + result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "the proxy rejected its config" in message and "-t` failed" in message, message
    assert '"/nonexistent-cxml-dir/access.log" failed' in message
    assert "rolled back, release 1-" in message
    assert nginx_proxy.upstream_config.read_text() == upstream_before
    assert served_version(nginx_proxy) == "1"
    state = host_state(deploy_root)
    assert str(state["current"]).startswith("1-")
    history = state["history"]
    assert isinstance(history, list) and history[-1]["result"] == "rolled back"


def test_a_dash_version_and_dash_serve_args_survive_the_trip_through_ssh(
    tmp_path: Path, ssh_server: SshServer, nginx_proxy: NginxProxy, deploy_root: Path
) -> None:
    from tests.support.deploy import png_bytes

    workspace = write_workspace(tmp_path / "v1", "1")
    result = redeploy(
        workspace,
        ssh_server,
        nginx_proxy,
        deploy_root,
        "--version=-rc.1",
        "--serve-args=--no-resize --max-batch=1",
    )
    assert_ok(result)
    assert served_version(nginx_proxy) == "-rc.1"
    assert str(host_state(deploy_root)["current"]).startswith("-rc.1-")
    assert (deploy_root / "current").resolve().parent == (deploy_root / "releases").resolve()

    def predict(*images: bytes) -> int:
        files = [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
        return httpx.post(f"{nginx_proxy.url}/predict", files=files, timeout=30).status_code

    assert predict(png_bytes()) == 200
    assert predict(png_bytes(size=(16, 16))) == 422  # --no-resize reached `cxml serve`
    assert predict(png_bytes(), png_bytes()) == 413  # and so did --max-batch=1


# --- idempotent releases and a cancel-safe host (issue 12) -----------------------------------


def host_status(server: SshServer, root: Path, tmp_path: Path) -> dict[str, object]:
    """`status` run on the host over SSH, as the client's --status does."""
    known_hosts = tmp_path / "status_known_hosts"
    known_hosts.write_text(server.known_hosts)
    result = subprocess.run(
        [
            "ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-i", str(server.key_file),
            "-p", str(server.port), f"{server.user}@{server.host}", "--",
            f"{PYTHON} -m cxml.deploy.host status --root {root}",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert_ok(result)
    status: dict[str, object] = json.loads(result.stdout)
    return status


def serve_sessions(root: Path) -> set[int]:
    """Sessions of the `cxml serve` processes serving a release under `root`."""
    from cxml.deploy.host.services import serve_processes
    from cxml.deploy.host.settings import HostSettings

    return set(serve_processes(HostSettings(root=root)))


def test_redeploy_is_a_no_op_and_roll_forward_after_rollback_works(
    tmp_path: Path, ssh_server: SshServer, nginx_proxy: NginxProxy, deploy_root: Path
) -> None:
    first = write_workspace(tmp_path / "v1", "1")
    assert_ok(redeploy(first, ssh_server, nginx_proxy, deploy_root))
    service_before = json.loads(next((deploy_root / "services").glob("1-*.json")).read_text())

    again = redeploy(first, ssh_server, nginx_proxy, deploy_root)  # built again: another time
    assert_ok(again)
    assert "already serving" in again.stdout and "nothing to do" in again.stderr
    service_after = json.loads(next((deploy_root / "services").glob("1-*.json")).read_text())
    assert service_after["pid"] == service_before["pid"]  # the same process, not restarted

    second = write_workspace(tmp_path / "v2", "2")
    assert_ok(redeploy(second, ssh_server, nginx_proxy, deploy_root))
    assert_ok(redeploy(tmp_path, ssh_server, nginx_proxy, deploy_root, "--rollback"))
    assert served_version(nginx_proxy) == "1"

    forward = redeploy(second, ssh_server, nginx_proxy, deploy_root)
    assert_ok(forward)
    assert "no upload needed" in forward.stdout and "upload the bundle" not in forward.stdout
    assert "already installed; verified it again, reusing it" in forward.stderr
    assert served_version(nginx_proxy) == "2"
    state = host_state(deploy_root)
    assert str(state["current"]).startswith("2-") and str(state["previous"]).startswith("1-")
    status = host_status(ssh_server, deploy_root, tmp_path)
    assert status["orphans"] == []
    services = status["services"]
    assert isinstance(services, list) and [s["release"] for s in services] == [state["current"]]


def test_a_retry_after_a_failed_activation_reuses_the_upload_and_failures_take_no_keep_slot(
    tmp_path: Path, ssh_server: SshServer, nginx_proxy: NginxProxy, deploy_root: Path
) -> None:
    assert_ok(redeploy(write_workspace(tmp_path / "v1", "1"), ssh_server, nginx_proxy, deploy_root))
    second = write_workspace(tmp_path / "v2", "2")
    # serve arguments are the host's, not the release's: the retry is the same release
    unreachable = ("--health-timeout", "3", "--serve-args", "--host 127.0.0.2")
    failed = redeploy(second, ssh_server, nginx_proxy, deploy_root, *unreachable)
    assert failed.returncode == 3 and "rolled back, release 1-" in failed.stderr
    state = host_state(deploy_root)
    assert not any(str(r).startswith("2-") for r in state["releases"])  # type: ignore[attr-defined]

    retry = redeploy(second, ssh_server, nginx_proxy, deploy_root, "--keep", "2")
    assert_ok(retry)
    assert "no upload needed" in retry.stdout and "upload the bundle" not in retry.stdout
    assert "already installed; verified it again, reusing it" in retry.stderr
    assert served_version(nginx_proxy) == "2"

    third = write_workspace(tmp_path / "v3", "3")
    failed = redeploy(third, ssh_server, nginx_proxy, deploy_root, *unreachable, "--keep", "2")
    assert failed.returncode == 3
    assert_ok(
        redeploy(write_workspace(tmp_path / "v4", "4"), ssh_server, nginx_proxy, deploy_root,
                 "--keep", "2")
    )  # fmt: skip
    # the two newest releases that served; the failed 3 neither kept nor counted
    assert sorted(p.name[:2] for p in (deploy_root / "releases").iterdir()) == ["2-", "4-"]
    assert host_state(deploy_root)["releases"] == [
        p.name for p in sorted((deploy_root / "releases").iterdir())
    ]


def test_cancelling_the_client_during_the_drain_leaves_no_orphan(
    tmp_path: Path, ssh_server: SshServer, nginx_proxy: NginxProxy, deploy_root: Path
) -> None:
    import os
    import signal

    assert_ok(redeploy(write_workspace(tmp_path / "v1", "1"), ssh_server, nginx_proxy, deploy_root))
    old_session = serve_sessions(deploy_root)
    assert len(old_session) == 1
    process = subprocess.Popen(
        redeploy_argv(ssh_server, nginx_proxy, deploy_root, "--drain", "4"),
        cwd=write_workspace(tmp_path / "v2", "2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=deploy_env(),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if str(host_state(deploy_root).get("current", "")).startswith("2-"):
                break  # switched: the host now drains release 1 before stopping it
            time.sleep(0.05)
        else:
            pytest.fail("the deploy of release 2 never switched")
        os.killpg(process.pid, signal.SIGKILL)  # Ctrl-C's harsher cousin: a cancelled CI job
    finally:
        process.wait(timeout=30)
    status = host_status(ssh_server, deploy_root, tmp_path)
    assert str(status["current"]).startswith("2-") and status["serving"] is True
    assert status["orphans"] == []
    services = status["services"]
    assert isinstance(services, list) and [s["release"] for s in services] == [status["current"]]
    sessions = serve_sessions(deploy_root)
    assert len(sessions) == 1 and not sessions & old_session  # release 1's service is gone
    assert served_version(nginx_proxy) == "2"
    assert not (deploy_root / "journal.json").exists()

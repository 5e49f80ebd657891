"""The deploy key given as material: held by a short-lived ssh-agent, never on disk, never left over.

Real OpenSSH throughout: the sshd fixture, ssh-agent, ssh-add, ssh and sftp; the redeploy runs as
a real process that is sent SIGTERM or SIGKILL in the middle of its upload.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cxml.core.errors import ConfigError
from cxml.deploy import keys, ssh
from tests.support.deploy import (
    PYTHON,
    SshServer,
    children_of,
    deploy_env,
    deploy_root,
    ssh_server,
    write_workspace,
)

__all__ = ["deploy_root", "ssh_server"]  # fixtures used by name below

UPLOAD_LIMIT_KBIT = "64"
"""Slow enough that the ~380 KB model takes most of a minute: time to interrupt it."""


def key_body(server: SshServer) -> str:
    """The secret part of the client key: a line of its base64 body that any copy would hold."""
    lines = server.key_file.read_text().splitlines()
    return max(lines[1:-1], key=len)


def files_holding(directory: Path, secret: str) -> list[Path]:
    found = []
    for path in directory.rglob("*"):
        with contextlib.suppress(OSError):
            if (
                path.is_file()
                and not path.is_symlink()
                and secret in path.read_text(errors="replace")
            ):
                found.append(path)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def wait_until_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


def processes_with(argument: str) -> list[int]:
    """The live processes with `argument` on their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and argument.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return [pid for pid in found if alive(pid)]


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


@pytest.fixture
def private_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short TMPDIR of the test's own, so every file a deploy writes there can be inspected."""
    return Path(tempfile.mkdtemp(prefix="k", dir=tmp_path_factory.getbasetemp()))


@contextlib.contextmanager
def agent_credentials(server: SshServer) -> Iterator[keys.SshCredentials]:
    with keys.credential_files(
        key_file=None,
        key_material=server.key_file.read_text().replace("\n", "\r\n") + "\r\n",
        known_hosts=server.known_hosts,
        known_hosts_file=None,
        accept_new_host_key=False,
    ) as creds:
        yield creds


def credential_args(*argv: str) -> argparse.Namespace:
    """The options as `cxml redeploy` and `cxml host setup` parse them."""
    parser = argparse.ArgumentParser()
    keys.add_credential_arguments(parser)
    return parser.parse_args(list(argv))


def target(server: SshServer, creds: keys.SshCredentials) -> ssh.SshTarget:
    return keys.ssh_target(creds, credential_args(), server.host, server.port, server.user)


def test_a_target_carries_the_credentials_and_the_host_key_choice() -> None:
    creds = keys.SshCredentials("/p/id_key.pub", "/p/known_hosts", identity_agent="/p/agent")
    strict = keys.ssh_target(creds, credential_args(), "serve.example", 2222, "deploy")
    assert strict == ssh.SshTarget(
        host="serve.example",
        port=2222,
        user="deploy",
        key_file="/p/id_key.pub",
        known_hosts_file="/p/known_hosts",
        identity_agent="/p/agent",
    )
    trusting = keys.ssh_target(creds, credential_args("--accept-new-host-key"), "h", 22, None)
    assert trusting.accept_new_host_key and trusting.destination == "h"


def test_a_dry_run_names_the_key_and_never_holds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(keys.CXML_SSH_KEY, raising=False)
    assert keys.dry_run_credentials(credential_args()) == keys.SshCredentials(
        None, "<known_hosts from input>"
    )
    monkeypatch.setenv(keys.CXML_SSH_KEY, "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n")
    from_env = keys.dry_run_credentials(credential_args())
    assert from_env.key_file == f"<key from ${keys.CXML_SSH_KEY}>"
    assert "secret" not in repr(from_env)
    given = keys.dry_run_credentials(credential_args("--ssh-key-file", "/keys/id"))
    assert given == keys.SshCredentials("/keys/id", "<known_hosts from input>")


def test_key_material_logs_in_through_an_agent_and_never_touches_disk(
    ssh_server: SshServer, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    with agent_credentials(ssh_server) as creds:
        assert creds.identity_agent is not None and creds.key_file is not None
        private_dir = Path(creds.identity_agent).parent
        assert private_dir.parent == private_tmp
        assert private_dir.name.startswith(f"cxml-ssh-{os.getpid()}-")
        assert private_dir.stat().st_mode & 0o077 == 0
        result = ssh.run_command(
            ssh.ssh_argv(target(ssh_server, creds), ["echo", "logged in"]), timeout_s=60
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "logged in"
        assert files_holding(private_tmp, key_body(ssh_server)) == []
        assert Path(creds.key_file).read_text().startswith("ssh-ed25519 ")  # the public half
        agents = processes_with(creds.identity_agent)
        assert [command_name(pid) for pid in agents] == ["ssh-agent"]
    assert not private_dir.exists()
    assert list(private_tmp.glob("cxml-ssh-*")) == []
    assert wait_until_gone(agents, 5) == []


@pytest.mark.parametrize(
    "material",
    [
        "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END OPENSSH PRIVATE KEY-----",
        "not a key at all, just a secret-looking sentence",
    ],
)
def test_material_ssh_add_cannot_load_is_a_config_error_that_does_not_echo_it(
    material: str, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    with (
        pytest.raises(ConfigError, match="not a private key OpenSSH can load") as error,
        keys.credential_files(
            key_file=None,
            key_material=material,
            known_hosts="h ssh-ed25519 AAAA",
            known_hosts_file=None,
            accept_new_host_key=False,
        ),
    ):
        pytest.fail("a key ssh-add rejects was accepted")
    assert "c2VjcmV0" not in str(error.value) and "secret-looking" not in str(error.value)
    assert list(private_tmp.iterdir()) == []


def test_stale_private_dirs_of_gone_processes_are_removed_and_live_ones_kept(
    private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    gone = subprocess.Popen(["true"])
    gone.wait(timeout=30)
    stale = private_tmp / f"cxml-ssh-{gone.pid}-abcdefgh"
    stale.mkdir()
    (stale / "id_key").write_text("left by a killed deploy of an older cxml")
    live = private_tmp / f"cxml-ssh-{os.getppid()}-abcdefgh"
    live.mkdir()
    unrelated = private_tmp / "cxml-ssh-notapid-x"
    unrelated.mkdir()
    with keys.credential_files(
        key_file="/some/key",
        key_material=None,
        known_hosts="h ssh-ed25519 AAAA",
        known_hosts_file=None,
        accept_new_host_key=False,
    ) as creds:
        assert creds.key_file == "/some/key" and creds.identity_agent is None
        assert not stale.exists()
        assert live.exists() and unrelated.exists()


# --- a deploy that is stopped in the middle of its upload ------------------------------------


def start_redeploy(
    workspace: Path, server: SshServer, root: Path, tmpdir: Path
) -> subprocess.Popen[str]:
    env = deploy_env()
    env["CXML_SSH_KEY"] = server.key_file.read_text()
    env["TMPDIR"] = str(tmpdir)
    argv = [
        PYTHON, "-m", "cxml.redeploy",
        "--host", server.host, "--port", str(server.port), "--user", server.user,
        "--known-hosts", server.known_hosts,
        "--root", str(root), "--mode", "process", "--remote-python", PYTHON, "--no-alias",
        "--no-proxy", "--upload-limit-kbit", UPLOAD_LIMIT_KBIT,
    ]  # fmt: skip
    return subprocess.Popen(
        argv,
        cwd=workspace,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for_upload(process: subprocess.Popen[str], root: Path) -> list[int]:
    """Wait until model.pt is arriving on the host; returns the deploy's descendants then."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if any(p.stat().st_size > 0 for p in (root / "incoming").glob("*/model.pt")):
            descendants = children_of(process.pid)
            assert "sftp" in {command_name(pid) for pid in descendants}
            return descendants
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    stdout, stderr = process.communicate(timeout=30)
    pytest.fail(f"the upload never started:\n{stdout}\n{stderr}")


@pytest.mark.slow
def test_sigterm_during_the_upload_leaves_no_key_no_child_and_no_agent(
    tmp_path: Path, ssh_server: SshServer, deploy_root: Path, private_tmp: Path
) -> None:
    process = start_redeploy(
        write_workspace(tmp_path / "v1", "1"), ssh_server, deploy_root, private_tmp
    )
    try:
        descendants = wait_for_upload(process, deploy_root)
        assert files_holding(private_tmp, key_body(ssh_server)) == []
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    assert process.returncode == 130, stdout + stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert wait_until_gone(descendants, 5) == [], [command_name(p) for p in descendants]
    assert list(private_tmp.glob("cxml-ssh-*")) == []
    assert files_holding(private_tmp, key_body(ssh_server)) == []
    assert key_body(ssh_server) not in stdout + stderr


@pytest.mark.slow
def test_sigkill_during_the_upload_leaves_no_key_on_disk_and_the_next_run_clears_up(
    tmp_path: Path,
    ssh_server: SshServer,
    deploy_root: Path,
    private_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    process = start_redeploy(
        write_workspace(tmp_path / "v1", "1"), ssh_server, deploy_root, private_tmp
    )
    descendants: list[int] = []
    try:
        descendants = wait_for_upload(process, deploy_root)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        assert files_holding(private_tmp, key_body(ssh_server)) == []
        agents = [pid for pid in descendants if command_name(pid) == "ssh-agent"]
        assert agents, [command_name(p) for p in descendants]
        # OpenSSH's agent checks for its parent every 10 s: it forgets the key within that
        assert wait_until_gone(agents, 25) == []
    finally:
        for pid in descendants:  # the orphaned sftp would upload on for a minute
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert files_holding(private_tmp, key_body(ssh_server)) == []
    left = list(private_tmp.glob(f"cxml-ssh-{process.pid}-*"))
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    with agent_credentials(ssh_server):  # the next deploy
        assert not any(path.exists() for path in left)
    assert list(private_tmp.glob("cxml-ssh-*")) == []

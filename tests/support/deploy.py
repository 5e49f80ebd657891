"""Real services for deploy tests: an OpenSSH sshd and an nginx on loopback ports, model files, workspaces.

Import the fixtures explicitly into a test module (`from tests.support.deploy import ssh_server, ...`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def children_of(pid: int) -> list[int]:
    """Every descendant of `pid` (from /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in parents.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


# --- sshd ------------------------------------------------------------------------------------


@dataclass
class SshServer:
    host: str
    port: int
    user: str
    key_file: Path
    known_hosts: str
    """The `[127.0.0.1]:PORT ssh-ed25519 ...` line for this server's host key."""
    wrong_known_hosts: str
    """A well-formed line for the same host with another key."""
    process: subprocess.Popen[bytes]

    def drop_connections(self) -> None:
        """Kill every SSH session (not the listener), as a dropped network connection would."""
        for pid in children_of(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=60
    )
    return path.with_suffix(".pub").read_text().split()[1]


@pytest.fixture
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A real OpenSSH sshd on a free loopback port with its own host key, config and authorized key."""
    if os.geteuid() != 0:
        pytest.skip(
            "the sshd fixture logs in as root on 127.0.0.1; run the tests as root (CI does)"
        )
    workdir = tmp_path_factory.mktemp("sshd")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    host_key = workdir / "host_ed25519"
    other_key = workdir / "other_ed25519"
    client_key = workdir / "client_ed25519"
    host_public = _keygen(host_key)
    other_public = _keygen(other_key)
    _keygen(client_key)
    (workdir / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {workdir}/sshd.pid
AuthorizedKeysFile {workdir}/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
MaxStartups 100
MaxSessions 100
LogLevel ERROR
"""
    )
    with (workdir / "sshd.log").open("wb") as sshd_log:
        process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=sshd_log)
    try:
        wait_for_port(port)
        yield SshServer(
            host="127.0.0.1",
            port=port,
            user="root",
            key_file=client_key,
            known_hosts=f"[127.0.0.1]:{port} ssh-ed25519 {host_public}\n",
            wrong_known_hosts=f"[127.0.0.1]:{port} ssh-ed25519 {other_public}\n",
            process=process,
        )
    finally:
        stop_process(process)
        for pid in children_of(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --- nginx -----------------------------------------------------------------------------------


@dataclass
class NginxProxy:
    port: int
    prefix: Path
    config: Path
    upstream_config: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def reload_command(self) -> str:
        return f"{NGINX} -p {self.prefix} -c {self.config} -s reload"


@pytest.fixture
def nginx_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxProxy]:
    """A real nginx on a free loopback port proxying to the upstream file a deploy rewrites."""
    if os.geteuid() != 0:
        pytest.skip(
            "the nginx fixture runs nginx as root with its own prefix; run the tests as root"
        )
    prefix = tmp_path_factory.mktemp("nginx")
    (prefix / "logs").mkdir()
    (prefix / "temp").mkdir()
    upstream = prefix / "cxml-upstream.conf"
    upstream.write_text(
        "upstream cxml_serving {\n    server 127.0.0.1:9;\n}\n"
    )  # nothing deployed yet: 502
    port = free_port()
    config = prefix / "nginx.conf"
    config.write_text(
        f"""user root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/temp/body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    include {upstream};
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 16m;
        location / {{
            proxy_pass http://cxml_serving;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    )
    with (prefix / "nginx.out").open("wb") as nginx_out:
        process = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(config), "-g", "daemon off;"], stderr=nginx_out
        )
    try:
        wait_for_port(port)
        yield NginxProxy(
            port=port, prefix=prefix, config=config, upstream_config=upstream, process=process
        )
    finally:
        stop_process(process, signal.SIGQUIT)


# --- models and workspaces -------------------------------------------------------------------


def make_model_file(path: Path, seed: int = 0, *, git_commit: str | None = None) -> Path:
    """A small_cnn digits-sized model file with weights from `seed` (no training)."""
    import torch

    from cxml.ml import models
    from cxml.ml.models import ModelMetadata

    torch.manual_seed(seed)
    network = models.build_model("small_cnn", 10, 1)
    metadata = ModelMetadata(
        architecture="small_cnn",
        num_classes=10,
        class_names=tuple(str(i) for i in range(10)),
        input_size=(1, 8, 8),
        mean=(0.3,),
        std=(0.35,),
        cxml_version="0.1.0",
        git_commit=git_commit,
        created_at="2026-11-25T11:00:00Z",
    )
    models.save_model_file(path, network, metadata)
    return path


def write_workspace(
    directory: Path,
    version: str,
    *,
    seed: int | None = None,
    decision: str = "pass",
    model_name: str = "cxml-model",
) -> Path:
    """A repository-like directory after `cxml run`: model/model.pt, run.json, gate.json, metrics."""
    directory.mkdir(parents=True, exist_ok=True)
    make_model_file(directory / "model" / "model.pt", seed=int(version) if seed is None else seed)
    (directory / "run.json").write_text(
        json.dumps(
            {
                "run_id": f"run{version}",
                "model_name": model_name,
                "model_version": version,
                "tracking_uri": None,
            }
        )
    )
    rules = [{"rule": "accuracy >= 0.9", "metric": "accuracy", "value": 0.95 if decision == "pass" else 0.5,
              "result": decision}]  # fmt: skip
    (directory / "gate.json").write_text(
        json.dumps({"decision": decision, "metrics": {"accuracy": 0.95}, "rules": rules})
    )
    (directory / "metrics").mkdir(exist_ok=True)
    (directory / "metrics" / "eval.json").write_text(
        json.dumps({"accuracy": 0.95, "latency_p50_ms": 0.4})
    )
    return directory


def png_bytes(value: int = 128, size: tuple[int, int] = (8, 8)) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, "PNG")
    return buffer.getvalue()


# --- a steady client -------------------------------------------------------------------------


@dataclass
class RequestLoop:
    """POSTs /predict through the proxy at a steady pace on a thread; counts what failed."""

    url: str
    interval_s: float = 0.01
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    """The model version of every answer, in order (versions keeps only the changes)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        import httpx

        image = png_bytes()
        # One connection per request: nginx closes idle keep-alive connections when it reloads, and a
        # client racing that close sees a transport error that says nothing about the swap itself.
        with httpx.Client(timeout=10.0, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(
                        f"{self.url}/predict", files={"image": ("x.png", image, "image/png")}
                    )
                    if response.status_code == 200:
                        self.ok += 1
                        version = response.json()["model_version"]
                        self.answers.append(version)
                        if not self.versions or self.versions[-1] != version:
                            self.versions.append(version)
                    else:
                        self.failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                time.sleep(self.interval_s)


# --- the deploy root on the "host" -----------------------------------------------------------


@pytest.fixture
def deploy_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The host's deploy root; every service a deploy started there is stopped afterwards."""
    root = tmp_path_factory.mktemp("host") / "cxml"
    try:
        yield root
    finally:
        stop_services(root)


def stop_services(root: Path) -> None:
    for record in (root / "services").glob("*.json"):
        pid = json.loads(record.read_text()).get("pid")
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    for log in (root / "logs").glob("*.log"):
        # services of failed deploys have no record: find them by their bundle path
        release_dir = str(root / "releases" / log.stem)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if release_dir in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    os.kill(int(entry.name), signal.SIGKILL)


def png_bytes_of(pixels: object) -> bytes:
    """A greyscale PNG from a 2-D array of 0..255 values."""
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels).clip(0, 255).astype(np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()


def deploy_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "CXML_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


def served_version(proxy: NginxProxy) -> str:
    response = httpx.get(f"{proxy.url}/version", timeout=5)
    assert response.status_code == 200, response.text
    return str(response.json()["model_version"])


def host_state(root: Path) -> dict[str, object]:
    return dict(json.loads((root / "state.json").read_text()))


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"


# --- several "hosts": an sshd, an nginx and a deploy root each ------------------------------

PROCESS_SERVE: dict[str, object] = {
    "mode": "process",
    "remote_python": PYTHON,
    "ssh": {"user": "root"},
    "health_timeout": 60,
    "drain": 1,
}
"""deploy.yaml's `serve:` for `cxml serve` processes started over the test sshd."""


@dataclass
class DeployHost:
    """One serving "host": an sshd on its own loopback port, its own nginx and its own root."""

    ssh: SshServer
    proxy: NginxProxy
    root: Path

    @property
    def label(self) -> str:
        return f"root@127.0.0.1:{self.ssh.port}"

    def entry(self, **overrides: object) -> dict[str, object]:
        """This host in deploy.yaml: its own root and its own nginx."""
        return {
            "host": "127.0.0.1",
            "port": self.ssh.port,
            "root": str(self.root),
            "proxy": {
                "upstream_file": str(self.proxy.upstream_config),
                "reload": self.proxy.reload_command,
                "public_url": self.proxy.url,
            },
            **overrides,
        }


def start_ssh_servers(
    stack: contextlib.ExitStack, tmp_path_factory: pytest.TempPathFactory, count: int
) -> list[SshServer]:
    """`count` sshd that all accept one deploy key (the first one's client key)."""
    start = contextlib.contextmanager(ssh_server.__wrapped__)
    servers = [stack.enter_context(start(tmp_path_factory)) for _ in range(count)]
    first_key = servers[0].key_file.with_suffix(".pub").read_text()
    for server in servers[1:]:
        with (server.key_file.parent / "authorized_keys").open("a") as authorized:
            authorized.write(first_key)
    return servers


def start_deploy_host(
    stack: contextlib.ExitStack, tmp_path_factory: pytest.TempPathFactory, server: SshServer
) -> DeployHost:
    """A host reached through `server`: a fresh nginx and root, its services stopped on exit."""
    start = contextlib.contextmanager(nginx_proxy.__wrapped__)
    proxy = stack.enter_context(start(tmp_path_factory))
    root = tmp_path_factory.mktemp("host") / "cxml"
    stack.callback(stop_services, root)
    return DeployHost(server, proxy, root)


def start_deploy_hosts(
    stack: contextlib.ExitStack, tmp_path_factory: pytest.TempPathFactory, on_servers: Sequence[int]
) -> list[DeployHost]:
    """A host (fresh nginx and root) on each sshd numbered in `on_servers`; the sshd all accept
    one deploy key, and two hosts may share one sshd."""
    servers = start_ssh_servers(stack, tmp_path_factory, max(on_servers) + 1)
    return [start_deploy_host(stack, tmp_path_factory, servers[index]) for index in on_servers]


def client_env(hosts: Sequence[DeployHost]) -> dict[str, str]:
    """`deploy_env()` with the deploy key (the first host's sshd client key) and the host key of
    each sshd behind `hosts`, as a CI job passes them."""
    env = deploy_env()
    env["CXML_SSH_KEY"] = hosts[0].ssh.key_file.read_text()
    known_hosts = {host.ssh.port: host.ssh.known_hosts for host in hosts}
    env["CXML_KNOWN_HOSTS"] = "".join(known_hosts.values())
    return env

"""`cxml redeploy --mode docker` for real: podman behind a docker-compatible command, sshd and nginx.

No image registry is reachable, so the base image is made here: a Debian root filesystem from
debootstrap with Python and the serving dependencies (CPU torch from a local wheel), imported with
`podman import`. The host agent then builds the repository's real `Dockerfile` on top of it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.deploy import (
    PYTHON,
    NginxProxy,
    RequestLoop,
    SshServer,
    assert_ok,
    deploy_env,
    host_state,
    nginx_proxy,
    served_version,
    ssh_server,
    write_workspace,
)

__all__ = ["nginx_proxy", "ssh_server"]

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "localhost/cxml-test-base:latest"
SERVE_IMAGE = "localhost/cxml-serve:test"
PODMAN_TIMEOUT_S = 300.0
SETUP_TIMEOUT_S = 1200.0
"""debootstrap, pip and the base image import: minutes on a loaded machine, never unbounded."""
SERVING_PACKAGES = [
    "pip",
    "fastapi", "uvicorn", "uvloop", "httptools", "python-multipart", "pillow", "numpy", "pyyaml",
    "requests", "setuptools", "wheel",
]  # fmt: skip


@dataclass(frozen=True)
class Podman:
    workdir: Path
    command: str
    """The docker-compatible command line the deploy uses (podman with its config in env vars)."""

    def run(
        self, *args: str, check: bool = True, timeout_s: float = PODMAN_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*shlex.split(self.command), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout_s,
        )

    def remove_test_containers(self) -> None:
        """Remove the containers the deploys started; a podman that hangs is given up on."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            listed = self.run("ps", "-a", "--format", "{{.Names}}", check=False, timeout_s=60)
            for name in listed.stdout.split():
                if name.startswith("cxml-serve-"):
                    self.run("rm", "-f", "-t", "5", name, check=False, timeout_s=60)


def cpu_torch_wheel() -> str | None:
    """A CPU-only torch wheel on this machine (the CUDA build is too large for an image here)."""
    folders = ["/opt/wheels", *os.environ.get("PIP_FIND_LINKS", "").split()]
    for folder in folders:
        found = sorted(glob.glob(os.path.join(folder, "torch-*+cpu-cp311-*.whl")))
        if found:
            return found[-1]
    return None


def build_base_rootfs(rootfs: Path, torch_wheel: str) -> None:
    subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=python3", "bookworm", str(rootfs),
         "http://deb.debian.org/debian"],
        check=True, capture_output=True, timeout=SETUP_TIMEOUT_S,
    )  # fmt: skip
    (rootfs / "usr/bin/python").symlink_to("python3")
    target = rootfs / "usr/local/lib/python3.11/dist-packages"
    subprocess.run(
        [PYTHON, "-m", "pip", "install", "-q", "--no-compile", "--target", str(target), torch_wheel,
         *SERVING_PACKAGES],
        check=True, capture_output=True, timeout=SETUP_TIMEOUT_S,
    )  # fmt: skip


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    if os.geteuid() != 0:
        pytest.skip("podman here runs as root")
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not installed: apt-get install -y podman runc debootstrap"
        )
    wheel = cpu_torch_wheel()
    if wheel is None:
        pytest.skip(
            "no CPU torch wheel (torch-*+cpu-cp311-*.whl) in /opt/wheels or $PIP_FIND_LINKS"
        )
    workdir = Path(tempfile.mkdtemp(prefix="cxml-podman-"))
    (workdir / "containers.conf").write_text(
        '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
        '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
    )
    (workdir / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{workdir}/storage"\nrunroot = "{workdir}/run"\n'
    )
    command = (
        f"env CONTAINERS_CONF={workdir}/containers.conf "
        f"CONTAINERS_STORAGE_CONF={workdir}/storage.conf "
        "BUILDAH_FORMAT=docker podman"
    )
    engine = Podman(workdir, command)
    try:
        rootfs = workdir / "rootfs"
        build_base_rootfs(rootfs, wheel)
        tarball = workdir / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True,
                       capture_output=True, timeout=SETUP_TIMEOUT_S)  # fmt: skip
        shutil.rmtree(rootfs)
        engine.run("import", str(tarball), BASE_IMAGE, timeout_s=SETUP_TIMEOUT_S)
        tarball.unlink()
        yield engine
    finally:
        # Not `podman system reset`: it hung past pytest's limit on a loaded machine, and the
        # test's images and containers live in its own storage under workdir anyway.
        engine.remove_test_containers()
        shutil.rmtree(workdir, ignore_errors=True)


def build_context(directory: Path) -> Path:
    """What the Dockerfile copies, as a host would have it in its cxml checkout."""
    directory.mkdir(parents=True)
    for name in ("Dockerfile", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, directory / name)
    (directory / ".ci").mkdir()
    shutil.copy(REPO / ".ci" / "constraints.txt", directory / ".ci" / "constraints.txt")
    shutil.copytree(
        REPO / "src", directory / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    return directory


def test_docker_mode_builds_the_image_and_swaps_containers_without_dropping_requests(
    tmp_path: Path, podman: Podman, ssh_server: SshServer, nginx_proxy: NginxProxy
) -> None:
    # The containers' user (uid 10001) must reach the releases: a world-readable root, not pytest's 0700 tmp.
    root = Path(tempfile.mkdtemp(prefix="cxml-docker-host-")) / "cxml"
    root.parent.chmod(0o755)
    context = build_context(podman.workdir / "context")

    def deploy(workspace: Path) -> subprocess.CompletedProcess[str]:
        argv = [
            PYTHON, "-m", "cxml.redeploy",
            "--host", ssh_server.host, "--port", str(ssh_server.port), "--user", ssh_server.user,
            "--ssh-key-file", str(ssh_server.key_file), "--known-hosts", ssh_server.known_hosts,
            "--root", str(root), "--mode", "docker", "--remote-python", PYTHON,
            "--docker-command", podman.command, "--image", SERVE_IMAGE,
            "--docker-build-context", str(context),
            "--docker-build-arg", f"BASE_IMAGE={BASE_IMAGE}",
            "--docker-build-arg", "PIP_OPTIONS=--no-index --no-build-isolation --no-deps "
            "--break-system-packages",
            "--proxy-config", str(nginx_proxy.upstream_config), "--proxy-reload", nginx_proxy.reload_command,
            "--public-url", nginx_proxy.url, "--health-timeout", "180", "--drain", "1", "--no-alias",
        ]  # fmt: skip
        return subprocess.run(
            argv, cwd=workspace, capture_output=True, text=True, timeout=900, env=deploy_env()
        )

    try:
        assert_ok(deploy(write_workspace(tmp_path / "v1", "1")))
        assert served_version(nginx_proxy) == "1"
        inspect = podman.run("image", "inspect", "--format", "{{.Config.User}}", SERVE_IMAGE)
        assert inspect.stdout.strip() == "10001"  # the real Dockerfile's non-root user

        loop = RequestLoop(nginx_proxy.url)
        loop.start()
        try:
            time.sleep(1.0)
            result = deploy(write_workspace(tmp_path / "v2", "2"))
            time.sleep(1.0)
        finally:
            loop.stop()
        assert_ok(result)
        assert loop.failures == []
        assert loop.versions[0] == "1" and loop.versions[-1] == "2"
        assert served_version(nginx_proxy) == "2"
        state = host_state(root)
        assert str(state["current"]).startswith("2-")
        running = podman.run("ps", "--format", "{{.Names}}").stdout.split()
        assert [n for n in running if n.startswith("cxml-serve-")] == [
            n for n in running if n.startswith("cxml-serve-2-")
        ]
        assert len(running) == 1
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)

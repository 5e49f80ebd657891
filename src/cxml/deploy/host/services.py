"""The serving processes and containers of releases: start, check alive, stop, remember."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cxml.core import files
from cxml.core.errors import DeployError
from cxml.deploy.host.docker import ensure_image, run_docker
from cxml.deploy.host.progress import now_iso
from cxml.deploy.host.settings import HostSettings

CONTAINER_PORT = 8000


@dataclass(frozen=True)
class Service:
    """One running serving process or container of a release."""

    release: str
    mode: str
    port: int
    pid: int | None = None
    pid_start: str | None = None
    container: str | None = None
    image: str | None = None
    started_at: str = ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (guards against a reused pid); None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def service_alive(settings: HostSettings, service: Service) -> bool:
    if service.mode == "docker":
        result = run_docker(
            settings, ["inspect", "-f", "{{.State.Running}}", service.container or ""], check=False
        )
        return result.returncode == 0 and result.stdout.strip() == "true"
    if service.pid is None:
        return False
    return process_start_time(service.pid) == service.pid_start


def start_service(settings: HostSettings, release: str) -> Service:
    port = free_port()
    release_dir = settings.releases_dir / release
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    if settings.mode == "docker":
        image = ensure_image(settings)
        name = f"cxml-serve-{release}-{port}".replace("_", "-").lower()
        run_docker(settings, ["rm", "-f", name], check=False)
        try:
            run_docker(
                settings,
                [
                    "run", "-d", "--name", name,
                    "-p", f"127.0.0.1:{port}:{CONTAINER_PORT}",
                    "-v", f"{release_dir.resolve()}:/srv/release:ro",
                    image,
                    "--bundle", "/srv/release", "--host", "0.0.0.0", "--port", str(CONTAINER_PORT),
                    *settings.serve_args,
                ],
            )  # fmt: skip
        except DeployError:
            run_docker(settings, ["rm", "-f", name], check=False)  # created but not started
            raise
        return Service(
            release=release,
            mode="docker",
            port=port,
            container=name,
            image=image,
            started_at=now_iso(),
        )
    log_path = settings.logs_dir / f"{release}.log"
    argv = [
        sys.executable, "-m", "cxml.serve", "--bundle", str(release_dir),
        "--host", "127.0.0.1", "--port", str(port), *settings.serve_args,
    ]  # fmt: skip
    with log_path.open("ab") as log_handle:
        # A new session: the service outlives this SSH command and gets signals as a group.
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Service(
        release=release,
        mode="process",
        port=port,
        pid=process.pid,
        pid_start=process_start_time(process.pid),
        started_at=now_iso(),
    )


def stop_service(settings: HostSettings, service: Service, grace_s: float = 35.0) -> None:
    """SIGTERM (uvicorn finishes the requests in flight), then SIGKILL after `grace_s`."""
    if service.mode == "docker":
        run_docker(
            settings, ["stop", "-t", str(int(grace_s)), service.container or ""], check=False
        )
        run_docker(settings, ["rm", "-f", service.container or ""], check=False)
        return
    if service.pid is None or not service_alive(settings, service):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(service.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(service.pid, os.WNOHANG)
        if not service_alive(settings, service):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(service.pid, signal.SIGKILL)


def exit_reason(settings: HostSettings, service: Service) -> str | None:
    """Why a service that should run does not, with the last line of its log; None while it runs."""
    if service.mode == "process" and service.pid is not None:
        try:
            finished, status = os.waitpid(service.pid, os.WNOHANG)
        except (
            ChildProcessError
        ):  # not our child (started by an earlier deploy): look at /proc only
            finished, status = 0, 0
        if finished == 0 and service_alive(settings, service):
            return None
        code = os.waitstatus_to_exitcode(status) if finished else None
        tail = log_tail(settings.logs_dir / f"{service.release}.log")
        return f"the serving process exited (code {code}): {tail}"
    if service.mode == "docker" and not service_alive(settings, service):
        result = run_docker(settings, ["logs", "--tail", "5", service.container or ""], check=False)
        output = (result.stdout + result.stderr).strip().splitlines()
        return f"the serving container stopped: {output[-1] if output else 'no log output'}"
    return None


def log_tail(path: Path) -> str:
    try:
        lines = [
            line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()
        ]
    except OSError:
        return "no log"
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["no log output"])[-1]


def save_service(settings: HostSettings, service: Service) -> None:
    files.write_json(settings.services_dir / f"{service.release}.json", asdict(service))


def load_service(settings: HostSettings, release: str | None) -> Service | None:
    if release is None:
        return None
    path = settings.services_dir / f"{release}.json"
    if not path.exists():
        return None
    return Service(**files.read_json(path, what="service record"))


def forget_service(settings: HostSettings, release: str) -> None:
    (settings.services_dir / f"{release}.json").unlink(missing_ok=True)


def recorded_services(settings: HostSettings) -> list[Service]:
    """Every service record under services/, one per release that has a running service."""
    if not settings.services_dir.is_dir():
        return []
    found = []
    for path in sorted(settings.services_dir.glob("*.json")):
        service = load_service(settings, path.stem)
        if service is not None:
            found.append(service)
    return found


def serve_processes(settings: HostSettings) -> dict[int, str]:
    """`cxml serve` processes serving a release under this root: session id -> release.

    A service is started in its own session and its pre-forked workers share it, so the session
    (the service's pid) names the service whatever its worker count."""
    releases_prefix = f"{settings.releases_dir}/"
    sessions: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if "cxml.serve" not in words or "--bundle" not in words:
            continue
        bundle_index = words.index("--bundle") + 1
        bundle = words[bundle_index] if bundle_index < len(words) else ""
        if not bundle.startswith(releases_prefix):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] in ("Z", "X"):
            continue
        sessions[int(fields[3])] = bundle[len(releases_prefix) :].split("/")[0]
    return sessions


def serve_containers(settings: HostSettings) -> list[str]:
    """Names of the serving containers cxml started (running or not); none outside docker mode."""
    if settings.mode != "docker":
        return []
    result = run_docker(
        settings,
        ["ps", "-a", "--filter", "name=cxml-serve-", "--format", "{{.Names}}"],
        check=False,
    )
    if result.returncode != 0:
        return []
    return [name.strip() for name in result.stdout.splitlines() if name.strip()]


def orphans(settings: HostSettings) -> list[dict[str, object]]:
    """Serving processes and containers under this root that no service record owns."""
    records = recorded_services(settings)
    owned_pids = {s.pid for s in records if s.pid is not None}
    owned_containers = {s.container for s in records if s.container}
    found: list[dict[str, object]] = [
        {"release": release, "pid": session}
        for session, release in sorted(serve_processes(settings).items())
        if session not in owned_pids
    ]
    found += [
        {"container": name} for name in serve_containers(settings) if name not in owned_containers
    ]
    return found


def stop_orphan(settings: HostSettings, orphan: dict[str, object]) -> None:
    """Stop a serving process (its whole session) or container that no record owns."""
    pid, container = orphan.get("pid"), orphan.get("container")
    if isinstance(pid, int):
        stop_service(
            settings,
            Service(release=str(orphan.get("release")), mode="process", port=0, pid=pid,
                    pid_start=process_start_time(pid)),
        )  # fmt: skip
    elif isinstance(container, str):
        stop_service(settings, Service(release="", mode="docker", port=0, container=container))

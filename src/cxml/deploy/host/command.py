"""The serving host's side of a deploy, run over SSH: verify, install, start, switch, roll back.

`python -m cxml.deploy.host <prepare|activate|rollback|discard|status> --root ROOT ...` prints one
JSON object on stdout; progress goes to stderr, a failure is one `error:` line and a non-zero exit.
Layout under ROOT: releases/<release>/ (verified bundles), incoming/ (uploads not yet verified),
services/<release>.json (the running service of a release), logs/, state.json, deploy.lock and the
`current` / `previous` symlinks.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cxml.core import files
from cxml.core.console import run_entry_point
from cxml.core.errors import DeployError
from cxml.deploy import bundle

HISTORY_LENGTH = 50
STALE_UPLOAD_S = 3600.0
UPSTREAM_NAME = "cxml_serving"
CONTAINER_PORT = 8000


@dataclass(frozen=True)
class HostSettings:
    root: Path
    mode: Literal["process", "docker"] = "process"
    keep: int = 5
    health_timeout_s: float = 60.0
    lock_timeout_s: float = 300.0
    drain_s: float = 2.0
    public_url: str | None = None
    proxy_config: Path | None = None
    proxy_reload: tuple[str, ...] = ("nginx", "-s", "reload")
    proxy_check: tuple[str, ...] | None = None
    """Command that validates the proxy config before a reload; None: derived from proxy_reload."""
    docker: tuple[str, ...] = ("docker",)
    image: str = "cxml-serve:latest"
    docker_build_context: Path | None = None
    docker_build_args: tuple[str, ...] = ()
    serve_args: tuple[str, ...] = ()

    @property
    def releases_dir(self) -> Path:
        return self.root / "releases"

    @property
    def incoming_dir(self) -> Path:
        return self.root / "incoming"

    @property
    def services_dir(self) -> Path:
        return self.root / "services"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def lock_file(self) -> Path:
        return self.root / "deploy.lock"


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


@dataclass
class HostState:
    current: str | None = None
    previous: str | None = None
    releases: list[str] = field(default_factory=list)
    """Installed releases, oldest first (the order pruning keeps the newest of)."""
    history: list[dict[str, Any]] = field(default_factory=list)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- state, pure helpers -------------------------------------------------------------------


def read_state(settings: HostSettings) -> HostState:
    if not settings.state_file.exists():
        return HostState()
    data = files.read_json(settings.state_file, what="host state")
    return HostState(
        current=data.get("current"),
        previous=data.get("previous"),
        releases=list(data.get("releases", [])),
        history=list(data.get("history", [])),
    )


def write_state(settings: HostSettings, state: HostState) -> None:
    files.write_json(settings.state_file, asdict(state))
    for name, release in (("current", state.current), ("previous", state.previous)):
        link = settings.root / name
        temporary = settings.root / f".{name}.link"
        temporary.unlink(missing_ok=True)
        if release is None:
            link.unlink(missing_ok=True)
            continue
        temporary.symlink_to(Path("releases") / release)
        os.replace(temporary, link)


def record_event(state: HostState, action: str, release: str, result: str, **details: Any) -> None:
    event = {"at": now_iso(), "action": action, "release": release, "result": result}
    event.update({k: v for k, v in details.items() if v is not None})
    state.history = [*state.history, event][-HISTORY_LENGTH:]


def releases_to_prune(state: HostState, keep: int) -> list[str]:
    """The oldest installed releases beyond the newest `keep`; never the current or previous one."""
    protected = {state.current, state.previous}
    kept = state.releases[-keep:] if keep > 0 else []
    return [r for r in state.releases if r not in kept and r not in protected]


def after_switch(state: HostState, new_release: str) -> HostState:
    """State once `new_release` serves: the old current becomes previous."""
    previous = state.current if state.current != new_release else state.previous
    releases = [r for r in state.releases if r != new_release] + [new_release]
    return HostState(
        current=new_release, previous=previous, releases=releases, history=list(state.history)
    )


def upstream_config(port: int) -> str:
    return (
        "# Written by cxml deploy_host on every deploy: do not edit.\n"
        f"upstream {UPSTREAM_NAME} {{\n"
        f"    server 127.0.0.1:{port};\n"
        "    keepalive 16;\n"
        "}\n"
    )


# --- the lock ------------------------------------------------------------------------------


@contextlib.contextmanager
def deploy_lock(settings: HostSettings, purpose: str) -> Iterator[None]:
    """An flock on ROOT/deploy.lock: a second deploy waits lock_timeout_s, then fails clearly."""
    settings.root.mkdir(parents=True, exist_ok=True)
    with settings.lock_file.open("a+", encoding="utf-8") as handle:
        deadline = time.monotonic() + settings.lock_timeout_s
        announced = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another deploy"
                if time.monotonic() >= deadline:
                    raise DeployError(
                        f"{settings.lock_file} is held by {holder}; another deploy is "
                        "running on this host, "
                        "wait for it to finish and retry (or raise --lock-timeout)"
                    ) from None
                if not announced:
                    log(f"waiting for the deploy lock held by {holder}")
                    announced = True
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} ({purpose}, since {now_iso()})\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --- processes and containers ----------------------------------------------------------------


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


def run_docker(
    settings: HostSettings, args: Sequence[str], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    argv = [*settings.docker, *args]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise DeployError(
            f"{settings.docker[0]}: not found on the host; install Docker or set --docker-command"
        ) from None
    if check and result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        lines = lines or ["no output"]
        for line in lines[-15:-1]:
            log(f"  {line}")
        raise DeployError(f"`{shlex.join(argv[:4])} ...` failed on the host: {lines[-1]}")
    return result


def image_exists(settings: HostSettings, image: str) -> bool:
    return run_docker(settings, ["image", "inspect", image], check=False).returncode == 0


def ensure_image(settings: HostSettings) -> str:
    """The image to run: with a build context, one tagged by a hash of what goes into it, built
    when missing (so a changed package or Dockerfile never serves from a stale image)."""
    context = settings.docker_build_context
    if context is None:
        if image_exists(settings, settings.image):
            return settings.image
        raise DeployError(
            f"serving image {settings.image} not found on the host; build it there "
            f"(`docker build -t {settings.image} .` in the cxml checkout) or pass "
            "--docker-build-context"
        )
    image = content_tag(settings.image, build_digest(context, settings.docker_build_args))
    if image_exists(settings, image):
        return image
    log(f"building serving image {image} from {context} (new or changed build inputs)")
    build_args = [arg for value in settings.docker_build_args for arg in ("--build-arg", value)]
    tags = [image] if image == settings.image else [image, settings.image]
    tag_args = [arg for tag in tags for arg in ("-t", tag)]
    run_docker(settings, ["build", *tag_args, *build_args, str(context)])
    return image


def content_tag(image: str, digest: str) -> str:
    """`name:tag` -> `name:tag-<12 hex of digest>` (an image pinned by @digest is kept as it is)."""
    if "@" in image:
        return image
    slash = image.rfind("/")
    colon = image.rfind(":")
    name, tag = (image[:colon], image[colon + 1 :]) if colon > slash else (image, "latest")
    return f"{name}:{tag[:115]}-{digest[:12]}"


DOCKERFILE_NAME = "Dockerfile"
IGNORED_BUILD_PARTS = ("__pycache__", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache")


def dockerfile_sources(text: str) -> list[str]:
    """The build-context paths a Dockerfile's COPY and ADD instructions read."""
    joined = re.sub(r"\\\r?\n", " ", text)
    sources: list[str] = []
    for line in joined.splitlines():
        words = line.strip().split()
        if len(words) < 3 or words[0].upper() not in ("COPY", "ADD"):
            continue
        arguments = words[1:]
        if any(word.startswith("--from=") for word in arguments):
            continue  # copied from another stage or image, not from the context
        arguments = [word for word in arguments if not word.startswith("--")]
        if arguments and arguments[0].startswith("["):
            try:
                arguments = [str(item) for item in json.loads(" ".join(arguments))]
            except ValueError:
                continue
        sources += arguments[:-1]
    return sources


def build_digest(context: Path, build_args: Sequence[str]) -> str:
    """sha256 over the Dockerfile, every file its COPY/ADD instructions take from `context`, and
    the build arguments: the same digest means the same image."""
    digest = hashlib.sha256()
    dockerfile = context / DOCKERFILE_NAME
    try:
        text = dockerfile.read_text(encoding="utf-8")
    except OSError as exc:
        raise DeployError(
            f"{dockerfile}: cannot read it ({exc.strerror}); point --docker-build-context at a "
            "cxml checkout"
        ) from None
    digest.update(f"{DOCKERFILE_NAME}\0{text}\0".encode())
    for relative, path in build_files(context, dockerfile_sources(text)):
        digest.update(f"{relative}\0{bundle.sha256_file(path)}\0".encode())
    for build_arg in sorted(build_args):
        digest.update(f"--build-arg\0{build_arg}\0".encode())
    return digest.hexdigest()


def source_paths(context: Path, source: str) -> list[Path]:
    """What one COPY source names inside the context (`.` is all of it; globs are expanded)."""
    relative = source.strip().lstrip("/").rstrip("/")
    if relative in ("", "."):
        return [context]
    if ".." in Path(relative).parts:
        return []  # docker refuses sources outside the context
    if any(char in relative for char in "*?["):
        return sorted(context.glob(relative))
    path = context / relative
    return [path] if path.exists() else []


def build_files(context: Path, sources: Sequence[str]) -> list[tuple[str, Path]]:
    """(path relative to the context, file) for every file the sources name, sorted, no caches."""
    found: dict[str, Path] = {}
    for source in sources:
        for match in source_paths(context, source):
            candidates = [match] if match.is_file() else sorted(match.rglob("*"))
            for path in candidates:
                relative = path.relative_to(context)
                ignored = any(part in IGNORED_BUILD_PARTS for part in relative.parts)
                stale = path.suffix == ".pyc" or any(
                    part.endswith(".egg-info") for part in relative.parts
                )
                if path.is_file() and not ignored and not stale:
                    found[relative.as_posix()] = path
    return sorted(found.items())


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


# --- health and the proxy --------------------------------------------------------------------


def get_json(url: str, timeout_s: float = 2.0) -> tuple[int, dict[str, Any] | None]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def wait_until_serving(settings: HostSettings, service: Service) -> None:
    """Poll /healthz, then check /version names the release; raise with the cause otherwise."""
    base = f"http://127.0.0.1:{service.port}"
    deadline = time.monotonic() + settings.health_timeout_s
    last_problem = "no answer on /healthz"
    while time.monotonic() < deadline:
        reason = exit_reason(settings, service)
        if reason is not None:
            raise DeployError(f"release {service.release} failed its health check: {reason}")
        status, _ = get_json(f"{base}/healthz")
        if status == 200:
            _, version = get_json(f"{base}/version")
            served = (version or {}).get("release")
            if served == service.release:
                return
            raise DeployError(
                f"release {service.release} failed its health check: /version reports "
                f"release {served!r}"
            )
        last_problem = f"/healthz answered {status}" if status else "no answer on /healthz"
        time.sleep(0.2)
    raise DeployError(
        f"release {service.release} failed its health check: not healthy within "
        f"{settings.health_timeout_s:g} s ({last_problem})"
    )


def switch_proxy(settings: HostSettings, port: int) -> None:
    """Point the proxy's upstream at `port`, have the proxy validate its whole config, reload it.

    `nginx -s reload` exits 0 even when the master then rejects the new config and keeps the old
    one, so the config is tested first (`nginx -t` with the reload command's -c/-p); a rejected
    config puts the upstream file back as it was and nothing is reloaded.
    """
    if settings.proxy_config is None:
        return
    before = read_proxy_config(settings)
    files.write_text(settings.proxy_config, upstream_config(port))
    try:
        check_proxy_config(settings)
    except DeployError:
        write_proxy_config(settings, before)
        raise
    run_proxy_command(settings.proxy_reload, "proxy reload")


def proxy_check_command(settings: HostSettings) -> tuple[str, ...] | None:
    """The configured check, or `<reload command without -s reload> -t` for an nginx reload."""
    if settings.proxy_check is not None:
        return settings.proxy_check or None
    reload = settings.proxy_reload
    for index in range(len(reload) - 1):
        if reload[index] == "-s" and reload[index + 1] == "reload":
            return (*reload[:index], *reload[index + 2 :], "-t")
    return None


def check_proxy_config(settings: HostSettings) -> None:
    command = proxy_check_command(settings)
    if command is not None:
        run_proxy_command(command, "proxy config check", rejected=True)


def run_proxy_command(argv: Sequence[str], what: str, *, rejected: bool = False) -> None:
    try:
        result = subprocess.run(
            list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise DeployError(
            f"{what} `{shlex.join(argv)}`: {argv[0]} not found on the host; set --proxy-reload "
            "(and --proxy-check) to commands that exist there"
        ) from None
    if result.returncode == 0:
        return
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()] or ["no output"]
    cause = next((line for line in lines if "[emerg]" in line), lines[-1])
    if rejected:
        raise DeployError(
            f"the proxy rejected its config: `{shlex.join(argv)}` failed: {cause}; fix the "
            "proxy config on the host, then deploy again"
        )
    raise DeployError(f"{what} `{shlex.join(argv)}` failed: {cause}")


def read_proxy_config(settings: HostSettings) -> str | None:
    if settings.proxy_config is None or not settings.proxy_config.exists():
        return None
    return settings.proxy_config.read_text(encoding="utf-8")


def write_proxy_config(settings: HostSettings, text: str | None) -> None:
    if settings.proxy_config is None:
        return
    if text is None:
        settings.proxy_config.unlink(missing_ok=True)
    else:
        files.write_text(settings.proxy_config, text)


def restore_proxy(settings: HostSettings, before: str | None) -> None:
    """Put the upstream file back as it was before this deploy and reload, if it was changed."""
    if settings.proxy_config is None or read_proxy_config(settings) == before:
        return
    with contextlib.suppress(DeployError, OSError):
        write_proxy_config(settings, before)
        check_proxy_config(settings)
        run_proxy_command(settings.proxy_reload, "proxy reload")


def wait_for_public(
    settings: HostSettings, release: str, timeout_s: float = 20.0, in_a_row: int = 10
) -> None:
    """Until the stable endpoint names the new release `in_a_row` times (old proxy workers gone)."""
    if settings.public_url is None:
        return
    url = settings.public_url.rstrip("/") + "/version"
    deadline = time.monotonic() + timeout_s
    served = None
    streak = 0
    while time.monotonic() < deadline:
        _, version = get_json(url)
        served = (version or {}).get("release")
        streak = streak + 1 if served == release else 0
        if streak >= in_a_row:
            return
        time.sleep(0.05)
    raise DeployError(
        f"the proxy at {settings.public_url} still serves {served!r}, not {release}, after "
        "the reload"
    )


# --- the commands ----------------------------------------------------------------------------


def prepare(settings: HostSettings) -> dict[str, Any]:
    """Make the layout, drop uploads abandoned long ago, report what is installed."""
    for directory in (
        settings.releases_dir,
        settings.incoming_dir,
        settings.services_dir,
        settings.logs_dir,
    ):
        directory.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - STALE_UPLOAD_S
    for upload in settings.incoming_dir.iterdir():
        if upload.stat().st_mtime < cutoff:
            shutil.rmtree(upload, ignore_errors=True)
    state = read_state(settings)
    return {
        "root": str(settings.root),
        "current": state.current,
        "previous": state.previous,
        "releases": state.releases,
    }


def install_upload(settings: HostSettings, release: str, staging: Path) -> None:
    """Check an upload's checksums, then rename it into releases/: a partial upload never is one."""
    target = settings.releases_dir / release
    staging = staging.resolve()
    if staging.parent != settings.incoming_dir.resolve():
        raise DeployError(f"{staging}: uploads must be under {settings.incoming_dir}")
    try:
        bundle.verify_bundle(staging)
        uploaded = bundle.load_bundle(staging, verify=False)
        if uploaded.info.release != release:
            raise DeployError(
                f"{staging}: holds release {uploaded.info.release}, not {release}; deploy again"
            )
    except DeployError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    make_world_readable(staging)
    if target.exists():
        same = bundle.same_bundle(staging, target)
        shutil.rmtree(staging, ignore_errors=True)
        if not same:
            raise DeployError(
                f"{target} exists with other contents; remove it on the host or deploy "
                "another version"
            )
        bundle.verify_bundle(target)
        return
    os.rename(staging, target)


def make_world_readable(directory: Path) -> None:
    """The serving container runs as a non-root user: it must be able to read the release."""
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)


def swap_to(
    settings: HostSettings, state: HostState, release: str, action: str, **details: Any
) -> dict[str, Any]:
    """Start `release`, check it, switch the proxy to it, stop the old one; roll back on failure."""
    old_service = load_service(settings, state.current)
    if old_service is not None and not service_alive(settings, old_service):
        old_service = None
    if state.current == release and old_service is not None:
        log(f"release {release} is already serving on port {old_service.port}")
        return {
            "release": release,
            "previous": state.previous,
            "port": old_service.port,
            "changed": False,
        }
    log(f"starting release {release} ({settings.mode} mode)")
    proxy_before = read_proxy_config(settings)
    new_service: Service | None = None
    try:
        new_service = start_service(settings, release)  # in here: a failed build or run rolls back
        wait_until_serving(settings, new_service)
        log(f"release {release} is healthy on port {new_service.port}; switching the proxy")
        switch_proxy(settings, new_service.port)
        wait_for_public(settings, release)
    except (DeployError, OSError) as exc:
        if new_service is not None:
            stop_service(settings, new_service, grace_s=5.0)
        restore_proxy(settings, proxy_before)
        still = (
            f"release {state.current} still serving"
            if old_service
            else "nothing was serving before"
        )
        record_event(state, action, release, "rolled back", reason=str(exc), **details)
        write_state(settings, state)
        raise DeployError(f"{exc}; rolled back, {still}") from None
    save_service(settings, new_service)
    new_state = after_switch(state, release)
    record_event(new_state, action, release, "ok", **details)
    write_state(settings, new_state)
    if old_service is not None and old_service.release != release:
        time.sleep(settings.drain_s)
        log(f"stopping release {old_service.release} (port {old_service.port})")
        stop_service(settings, old_service)
        forget_service(settings, old_service.release)
    prune(settings, new_state)
    return {
        "release": release,
        "previous": new_state.previous,
        "port": new_service.port,
        "changed": True,
    }


def prune(settings: HostSettings, state: HostState) -> None:
    doomed = releases_to_prune(state, settings.keep)
    if not doomed:
        return
    for release in doomed:
        log(f"removing old release {release}")
        shutil.rmtree(settings.releases_dir / release, ignore_errors=True)
        forget_service(settings, release)
    state.releases = [r for r in state.releases if r not in doomed]
    write_state(settings, state)


def activate(
    settings: HostSettings, release: str, staging: Path | None, forced_reason: str | None
) -> dict[str, Any]:
    with deploy_lock(settings, f"deploy of {release}"):
        prepare(settings)
        if staging is not None:
            install_upload(settings, release, staging)
        if not (settings.releases_dir / release).is_dir():
            raise DeployError(f"release {release} is not installed on the host; deploy it first")
        state = read_state(settings)
        if release not in state.releases:
            state.releases.append(release)
        result = swap_to(settings, state, release, "deploy", forced_reason=forced_reason)
        result["record"] = bundle.load_bundle(
            settings.releases_dir / release, verify=False
        ).info.to_dict()
        return result


def rollback(settings: HostSettings) -> dict[str, Any]:
    with deploy_lock(settings, "rollback"):
        state = read_state(settings)
        target = state.previous
        if target is None:
            raise DeployError("no previous release recorded on the host; nothing to roll back to")
        if not (settings.releases_dir / target).is_dir():
            raise DeployError(
                f"previous release {target} was removed from the host; deploy it again instead"
            )
        result = swap_to(settings, state, target, "rollback")
        result["record"] = bundle.load_bundle(
            settings.releases_dir / target, verify=False
        ).info.to_dict()
        return result


def discard(settings: HostSettings, staging: Path) -> dict[str, Any]:
    staging = staging.resolve()
    if staging.parent == settings.incoming_dir.resolve():
        shutil.rmtree(staging, ignore_errors=True)
    return {"discarded": str(staging)}


def status(settings: HostSettings) -> dict[str, Any]:
    state = read_state(settings)
    service = load_service(settings, state.current)
    return {
        "current": state.current,
        "previous": state.previous,
        "releases": state.releases,
        "serving": bool(service and service_alive(settings, service)),
        "port": service.port if service else None,
        "history": state.history[-10:],
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cxml.deploy.host", description=__doc__)
    parser.add_argument("command", choices=["prepare", "activate", "rollback", "discard", "status"])
    parser.add_argument("--root", required=True, help="deploy root on this host")
    parser.add_argument("--release", help="release name (activate)")
    parser.add_argument(
        "--staging", help="uploaded directory under ROOT/incoming (activate, discard)"
    )
    parser.add_argument("--mode", choices=["process", "docker"], default="process")
    parser.add_argument("--keep", type=int, default=5)
    parser.add_argument("--health-timeout", type=float, default=60.0)
    parser.add_argument("--lock-timeout", type=float, default=300.0)
    parser.add_argument("--drain", type=float, default=2.0)
    parser.add_argument("--public-url")
    parser.add_argument("--proxy-config")
    parser.add_argument("--proxy-reload", default="nginx -s reload")
    parser.add_argument(
        "--proxy-check",
        default="auto",
        help="command that validates the proxy config before the reload; auto: the reload "
        "command with -t for -s reload (nginx); none: no check",
    )
    parser.add_argument("--docker-command", default="docker")
    parser.add_argument("--image", default="cxml-serve:latest")
    parser.add_argument("--docker-build-context")
    parser.add_argument(
        "--docker-build-arg", action="append", default=[], help="KEY=VALUE for the build"
    )
    parser.add_argument(
        "--serve-args", default="", help="extra `cxml serve` options, one shell-quoted string"
    )
    parser.add_argument("--forced-reason")
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> HostSettings:
    return HostSettings(
        root=Path(args.root),
        mode=args.mode,
        keep=max(args.keep, 1),
        health_timeout_s=args.health_timeout,
        lock_timeout_s=args.lock_timeout,
        drain_s=args.drain,
        public_url=args.public_url,
        proxy_config=Path(args.proxy_config) if args.proxy_config else None,
        proxy_reload=tuple(shlex.split(args.proxy_reload)),
        proxy_check=proxy_check_setting(args.proxy_check),
        docker=tuple(shlex.split(args.docker_command)),
        image=args.image,
        docker_build_context=Path(args.docker_build_context) if args.docker_build_context else None,
        docker_build_args=tuple(args.docker_build_arg),
        serve_args=tuple(shlex.split(args.serve_args)),
    )


def proxy_check_setting(value: str) -> tuple[str, ...] | None:
    """--proxy-check: "auto" -> None (derive it), "none" -> () (no check), else the command."""
    if value.strip() == "auto":
        return None
    if value.strip() == "none":
        return ()
    return tuple(shlex.split(value))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from_args(args)
    if args.command == "prepare":
        result = prepare(settings)
    elif args.command == "activate":
        if not args.release:
            raise DeployError("activate needs --release")
        staging = Path(args.staging) if args.staging else None
        result = activate(settings, args.release, staging, args.forced_reason)
    elif args.command == "rollback":
        result = rollback(settings)
    elif args.command == "discard":
        if not args.staging:
            raise DeployError("discard needs --staging")
        result = discard(settings, Path(args.staging))
    else:
        result = status(settings)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))

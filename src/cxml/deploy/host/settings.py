"""The serving host's settings: one type, its defaults once, and its way across SSH (argv).

The client builds the host command with `HostSettings.to_argv()`; the host parses it back with
the same `add_arguments` and `HostSettings.from_args`, so both sides share every default.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from cxml.core.errors import ConfigError

Mode = Literal["docker", "process"]
MODES: tuple[str, ...] = get_args(Mode)
DEFAULT_ROOT = "/srv/cxml"
PROXY_CHECK_AUTO = "auto"
PROXY_CHECK_NONE = "none"


@dataclass(frozen=True)
class HostSettings:
    root: Path = Path(DEFAULT_ROOT)
    mode: Mode = "docker"
    keep: int = 5
    health_timeout_s: float = 60.0
    lock_timeout_s: float = 300.0
    drain_s: float = 2.0
    public_url: str | None = None
    proxy_config: Path | None = None
    proxy_reload: tuple[str, ...] = ("nginx", "-s", "reload")
    proxy_check: tuple[str, ...] | None = None
    """Command that validates the proxy config before a reload; None: derived from proxy_reload,
    (): no check."""
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

    @property
    def journal_file(self) -> Path:
        return self.root / "journal.json"

    @property
    def runs_dir(self) -> Path:
        """Logs and results of the host's detached deploy workers."""
        return self.root / "runs"

    def to_argv(self) -> list[str]:
        """The options `from_args` reads back into these settings, every one spelled out (an older
        host may have other defaults); `--name=value`, so a value may start with `-`."""
        argv = [
            option("--root", str(self.root)),
            option("--mode", self.mode),
            option("--keep", str(self.keep)),
            option("--health-timeout", number_text(self.health_timeout_s)),
            option("--lock-timeout", number_text(self.lock_timeout_s)),
            option("--drain", number_text(self.drain_s)),
            option("--proxy-reload", shlex.join(self.proxy_reload)),
            option("--proxy-check", proxy_check_text(self.proxy_check)),
            option("--docker-command", shlex.join(self.docker)),
            option("--image", self.image),
        ]
        if self.public_url:
            argv.append(option("--public-url", self.public_url))
        if self.proxy_config is not None:
            argv.append(option("--proxy-config", str(self.proxy_config)))
        if self.docker_build_context is not None:
            argv.append(option("--docker-build-context", str(self.docker_build_context)))
        argv += [option("--docker-build-arg", build_arg) for build_arg in self.docker_build_args]
        if self.serve_args:
            argv.append(option("--serve-args", shlex.join(self.serve_args)))
        return argv

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> HostSettings:
        """The settings `add_arguments` parsed; a value that cannot work is a ConfigError."""
        if args.keep < 2:
            raise ConfigError("--keep: must be at least 2 (the current and the previous release)")
        if args.mode == "process" and args.docker_build_context:
            raise ConfigError("--docker-build-context: only used with --mode docker")
        return cls(
            root=Path(args.root),
            mode=args.mode,
            keep=args.keep,
            health_timeout_s=args.health_timeout,
            lock_timeout_s=args.lock_timeout,
            drain_s=args.drain,
            public_url=args.public_url or None,
            proxy_config=Path(args.proxy_config) if args.proxy_config else None,
            proxy_reload=split_command("--proxy-reload", args.proxy_reload),
            proxy_check=proxy_check_setting(args.proxy_check),
            docker=split_command("--docker-command", args.docker_command),
            image=args.image,
            docker_build_context=(
                Path(args.docker_build_context) if args.docker_build_context else None
            ),
            docker_build_args=tuple(args.docker_build_arg),
            serve_args=split_command("--serve-args", args.serve_args, allow_empty=True),
        )


DEFAULTS = HostSettings()


def add_arguments(
    parser: argparse.ArgumentParser, *, root_required: bool = False
) -> argparse._ArgumentGroup:
    """The host settings' options, with the defaults of `HostSettings`, in their own group."""
    group = parser.add_argument_group("serving host")
    if root_required:
        group.add_argument("--root", required=True, help="deploy root on this host")
    else:
        group.add_argument(
            "--root", default=DEFAULT_ROOT, help=f"deploy root on the host (default {DEFAULT_ROOT})"
        )
    group.add_argument(
        "--mode",
        choices=MODES,
        default=DEFAULTS.mode,
        help=f"run the service as a container or a `cxml serve` process (default {DEFAULTS.mode})",
    )
    group.add_argument(
        "--keep",
        type=int,
        default=DEFAULTS.keep,
        help=f"releases kept on the host (default {DEFAULTS.keep})",
    )
    group.add_argument(
        "--health-timeout",
        type=float,
        default=DEFAULTS.health_timeout_s,
        help=f"seconds to become healthy (default {DEFAULTS.health_timeout_s:g})",
    )
    group.add_argument(
        "--lock-timeout",
        type=float,
        default=DEFAULTS.lock_timeout_s,
        help=f"seconds to wait for another deploy (default {DEFAULTS.lock_timeout_s:g})",
    )
    group.add_argument(
        "--drain",
        type=float,
        default=DEFAULTS.drain_s,
        help="seconds between the switch and stopping the old service "
        f"(default {DEFAULTS.drain_s:g})",
    )
    group.add_argument(
        "--public-url",
        help="stable endpoint on the host, checked after the switch (e.g. http://127.0.0.1)",
    )
    group.add_argument(
        "--proxy-config", help="nginx upstream file the host rewrites (included by its nginx.conf)"
    )
    group.add_argument(
        "--proxy-reload",
        default=shlex.join(DEFAULTS.proxy_reload),
        help="command that reloads the proxy",
    )
    group.add_argument(
        "--proxy-check",
        default=PROXY_CHECK_AUTO,
        help="command that validates the proxy config before the reload (a rejected config rolls "
        "back); auto (default): the reload command with -t in place of -s reload, as `nginx -t`; "
        "none: no check",
    )
    group.add_argument(
        "--docker-command",
        default=shlex.join(DEFAULTS.docker),
        help="docker-compatible CLI on the host (e.g. podman)",
    )
    group.add_argument("--image", default=DEFAULTS.image, help="serving image on the host")
    group.add_argument(
        "--docker-build-context", help="directory on the host to build the image from if missing"
    )
    group.add_argument(
        "--docker-build-arg",
        action="append",
        default=[],
        help="KEY=VALUE passed to the image build (repeatable), e.g. BASE_IMAGE=...",
    )
    group.add_argument(
        "--serve-args", default="", help="extra `cxml serve` options for the service"
    )
    return group


def option(name: str, value: str) -> str:
    """`--name=value`: argparse reads a value starting with `-` as a value only in this form."""
    return f"{name}={value}"


def number_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def proxy_check_text(check: tuple[str, ...] | None) -> str:
    if check is None:
        return PROXY_CHECK_AUTO
    return shlex.join(check) if check else PROXY_CHECK_NONE


def proxy_check_setting(value: str) -> tuple[str, ...] | None:
    """--proxy-check: "auto" -> None (derive it), "none" -> () (no check), else the command."""
    if value.strip() == PROXY_CHECK_AUTO:
        return None
    if value.strip() == PROXY_CHECK_NONE:
        return ()
    return split_command("--proxy-check", value, allow_empty=True)


def split_command(flag: str, value: str, *, allow_empty: bool = False) -> tuple[str, ...]:
    try:
        words = tuple(shlex.split(value))
    except ValueError as exc:
        raise ConfigError(f"{flag} {value!r}: {exc}; quote it as a shell would") from None
    if not words and not allow_empty:
        raise ConfigError(f"{flag}: needs a command")
    return words

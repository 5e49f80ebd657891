"""The serving host's side of `cxml host setup`: the layout, the proxy files, the proxy checks.

`python -m cxml.deploy.host setup --root ROOT --proxy-config FILE --server-snippet FILE
--listen ADDRESS:PORT [--server-name NAME] ...` makes what a deploy needs and leaves alone what is
already right, so a second run changes nothing. It prints one JSON object: every item with what
was done to it (`created`, `changed`, `already there`, `checked`), and `changed`.

The upstream file is the deploy's (it rewrites it on every switch): setup writes a placeholder
only when the file is missing or empty, since nginx refuses a missing or empty include. The
server snippet is setup's own; it listens without `default_server`, under a `server_name`, so a
distribution's default site (`listen 80 default_server`) keeps its requests and cxml gets its own.
A config the proxy rejects puts both files back as they were.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxml.core import files
from cxml.core.errors import ConfigError, DeployError
from cxml.deploy.host.proxy import UPSTREAM_NAME, proxy_check_command, run_proxy_command
from cxml.deploy.host.settings import HostSettings

CREATED = "created"
CHANGED = "changed"
ALREADY_THERE = "already there"
CHECKED = "checked"

DIRECTORY_MODES: tuple[tuple[str, int], ...] = (
    ("releases", 0o755),  # verified bundles: a container's user reads them
    ("incoming", 0o700),  # uploads not yet verified: nobody else reads them
    ("services", 0o700),
    ("logs", 0o750),
)
ROOT_MODE = 0o755
PROXY_TIMEOUT_S = 60.0
PLACEHOLDER_PORT = 9
"""The discard port, marked `down`: until the first deploy, the proxy answers 502."""
_UPSTREAM_PATTERN = re.compile(rf"\bupstream\s+{UPSTREAM_NAME}\s*\{{")
# both end up in nginx's config: nothing but a name and a port, so no `;` or `}` gets in
_LISTEN_PATTERN = re.compile(r"(?:(?:[0-9.]+|\[[0-9A-Fa-f:.]+\]):)?[0-9]{1,5}")
_SERVER_NAME_PATTERN = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.:-]*[A-Za-z0-9_])?")
_NGINX_DUMP_FILE = re.compile(r"^# configuration file (.+):$", re.MULTILINE)


@dataclass(frozen=True)
class ServerBlock:
    """Where the proxy listens for the service: from the environment's public URL."""

    listen: str
    """`ADDRESS:PORT` or `PORT`."""
    server_name: str | None = None


@dataclass(frozen=True)
class Item:
    what: str
    path: str
    status: str

    def to_json(self) -> dict[str, str]:
        return {"what": self.what, "path": self.path, "status": self.status}


def add_setup_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("setup")
    group.add_argument("--server-snippet", help="nginx server block file setup owns (setup)")
    group.add_argument("--listen", help="ADDRESS:PORT or PORT the server block listens on (setup)")
    group.add_argument("--server-name", help="server_name of the server block (setup)")


def setup_from_args(args: argparse.Namespace, settings: HostSettings) -> dict[str, Any]:
    if not args.server_snippet or not args.listen:
        raise ConfigError("setup needs --server-snippet and --listen")
    if settings.proxy_config is None:
        raise ConfigError("setup needs --proxy-config (the nginx upstream file)")
    if not _LISTEN_PATTERN.fullmatch(args.listen):
        raise ConfigError(f"--listen {args.listen!r}: expected PORT, ADDRESS:PORT or [IPv6]:PORT")
    if args.server_name and not _SERVER_NAME_PATTERN.fullmatch(args.server_name):
        raise ConfigError(
            f"--server-name {args.server_name!r}: not a host name (letters, digits, '.', '-')"
        )
    block = ServerBlock(listen=args.listen, server_name=args.server_name or None)
    return setup_host(settings, Path(args.server_snippet), block)


def setup_host(settings: HostSettings, snippet: Path, block: ServerBlock) -> dict[str, Any]:
    """Make the layout and the proxy files, check the proxy takes them, reload it, check again."""
    assert settings.proxy_config is not None
    items = make_layout(settings.root)
    upstream = settings.proxy_config
    before = {path: read_optional(path) for path in (upstream, snippet)}
    items.append(ensure_upstream(upstream))
    items.append(ensure_file("server snippet", snippet, server_snippet(block)))
    try:
        items += check_proxy(settings, (upstream, snippet))
    except DeployError:
        restore(before)
        raise
    reload_proxy(settings)
    items.append(Item("proxy reload", shlex.join(settings.proxy_reload), CHECKED))
    items += check_proxy(settings, ())
    return {
        "root": str(settings.root),
        "items": [item.to_json() for item in items],
        "changed": any(item.status in (CREATED, CHANGED) for item in items),
    }


def reload_proxy(settings: HostSettings) -> None:
    try:
        run_proxy_command(settings.proxy_reload, "proxy reload")
    except DeployError as exc:
        raise DeployError(
            f"{exc}; the files are in place and the proxy accepts them, but every deploy "
            "reloads the proxy with this command: set proxy.reload in deploy.yaml to the "
            "command that reloads nginx here (e.g. `sudo nginx -s reload`), let the deploy user "
            "run it, and run setup again"
        ) from None


# --- the layout ---------------------------------------------------------------------------


def make_layout(root: Path) -> list[Item]:
    items = [ensure_directory(root, ROOT_MODE)]
    items += [ensure_directory(root / name, mode) for name, mode in DIRECTORY_MODES]
    return items


def ensure_directory(path: Path, mode: int) -> Item:
    what = f"directory ({mode:o})"
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise DeployError(
            f"{path}: exists and is not a directory; move it away and run setup again"
        )
    if not path.exists():
        try:
            path.mkdir(parents=True)
            path.chmod(mode)
        except OSError as exc:
            raise path_error(
                path,
                "cannot be created",
                exc,
                "give the deploy user write access to its parent, or choose another root",
            ) from None
        return Item(what, str(path), CREATED)
    if path.stat().st_mode & 0o7777 == mode:
        return Item(what, str(path), ALREADY_THERE)
    try:
        path.chmod(mode)
    except OSError as exc:
        raise path_error(
            path, f"mode cannot be set to {mode:o}", exc, "the deploy user must own it"
        ) from None
    return Item(what, str(path), CHANGED)


# --- the proxy files ------------------------------------------------------------------------


def placeholder_upstream() -> str:
    return (
        "# Written by `cxml host setup`: nothing is deployed yet. Each deploy rewrites this file.\n"
        f"upstream {UPSTREAM_NAME} {{\n"
        f"    server 127.0.0.1:{PLACEHOLDER_PORT} down;\n"
        "}\n"
    )


def server_snippet(block: ServerBlock) -> str:
    name = f"    server_name {block.server_name};\n" if block.server_name else ""
    return (
        "# Written by `cxml host setup`: the server block in front of the cxml service.\n"
        "# Include it inside nginx's http {} block, with the upstream file.\n"
        "server {\n"
        f"    listen {block.listen};\n"
        f"{name}"
        "    client_max_body_size 16m;\n"
        "    location / {\n"
        f"        proxy_pass http://{UPSTREAM_NAME};\n"
        "        proxy_http_version 1.1;\n"
        '        proxy_set_header Connection "";\n'
        "        proxy_set_header Host $host;\n"
        "    }\n"
        "}\n"
    )


def ensure_upstream(path: Path) -> Item:
    """A placeholder when missing or empty; a deploy's own upstream is never touched."""
    current = read_optional(path)
    if current is not None and current.strip():
        if not _UPSTREAM_PATTERN.search(current):
            raise DeployError(
                f"{path}: exists but defines no `upstream {UPSTREAM_NAME}`; it is not cxml's "
                "upstream file: move it away, or set proxy.upstream_file to another path"
            )
        return Item("upstream file", str(path), ALREADY_THERE)
    write_file(path, placeholder_upstream())
    return Item("upstream file (placeholder)", str(path), CREATED if current is None else CHANGED)


def ensure_file(what: str, path: Path, text: str) -> Item:
    current = read_optional(path)
    if current == text:
        return Item(what, str(path), ALREADY_THERE)
    write_file(path, text)
    return Item(what, str(path), CREATED if current is None else CHANGED)


def read_optional(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise path_error(
            path, "cannot be read", exc, "fix its permissions or choose another path"
        ) from None


def write_file(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_text(path, text)
    except OSError as exc:
        raise path_error(
            path, "cannot be written", exc, f"give the deploy user write access to {path.parent}"
        ) from None


def path_error(path: Path, problem: str, exc: Exception, fix: str) -> DeployError:
    """`PATH: PROBLEM (the system's reason); FIX` for a file or directory setup cannot handle."""
    reason = getattr(exc, "strerror", None) or exc
    return DeployError(f"{path}: {problem} ({reason}); {fix}")


def restore(before: dict[Path, str | None]) -> None:
    for path, text in before.items():
        if text is None:
            path.unlink(missing_ok=True)
        else:
            files.write_text(path, text)


# --- the proxy checks -----------------------------------------------------------------------


def check_proxy(settings: HostSettings, included: tuple[Path, ...]) -> list[Item]:
    """The proxy's config check; for nginx's own (`auto`), also that it includes `included`."""
    command = proxy_check_command(settings)
    if command is None:
        return []
    if included and settings.proxy_check is None and command[-1] == "-t":
        dump = run_nginx_dump((*command[:-1], "-T"))
        missing = [path for path in included if dump is not None and str(path) not in dump]
        if missing:
            raise DeployError(
                f"nginx does not include {missing[0]}: add `include {missing[0]};` inside the "
                "http {} block of nginx.conf (or put the files in a directory it includes, "
                "like /etc/nginx/conf.d/), then run setup again"
            )
    run_proxy_command(command, "proxy config check", rejected=True)
    return [Item("proxy config check", shlex.join(command), CHECKED)]


def run_nginx_dump(argv: tuple[str, ...]) -> set[str] | None:
    """The files `nginx -T` read; None when it cannot run (the plain check reports that)."""
    try:
        result = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=PROXY_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        run_proxy_command((*argv[:-1], "-t"), "proxy config check", rejected=True)
    return {match.strip() for match in _NGINX_DUMP_FILE.findall(result.stdout)}

"""deploy.yaml -> typed, frozen deploy settings, validated once with errors that name the key.

The file (at the repository root, like Kamal's `config/deploy.yml`) holds the serving settings
once (`serve:`) and the environments (`environments:`), each with its hosts and any overrides of
the serving settings written directly under the environment. docs/deploy-yaml.md documents it::

    DeployConfig(service, serve: ServeSettings, environments: {name: Environment}, source)
    Environment(name, hosts: (Host, ...), settings: ServeSettings)   # serve + its overrides
        .host_settings() -> HostSettings      # what the host side runs with (to_argv/from_args)
        .connection() -> Connection           # the client's side: ssh user/port, remote python

Secrets (the SSH key, known_hosts) never go in the file; they come from the environment
(`CXML_SSH_KEY`, `CXML_KNOWN_HOSTS`) or the action's inputs.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import shlex
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from cxml.core import env
from cxml.core.config import _describe, _yaml_loader
from cxml.core.errors import ConfigError
from cxml.deploy.host.settings import (
    DEFAULTS,
    MODES,
    PROXY_CHECK_AUTO,
    PROXY_CHECK_NONE,
    HostSettings,
    Mode,
)

DEFAULT_DEPLOY_FILE = "deploy.yaml"
DEFAULT_SERVICE = "cxml"
DEFAULT_REMOTE_PYTHON = ("python3",)
DEFAULT_SSH_PORT = 22
MAX_FILE_BYTES = 1024 * 1024
"""A deploy.yaml is a page or two; anything near this is not one."""
MAX_DEPTH = 16
"""The format nests four levels deep; far deeper YAML is refused before it is built."""

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,62}")
"""Environment names (`staging`, `production`, `eu-west`)."""
SERVICE_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
"""The service name, used in paths and labels on the host."""
HOSTNAME_PATTERN = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
"""A host name: letters, digits, `.`, `-`, `_`; never starts with `-` (ssh would read an option)."""
USER_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")

SECRETS_HINT = (
    "secrets never go in deploy.yaml: remove it and pass the SSH key in the "
    f"{env.CXML_SSH_KEY} environment variable (the redeploy action's ssh-key input, or "
    f"--ssh-key-file) and known_hosts in {env.CXML_KNOWN_HOSTS} (the known-hosts input)"
)
_SECRET_NAMES = {
    "key",
    "password",
    "passwd",
    "passphrase",
    "token",
    "secret",
    "secrets",
    "credentials",
    "identity",
    "identity_file",
    "identityfile",
    "known_hosts",
    "known_hosts_file",
}
_SECRET_SUFFIXES = ("_key", "_key_file", "_password", "_passphrase", "_token", "_secret")


# --- the settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SshSettings:
    user: str | None = None
    """SSH user; None: the SSH client's default (the runner's user)."""
    port: int = DEFAULT_SSH_PORT


@dataclass(frozen=True)
class ProxySettings:
    upstream_file: str | None = None
    """The nginx upstream file each deploy rewrites; required (in serve or the environment)."""
    reload: tuple[str, ...] = DEFAULTS.proxy_reload
    check: tuple[str, ...] | None = DEFAULTS.proxy_check
    """None: `auto` (derived from reload, as `nginx -t`); (): `none`; else the command."""
    public_url: str | None = None
    """The stable endpoint through the proxy, checked after the switch."""


@dataclass(frozen=True)
class DockerSettings:
    command: tuple[str, ...] = DEFAULTS.docker
    image: str = DEFAULTS.image
    build_context: str | None = None
    build_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServeSettings:
    """The serving settings with every default filled in (the defaults are HostSettings')."""

    mode: Mode = DEFAULTS.mode
    root: str = str(DEFAULTS.root)
    remote_python: tuple[str, ...] = DEFAULT_REMOTE_PYTHON
    ssh: SshSettings = field(default_factory=SshSettings)
    proxy: ProxySettings = field(default_factory=ProxySettings)
    docker: DockerSettings = field(default_factory=DockerSettings)
    health_timeout: float = DEFAULTS.health_timeout_s
    drain: float = DEFAULTS.drain_s
    lock_timeout: float = DEFAULTS.lock_timeout_s
    keep: int = DEFAULTS.keep
    serve_args: tuple[str, ...] = DEFAULTS.serve_args


@dataclass(frozen=True)
class Connection:
    """The client's side of reaching an environment's hosts (the host side never sees it)."""

    remote_python: tuple[str, ...]
    ssh: SshSettings


@dataclass(frozen=True)
class Host:
    """One serving host; `port` and `user` already fall back on the environment's `ssh`."""

    address: str
    """A host name or an IP address (IPv6 without brackets)."""
    port: int = DEFAULT_SSH_PORT
    user: str | None = None
    settings: ServeSettings | None = None
    """The environment's settings with this host's own overrides (`root`, `proxy`, ...), or
    None when the entry has none: two hosts behind their own proxies, or with other roots."""

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.address}" if self.user else self.address

    @property
    def label(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.user}@{address}:{self.port}" if self.user else f"{address}:{self.port}"


@dataclass(frozen=True)
class CanarySettings:
    """An environment's `canary:` section: how `cxml promote` tries a release on a share of the
    traffic before it takes all of it, and the thresholds that decide (docs/deploy-yaml.md)."""

    weight: int = 10
    """Percent of the requests the proxy sends to the canary (1 to 99)."""
    window: float = 60.0
    """Seconds the canary is watched."""
    interval: float = 5.0
    """Seconds between two reads of both services' /metrics."""
    min_requests: int = 20
    """/predict requests the canary must answer in the window for a decision."""
    max_error_rate_increase: float = 0.01
    """Canary error rate minus the current release's, as a fraction (0.01: one point)."""
    max_p95_ratio: float = 1.5
    max_p99_ratio: float = 1.5
    """Canary latency quantile over the current release's."""
    max_class_shift: float | None = None
    """Largest total-variation distance between the predicted-class shares (0 to 1); None: not
    compared."""


@dataclass(frozen=True)
class CheckSettings:
    """An environment's `checks:` section: what `cxml check` sends and the load test's
    thresholds (docs/deploy-yaml.md)."""

    sample: int = 64
    """Held-out test images sent for the online = offline comparison (the first N, in order)."""
    rate: float = 20.0
    """Load test: /predict requests per second."""
    duration: float = 10.0
    """Load test: seconds."""
    max_p99_ms: float = 1000.0
    max_error_rate: float = 0.0
    """Fraction of load-test requests that may fail (0.01: one in a hundred)."""
    min_rps: float | None = None
    """Answered requests per second the load test must reach; None: not checked."""


@dataclass(frozen=True)
class Environment:
    name: str
    hosts: tuple[Host, ...]
    settings: ServeSettings
    """`serve:` merged with this environment's overrides, defaults filled in."""
    canary: CanarySettings | None = None
    """`cxml promote` to this environment goes through a canary; None: a plain switch."""
    checks: CheckSettings = field(default_factory=CheckSettings)
    """What `cxml check --env NAME` sends and requires."""

    def host_settings(self, host: Host | None = None) -> HostSettings:
        """The settings the host side runs with (carried across SSH by `to_argv`); with `host`,
        that host's, its own overrides applied."""
        return host_settings_of(host.settings if host and host.settings else self.settings)

    def connection(self, host: Host | None = None) -> Connection:
        settings = host.settings if host and host.settings else self.settings
        return Connection(remote_python=settings.remote_python, ssh=settings.ssh)


def host_settings_of(settings: ServeSettings) -> HostSettings:
    """ServeSettings -> the HostSettings the host side runs with."""
    proxy, docker = settings.proxy, settings.docker
    return HostSettings(
        root=Path(settings.root),
        mode=settings.mode,
        keep=settings.keep,
        health_timeout_s=settings.health_timeout,
        lock_timeout_s=settings.lock_timeout,
        drain_s=settings.drain,
        public_url=proxy.public_url,
        proxy_config=Path(proxy.upstream_file) if proxy.upstream_file else None,
        proxy_reload=proxy.reload,
        proxy_check=proxy.check,
        docker=docker.command,
        image=docker.image,
        docker_build_context=Path(docker.build_context) if docker.build_context else None,
        docker_build_args=docker.build_args,
        serve_args=settings.serve_args,
    )


@dataclass(frozen=True)
class DeployConfig:
    service: str
    serve: ServeSettings
    """The `serve:` section alone, defaults filled in (each environment may override it)."""
    environments: dict[str, Environment]
    source: str = field(default=DEFAULT_DEPLOY_FILE, compare=False)
    """Where the config was read from (for messages)."""

    def environment(self, name: str) -> Environment:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(self.environments)
            raise ConfigError(
                f"{self.source}: no environment {name!r}{_did_you_mean(name, self.environments)}; "
                f"the environments are: {known}"
            ) from None


# --- loading ----------------------------------------------------------------------------------


def load_deploy_config(path: str | Path | None = None) -> DeployConfig:
    """Read and validate deploy.yaml (default: `deploy.yaml` in the working directory)."""
    config_path = Path(path) if path is not None else Path(DEFAULT_DEPLOY_FILE)
    label = str(config_path)
    raw = _read_yaml(config_path, label)
    return deploy_config_from_mapping(raw, source=label)


def deploy_config_from_mapping(raw: object, *, source: str = DEFAULT_DEPLOY_FILE) -> DeployConfig:
    """Build `DeployConfig` from already-parsed YAML, checking every key, type and value."""
    try:
        return _deploy_config(raw, source)
    except _Problem as problem:
        where = f"{problem.key}: " if problem.key else ""
        raise ConfigError(f"{source}: {where}{problem.message}") from None


def _read_yaml(path: Path, label: str) -> object:
    import yaml

    if not path.exists():
        raise ConfigError(
            f"{label}: file not found; run `cxml init` to write one, or write one "
            "(the format: docs/deploy-yaml.md)"
        )
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(
                f"{label}: larger than {MAX_FILE_BYTES // 1024} KiB; not a deploy.yaml"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{label}: cannot be read ({exc.strerror or exc}); check the path"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{label}: not UTF-8 text (byte {exc.start}); save the file as UTF-8"
        ) from None
    loader = _yaml_loader()
    try:
        _check_structure(yaml.parse(text, Loader=loader), label)
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        why = f" ({problem})" if problem else ""
        raise ConfigError(f"{label}: not valid YAML{where}{why}; fix the syntax") from None
    except RecursionError:  # a safety net: the event check above already bounds the depth
        raise ConfigError(f"{label}: nested too deeply; deploy.yaml needs a few levels") from None


def _check_structure(events: Iterator[Any], label: str) -> None:
    """Refuse, from the parser's events (no recursion), YAML nested too deeply and mappings
    with a key twice (PyYAML would keep the last silently: a second `hosts:` would win)."""
    import yaml

    # one frame per open collection: (keys seen, expecting a key next) for a mapping, None for a list
    stack: list[tuple[set[str], list[bool]] | None] = []
    for event in events:
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        is_node = isinstance(
            event,
            yaml.ScalarEvent | yaml.AliasEvent | yaml.MappingStartEvent | yaml.SequenceStartEvent,
        )
        if is_node and stack and stack[-1] is not None:
            keys, expecting_key = stack[-1]
            if expecting_key[0]:
                if not isinstance(event, yaml.ScalarEvent):
                    raise ConfigError(f"{label}: line {line}: a key must be a plain name")
                if event.value in keys:
                    raise ConfigError(
                        f"{label}: line {line}: {event.value!r} appears twice in the same "
                        "mapping; keep one"
                    )
                keys.add(event.value)
            expecting_key[0] = not expecting_key[0]
        if isinstance(event, yaml.MappingStartEvent):
            stack.append((set(), [True]))
        elif isinstance(event, yaml.SequenceStartEvent):
            stack.append(None)
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            stack.pop()
        if len(stack) > MAX_DEPTH:
            raise ConfigError(
                f"{label}: line {line}: nested more than {MAX_DEPTH} levels deep; "
                "deploy.yaml needs a few"
            )


# --- validation: one problem, the key it is at, and the fix ---------------------------------


class _Problem(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _fail(key: str, message: str) -> NoReturn:
    raise _Problem(key, message)


def _deploy_config(raw: object, source: str) -> DeployConfig:
    if raw is None:
        _fail("", "empty; it needs `serve:` and `environments:` (see docs/deploy-yaml.md)")
    mapping = _mapping(raw, "", "a mapping with serve and environments")
    _refuse_secrets(mapping)
    _check_keys(mapping, "", ("service", "serve", "environments"))
    service = _service(mapping.get("service"))
    serve_raw = mapping.get("serve")
    serve_values = {} if serve_raw is None else _serve_values(serve_raw, "serve", allow_hosts=False)
    environments_raw = mapping.get("environments")
    if environments_raw is None or (isinstance(environments_raw, Mapping) and not environments_raw):
        _fail(
            "environments",
            "at least one environment is needed, e.g. staging and production, each with hosts",
        )
    environments: dict[str, Environment] = {}
    for name, env_raw in _mapping(
        environments_raw, "environments", "a mapping of environments"
    ).items():
        environments[str(name)] = _environment(name, env_raw, serve_values)
    return DeployConfig(
        service=service,
        serve=_serve_settings(serve_values),
        environments=environments,
        source=source,
    )


_ENVIRONMENT_SECTIONS = ("canary", "checks")


def _environment(name: object, raw: object, serve_values: dict[str, Any]) -> Environment:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        _fail(
            f"environments.{name}",
            "not an environment name: use lower-case letters, digits, `-` and `_`, starting "
            "with a letter (quote names YAML reads otherwise, like `on` or `no`)",
        )
    key = f"environments.{name}"
    if raw is None:
        _fail(key, "needs hosts, e.g. `hosts: [host.example.com]`")
    canary = _canary(raw, f"{key}.canary")
    checks = _checks(raw, f"{key}.checks")
    values = _serve_values(_without(_without(raw, "canary"), "checks"), key, allow_hosts=True)
    hosts_raw = values.pop("hosts", None)
    settings = _serve_settings(_merge(serve_values, values))
    if settings.mode == "process" and settings.docker.build_context is not None:
        _fail(f"{key}.docker.build_context", "only used with mode docker; remove it")
    hosts = _hosts(hosts_raw, f"{key}.hosts", settings.ssh, _merge(serve_values, values))
    # each host must switch a proxy: a host entry may name its own (its own nginx)
    if any((host.settings or settings).proxy.upstream_file is None for host in hosts):
        _fail(
            key,
            "a deploy must switch a proxy; set serve.proxy.upstream_file "
            f"(or {key}.proxy.upstream_file) to the nginx upstream file the host rewrites",
        )
    return Environment(name=name, hosts=hosts, settings=settings, canary=canary, checks=checks)


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The environment's values over serve's; the sections (ssh, proxy, docker) key by key."""
    merged = dict(base)
    for name, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = {**merged[name], **value}
        else:
            merged[name] = value
    return merged


def _serve_settings(values: dict[str, Any]) -> ServeSettings:
    plain = {name: value for name, value in values.items() if name not in _SECTIONS}
    return ServeSettings(
        **plain,
        ssh=SshSettings(**values.get("ssh", {})),
        proxy=ProxySettings(**values.get("proxy", {})),
        docker=DockerSettings(**values.get("docker", {})),
    )


# --- the keys of serve (and of each environment) ----------------------------------------------

Check = Callable[[object, str], Any]


def _serve_values(raw: object, prefix: str, *, allow_hosts: bool) -> dict[str, Any]:
    """The keys given (null: not given, the default or serve's value applies), each checked."""
    mapping = _mapping(raw, prefix, "a mapping of serving settings")
    known: tuple[str, ...] = (*_SERVE_KEYS, *_SECTIONS)
    if allow_hosts:  # an environment: its own sections were taken out before this check
        known = ("hosts", *known, *_ENVIRONMENT_SECTIONS)
    _check_keys(mapping, prefix, known)
    values: dict[str, Any] = {}
    for name, value in mapping.items():
        key = f"{prefix}.{name}"
        if value is None:
            continue
        if name == "hosts":
            values["hosts"] = value  # checked once the environment's ssh settings are known
        elif name in _SECTIONS:
            checks = _SECTIONS[name]
            section = _mapping(value, key, f"a mapping with {_or_list(checks)}")
            _check_keys(section, key, tuple(checks))
            values[name] = {
                sub: checks[sub](sub_value, f"{key}.{sub}")
                for sub, sub_value in section.items()
                if sub_value is not None
            }
        else:
            values[name] = _SERVE_KEYS[name](value, key)
    return values


def _mode(value: object, key: str) -> Mode:
    if value not in MODES:
        _fail(key, f"expected one of {_or_list(MODES)}, got {_show(value)}")
    return "docker" if value == "docker" else "process"


def _number(value: object, key: str, *, minimum: float, inclusive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(key, f"expected a number of seconds, got {_show(value)}")
    if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
        bound = "not negative" if inclusive else f"greater than {minimum:g}"
        _fail(key, f"must be a finite number {bound}, got {value!r}")
    return float(value)


def _seconds(value: object, key: str) -> float:
    return _number(value, key, minimum=0, inclusive=False)


def _seconds_or_zero(value: object, key: str) -> float:
    return _number(value, key, minimum=0, inclusive=True)


def _keep(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(key, f"expected an integer, got {_show(value)}")
    if value < 2:
        _fail(key, f"must be at least 2 (the current and the previous release), got {value}")
    return value


def _port(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(key, f"expected a port number, got {_show(value)}")
    if not 1 <= value <= 65535:
        _fail(key, f"a port is between 1 and 65535, got {value}")
    return value


def _text(value: object, key: str) -> str:
    if not isinstance(value, str):
        _fail(key, f"expected a string, got {_show(value)}")
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        _fail(key, "contains a control character (a newline, a tab, ...); remove it")
    return value


def _absolute_path(value: object, key: str) -> str:
    path = _text(value, key)
    if not path.startswith("/"):
        _fail(key, f"expected an absolute path on the host (starting with /), got {_show(value)}")
    return path


def _image(value: object, key: str) -> str:
    image = _text(value, key)
    if not image or image.startswith("-") or any(char.isspace() for char in image):
        _fail(key, f"expected an image name like cxml-serve:latest, got {_show(value)}")
    return image


def _url(value: object, key: str) -> str:
    url = _text(value, key)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or " " in url:
        _fail(key, f"expected an http:// or https:// URL, got {_show(value)}")
    return url


def _user(value: object, key: str) -> str:
    user = _text(value, key)
    if not USER_PATTERN.fullmatch(user):
        _fail(key, f"not a user name (letters, digits, `.`, `-`, `_`), got {_show(value)}")
    return user


def _words(value: object, key: str) -> tuple[str, ...]:
    """A command or arguments: a string split as a shell would, or a list of words."""
    if isinstance(value, str):
        text = _text(value, key)
        try:
            return tuple(shlex.split(text))
        except ValueError as exc:
            _fail(key, f"{exc} in {_show(value)}; quote it as a shell would")
    if isinstance(value, list):
        words: list[str] = []
        for index, word in enumerate(value):
            if isinstance(word, int | float) and not isinstance(word, bool):
                word = str(word)  # `["--workers", 2]`
            words.append(_text(word, f"{key}[{index}]"))
        return tuple(words)
    _fail(key, f"expected a command (a string or a list of words), got {_show(value)}")


def _command(value: object, key: str) -> tuple[str, ...]:
    words = _words(value, key)
    if not words or not words[0]:
        _fail(key, "needs a command")
    return words


def _proxy_check(value: object, key: str) -> tuple[str, ...] | None:
    words = _words(value, key)
    if words == (PROXY_CHECK_AUTO,):
        return None
    if words == (PROXY_CHECK_NONE,):
        return ()
    if not words or not words[0]:
        _fail(key, f"needs a command, or {PROXY_CHECK_AUTO} or {PROXY_CHECK_NONE}")
    return words


def _build_args(value: object, key: str) -> tuple[str, ...]:
    if isinstance(value, Mapping):  # `build_args: {BASE_IMAGE: ...}`
        return tuple(
            f"{_text(name, f'{key}.{name}')}={_text(arg, f'{key}.{name}')}"
            for name, arg in value.items()
        )
    if not isinstance(value, list):
        _fail(key, f"expected a list of KEY=VALUE or a mapping, got {_show(value)}")
    args = tuple(_text(arg, f"{key}[{index}]") for index, arg in enumerate(value))
    for index, arg in enumerate(args):
        if "=" not in arg or arg.startswith("="):
            _fail(f"{key}[{index}]", f"expected KEY=VALUE, got {_show(arg)}")
    return args


_SERVE_KEYS: dict[str, Check] = {
    "mode": _mode,
    "root": _absolute_path,
    "remote_python": _command,
    "health_timeout": _seconds,
    "drain": _seconds_or_zero,
    "lock_timeout": _seconds,
    "keep": _keep,
    "serve_args": _words,
}
_SECTIONS: dict[str, dict[str, Check]] = {
    "ssh": {"user": _user, "port": _port},
    "proxy": {
        "upstream_file": _absolute_path,
        "reload": _command,
        "check": _proxy_check,
        "public_url": _url,
    },
    "docker": {
        "command": _command,
        "image": _image,
        "build_context": _absolute_path,
        "build_args": _build_args,
    },
}


# --- the numbers of the canary: and checks: sections -----------------------------------------


@dataclass(frozen=True)
class _Number:
    """A number setting's check: its kind and range, and the words its two messages use."""

    expected: str
    """`expected {expected}, got ...` for a value of the wrong kind."""
    _: KW_ONLY
    minimum: float
    maximum: float = math.inf
    whole: bool = False
    above_minimum: bool = False
    """The minimum itself is refused."""
    out_of_range: str | None = None
    """`{out_of_range}, got ...` for a number outside the range; None: the `expected` message."""

    def __call__(self, value: object, key: str) -> float:
        kind = int if self.whole else int | float
        if isinstance(value, bool) or not isinstance(value, kind):
            _fail(key, f"expected {self.expected}, got {_show(value)}")
        if not self.in_range(value):
            if self.out_of_range is None:
                _fail(key, f"expected {self.expected}, got {_show(value)}")
            _fail(key, f"{self.out_of_range}, got {value!r}")
        return value if self.whole else float(value)

    def in_range(self, value: float) -> bool:
        # a whole number is never tested with isfinite: a huge int cannot become a float
        if not self.whole and not math.isfinite(value):
            return False
        above = value > self.minimum if self.above_minimum else value >= self.minimum
        return above and value <= self.maximum


_FRACTION = _Number(
    "a fraction between 0 and 1 (0.01 is one point)",
    minimum=0,
    maximum=1,
    out_of_range="a fraction is between 0 and 1 (0.01 is one point)",
)
_RATIO = _Number(
    "a ratio to the current release like 1.5",
    minimum=1,
    out_of_range="a ratio to the current release is at least 1 (1.5: 50% slower)",
)
_POSITIVE = _Number(
    "a number greater than 0",
    minimum=0,
    above_minimum=True,
    out_of_range="must be a finite number greater than 0",
)


# --- canary ----------------------------------------------------------------------------------


def _without(raw: object, name: str) -> object:
    """`raw` without key `name` (a section read on its own), or `raw` as it is."""
    if isinstance(raw, Mapping) and name in raw:
        return {key: value for key, value in raw.items() if key != name}
    return raw


_CANARY_KEYS: dict[str, Check] = {
    "weight": _Number(
        "a whole percent of the traffic like 10",
        minimum=1,
        maximum=99,
        whole=True,
        out_of_range="a canary takes 1 to 99 percent of the traffic",
    ),
    "window": _seconds,
    "interval": _seconds,
    "min_requests": _Number("a whole number of requests of at least 1", minimum=1, whole=True),
    "max_error_rate_increase": _FRACTION,
    "max_p95_ratio": _RATIO,
    "max_p99_ratio": _RATIO,
    "max_class_shift": _FRACTION,
}


def _checked_section(
    raw: object, section_name: str, key: str, checks: dict[str, Check]
) -> dict[str, Any] | None:
    """An environment's section `section_name` (at `key`), its values checked and named as the
    settings' fields; None when the environment has no such section."""
    if not isinstance(raw, Mapping) or raw.get(section_name) is None:
        return None
    section = _mapping(raw[section_name], key, f"a mapping with {_or_list(tuple(checks))}")
    _check_keys(section, key, tuple(checks))
    return {
        name: checks[name](value, f"{key}.{name}")
        for name, value in section.items()
        if value is not None
    }


def _canary(raw: object, key: str) -> CanarySettings | None:
    """The environment's `canary:` section, each number checked; None when it has none."""
    values = _checked_section(raw, "canary", key, _CANARY_KEYS)
    if values is None:
        return None
    canary = CanarySettings(**values)
    if canary.interval > canary.window:
        _fail(
            f"{key}.interval",
            f"{canary.interval:g} s is longer than the window ({canary.window:g} s); make it "
            "shorter so the canary is read more than once",
        )
    return canary


# --- checks ----------------------------------------------------------------------------------


_CHECK_KEYS: dict[str, Check] = {
    "sample": _Number(
        "a whole number of images from 1 to 10000", minimum=1, maximum=10_000, whole=True
    ),
    "rate": _POSITIVE,
    "duration": _POSITIVE,
    "max_p99_ms": _POSITIVE,
    "max_error_rate": _FRACTION,
    "min_rps": _POSITIVE,
}


def _checks(raw: object, key: str) -> CheckSettings:
    """The environment's `checks:` section, each number checked; the defaults when it has none."""
    checks = CheckSettings(**(_checked_section(raw, "checks", key, _CHECK_KEYS) or {}))
    if checks.rate * checks.duration > 100_000:
        _fail(
            key,
            f"rate x duration is {checks.rate * checks.duration:g} requests; a staging load test "
            "stays under 100000, lower rate or duration",
        )
    return checks


# --- service and hosts ------------------------------------------------------------------------


def _service(value: object) -> str:
    if value is None:
        return DEFAULT_SERVICE
    service = _text(value, "service")
    if not SERVICE_PATTERN.fullmatch(service):
        _fail(
            "service",
            f"expected a name of lower-case letters, digits, `-` and `_`, got {_show(value)}",
        )
    return service


def _hosts(
    raw: object, key: str, ssh: SshSettings, env_values: dict[str, Any] | None = None
) -> tuple[Host, ...]:
    if raw is None:
        _fail(key, "needs at least one host, e.g. `hosts: [host.example.com]`")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        _fail(key, f"expected a list of hosts, got {_show(raw)}")
    if not raw:
        _fail(key, "needs at least one host, e.g. `hosts: [host.example.com]`")
    hosts: list[Host] = []
    seen: dict[tuple[str, int], int] = {}
    for index, entry in enumerate(raw):
        host = _host(entry, f"{key}[{index}]", ssh, env_values)
        identity = (host.address.lower(), host.port)
        if identity in seen:
            _fail(f"{key}[{index}]", f"{host.label} is listed twice (also at [{seen[identity]}])")
        seen[identity] = index
        hosts.append(host)
    return tuple(hosts)


def parse_host(entry: object, ssh: SshSettings | None = None) -> Host:
    """A host entry: `host`, `host:port`, `user@host:port`, `[ipv6]:port` or a mapping
    `{host:, port:, user:}`; a port or user left out comes from `ssh` (default: port 22)."""
    try:
        return _host(entry, "host", ssh or SshSettings())
    except _Problem as problem:
        raise ConfigError(f"{problem.key}: {problem.message}") from None


_HOST_KEYS = ("host", "port", "user")


def _host(
    entry: object, key: str, ssh: SshSettings, env_values: dict[str, Any] | None = None
) -> Host:
    if isinstance(entry, Mapping):
        _refuse_secrets(entry, key)
        overridable = tuple(name for name in (*_SERVE_KEYS, *_SECTIONS) if name != "ssh")
        _check_keys(
            entry, key, (*_HOST_KEYS, *overridable) if env_values is not None else _HOST_KEYS
        )
        if entry.get("host") is None:
            _fail(f"{key}.host", "a host entry needs its host name or address")
        address = _address(_text(entry["host"], f"{key}.host"), f"{key}.host")
        port = ssh.port if entry.get("port") is None else _port(entry["port"], f"{key}.port")
        user = ssh.user if entry.get("user") is None else _user(entry["user"], f"{key}.user")
        overrides = {name: value for name, value in entry.items() if name not in _HOST_KEYS}
        if not overrides or env_values is None:
            return Host(address=address, port=port, user=user)
        values = _serve_values(overrides, key, allow_hosts=False)
        settings = _serve_settings(_merge(env_values, values))
        if settings.mode == "process" and settings.docker.build_context is not None:
            _fail(f"{key}.docker.build_context", "only used with mode docker; remove it")
        return Host(address=address, port=port, user=user, settings=settings)
    if not isinstance(entry, str):
        _fail(key, f"expected `user@host:port` or a mapping {{host: ...}}, got {_show(entry)}")
    return _host_from_text(_text(entry, key), key, ssh)


def _host_from_text(text: str, key: str, ssh: SshSettings) -> Host:
    user, at, rest = text.rpartition("@")
    if at and not user:
        _fail(key, f"nothing before @ in {_show(text)}; write user@host or leave the user out")
    port_text = None
    if rest.startswith("["):  # [ipv6] or [ipv6]:port
        address, bracket, after = rest[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            _fail(key, f"expected [address] or [address]:port, got {_show(text)}")
        port_text = after[1:] if after else None
        if ":" not in address:
            _fail(key, f"{_show(address)} in brackets is not an IPv6 address")
    elif rest.count(":") > 1:  # a bare IPv6 address: it has no port
        address = rest
    else:
        address, colon, port_text_or_empty = rest.partition(":")
        port_text = port_text_or_empty if colon else None
    address = _address(address, key)
    port = ssh.port
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit():
            _fail(key, f"the port in {_show(text)} is not a number")
        port = _port(int(port_text), key)
    return Host(address=address, port=port, user=_user(user, key) if at else ssh.user)


def _address(address: str, key: str) -> str:
    if not address:
        _fail(key, "an empty host; write its name or address")
    if ":" in address:
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            _fail(key, f"{_show(address)} is not a host name or an IPv6 address")
        return address
    if not HOSTNAME_PATTERN.fullmatch(address):
        _fail(
            key,
            f"{_show(address)} is not a host name or address: use letters, digits, `.`, `-` "
            "and `_` (no spaces or shell characters, not starting with -)",
        )
    return address


# --- shared checks ----------------------------------------------------------------------------


def _mapping(value: object, key: str, expected: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        _fail(key, f"expected {expected}, got {_show(value)}")
    return value


def _check_keys(mapping: Mapping[Any, Any], prefix: str, known: tuple[str, ...]) -> None:
    for name in mapping:
        if name in known:
            continue
        key = f"{prefix}.{name}" if prefix else str(name)
        where = prefix or "the top level"
        _fail(
            key,
            f"unknown key{_did_you_mean(str(name), known)}; known keys in {where}: "
            + ", ".join(known),
        )


def _refuse_secrets(document: Mapping[Any, Any], prefix: str = "") -> None:
    """Any key anywhere that names a secret, and any value that holds a private key (the value
    is never repeated in the message). Iterative, each collection once: aliases may share."""
    pending: list[tuple[object, str]] = [(document, prefix)]
    seen: set[int] = set()
    while pending:
        node, path = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Mapping):
            for name, value in node.items():
                key = f"{path}.{name}" if path else str(name)
                # environment names are names, not settings
                if path != "environments" and _looks_secret(str(name)):
                    _fail(key, f"looks like a secret; {SECRETS_HINT}")
                pending.append((value, key))
        elif isinstance(node, list):
            pending.extend((value, f"{path}[{index}]") for index, value in enumerate(node))
        elif isinstance(node, str) and "PRIVATE KEY" in node:
            _fail(path, f"holds a private key; {SECRETS_HINT}")


def _looks_secret(name: str) -> bool:
    normal = name.strip().lower().replace("-", "_")
    return normal in _SECRET_NAMES or normal.endswith(_SECRET_SUFFIXES)


def _did_you_mean(name: str, known: Mapping[str, Any] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _or_list(words: Mapping[str, Any] | tuple[str, ...]) -> str:
    names = list(words)
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def _show(value: object) -> str:
    """The value as the message shows it: short, one line."""
    text = _describe(value)
    return text if len(text) <= 60 else text[:57] + "..."

"""`cxml host setup` as data and its executor: the host commands per host, then running them.

The plan (no I/O) holds, per host, the version probe of the remote cxml, the steps that install
it in a venv under the root (with --install) and the host side's `setup` command; the executor
runs them over ssh one host at a time and says what each did. `--dry-run` prints the same plan.
"""

from __future__ import annotations

import ipaddress
import shlex
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from cxml.core.console import info
from cxml.core.errors import ConfigError, DeployError
from cxml.deploy import ssh
from cxml.deploy.config import Environment, Host
from cxml.deploy.host.settings import option
from cxml.deploy.plan import HOST_MODULE, PlanStep

VERSION_TIMEOUT_S = 60.0
INSTALL_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class InstallOptions:
    install: bool = False
    """Create ROOT/venv and install the client's cxml version in it when it is not there."""
    source: str | None = None
    """A wheel or source directory on the host to install from (default: the package index)."""


@dataclass(frozen=True)
class HostSetupPlan:
    host: Host
    python: tuple[str, ...]
    """The Python that runs cxml on the host: the configured one, or ROOT/venv's."""
    version_probe: PlanStep
    install: tuple[PlanStep, ...]
    """Run only when the probe does not show the client's version (empty without --install)."""
    setup: PlanStep


# --- the plan -----------------------------------------------------------------------------


def plan_setup(
    environment: Environment, options: InstallOptions, client_version: str
) -> tuple[HostSetupPlan, ...]:
    """One plan per host of the environment, in the order the hosts are listed."""
    settings = environment.host_settings()
    if settings.proxy_config is None:  # the loader refuses this; kept for a hand-made Environment
        raise ConfigError(f"environment {environment.name}: needs proxy.upstream_file")
    block_argv = server_block_argv(environment.settings.proxy.public_url, environment.name)
    snippet = server_snippet_path(str(settings.proxy_config))
    python = environment.settings.remote_python
    install: tuple[PlanStep, ...] = ()
    if options.install:
        venv = f"{settings.root}/venv"
        python = (f"{venv}/bin/python",)
        spec = install_spec(options.source, client_version, environment.settings.mode)
        install = (
            PlanStep(
                f"create the venv {venv} (kept if it exists)",
                argv=(*environment.settings.remote_python, "-m", "venv", venv),
            ),
            PlanStep(
                f"install {spec} in it",
                argv=(
                    *python,
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    spec,
                ),
            ),
        )
    setup = PlanStep(
        "make the layout and the proxy files, check the proxy config, reload it, check again",
        argv=(
            *python,
            "-m",
            HOST_MODULE,
            "setup",
            *settings.to_argv(),
            option("--server-snippet", snippet),
            *block_argv,
        ),
    )
    probe = PlanStep(
        f"check that {shlex.join(python)} runs cxml {client_version}",
        argv=(*python, "-m", "cxml", "--version"),
    )
    return tuple(
        HostSetupPlan(host=host, python=python, version_probe=probe, install=install, setup=setup)
        for host in environment.hosts
    )


def server_block_argv(public_url: str | None, environment: str) -> list[str]:
    """--listen and --server-name for the host's server block, from the public URL."""
    key = f"environments.{environment}.proxy.public_url (or serve.proxy.public_url)"
    if not public_url:
        raise ConfigError(
            f"host setup needs {key}: the URL the proxy serves the model at, e.g. "
            "http://digits.example.com; its host becomes the server_name, its port the listen port"
        )
    parsed = urllib.parse.urlsplit(public_url)
    if parsed.scheme != "http":
        raise ConfigError(
            f"{key} is {parsed.scheme}://: host setup writes a plain-HTTP server block only; "
            "write the TLS server block yourself (proxy_pass http://cxml_serving) and use an "
            "http:// public_url, or terminate TLS in front of this proxy"
        )
    address = parsed.hostname or ""
    port = parsed.port or 80
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return [option("--listen", str(port)), option("--server-name", address)]
    listen = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    return [option("--listen", listen), option("--server-name", str(ip))]


def server_snippet_path(upstream_file: str) -> str:
    """The server block's file, next to the upstream file (`cxml-upstream.conf` ->
    `cxml-server.conf`), so one `include DIR/*.conf;` or conf.d/ takes both."""
    path = PurePosixPath(upstream_file)
    stem = path.name.removesuffix(".conf")
    name = stem[: -len("upstream")] + "server" if stem.endswith("upstream") else stem + "-server"
    return str(path.with_name(f"{name}.conf"))


def install_spec(source: str | None, version: str, mode: str) -> str:
    """What pip installs: the source given, else cxml at the client's version; `serve` extras
    for process mode, which runs `cxml serve` on the host itself."""
    extras = "[serve]" if mode == "process" else ""
    if source:
        return f"{source}{extras}"
    return f"cxml{extras}=={version}"


# --- the dry run --------------------------------------------------------------------------


def render_setup_plan(
    plans: Sequence[HostSetupPlan],
    environment: str,
    command_line: Callable[[Host, PlanStep], Sequence[str]],
) -> str:
    lines = [f"plan (dry run, nothing is done): host setup of environment {environment}"]
    for plan in plans:
        lines.append(f"  host {plan.host.label}:")
        steps = [(plan.version_probe, "")]
        steps += [(step, " (only if the version differs)") for step in plan.install]
        steps.append((plan.setup, ""))
        for number, (step, when) in enumerate(steps, start=1):
            lines.append(f"    {number}. {step.title}{when}")
            lines.append(f"       $ {shlex.join(command_line(plan.host, step))}")
    return "\n".join(lines)


# --- running it ---------------------------------------------------------------------------


def run_host_setup(
    plan: HostSetupPlan, target: ssh.SshTarget, client_version: str
) -> dict[str, Any]:
    """Run one host's plan; returns the host side's result with the cxml install item added."""
    label = plan.host.label
    info(f"host {label}:")
    installed = remote_version(plan.version_probe, target)
    install_status = "already there"
    if installed != client_version:
        if not plan.install:
            raise DeployError(f"{label}: {version_problem(plan, installed, client_version)}")
        for step in plan.install:
            run_on_host(step, target, label, timeout_s=INSTALL_TIMEOUT_S)
        install_status = "created" if installed is None else "changed"
        installed = remote_version(plan.version_probe, target)
        if installed != client_version:
            raise DeployError(
                f"{label}: after the install, {shlex.join(plan.python)} runs cxml "
                f"{installed or '(none)'}, not {client_version}; install cxml {client_version} "
                "there by hand"
            )
    result = run_on_host(plan.setup, target, label)
    items = [
        {
            "what": f"cxml {client_version}",
            "path": shlex.join(plan.python),
            "status": install_status,
        }
    ]
    items += list(result.get("items", []))
    changed = bool(result.get("changed")) or install_status != "already there"
    for item in items:
        info(f"  {item.get('status', '?'):<13} {item.get('what', '?')}: {item.get('path', '')}")
    return {"host": label, "items": items, "changed": changed}


def remote_version(probe: PlanStep, target: ssh.SshTarget) -> str | None:
    """The version `python -m cxml --version` prints on the host, None when cxml is missing."""
    result = ssh.run_command(ssh.ssh_argv(target, probe.argv), timeout_s=VERSION_TIMEOUT_S)
    if result.returncode != 0:
        connection_problem = ssh.connection_error(result, target)
        if connection_problem is not None:
            raise connection_problem
        return None
    words = result.stdout.split()
    return words[-1] if len(words) == 2 and words[0] == "cxml" else None


def version_problem(plan: HostSetupPlan, installed: str | None, client_version: str) -> str:
    python = shlex.join(plan.python)
    fix = (
        f"install it there (`{python} -m pip install 'cxml=={client_version}'`), or run "
        "`cxml host setup --install` to install it in a venv under the root"
    )
    if installed is None:
        return f"`{python} -m cxml` does not run there (cxml is not installed for it); {fix}"
    return f"{python} runs cxml {installed}, this client is cxml {client_version}; {fix}"


def run_on_host(
    step: PlanStep, target: ssh.SshTarget, label: str, *, timeout_s: float | None = None
) -> dict[str, Any]:
    result = ssh.run_command(ssh.ssh_argv(target, step.argv), timeout_s=timeout_s)
    if result.returncode != 0:
        problem = ssh.connection_error(result, target)
        if problem is not None:
            raise problem
        failure = ssh.host_failure(result)
        raise DeployError(f"{label}: {failure}", exit_code=failure.exit_code)
    return ssh.last_json_object(result.stdout)

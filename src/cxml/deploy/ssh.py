"""The executor: runs a plan's steps with the system OpenSSH client (ssh, sftp).

A step holds only the host command (or an sftp batch); this module adds ssh or sftp with a
checked host key and the key (a file, or an agent: see cxml.deploy.keys) that never reaches the
log, runs it, and turns a failure into one error of the right kind (a refused key or host key:
the user's to fix; the rest: runtime). A SIGTERM stops the running ssh or sftp with it.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cxml.core.console import info
from cxml.core.errors import EXIT_INPUT, EXIT_RUNTIME, ConfigError, CxmlError, DeployError
from cxml.deploy.plan import PlanStep

HOST_KEY_PROBLEMS = (
    "Host key verification failed",
    "REMOTE HOST IDENTIFICATION HAS CHANGED",
    "No matching host key",
)
SSH_BANNER_LINES = (
    "@",
    "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY",
    "Someone could be eavesdropping",
    "It is also possible that a host key has just been changed",
    "The fingerprint for the",
    "SHA256:",
    "Please contact your system administrator",
    "Add correct host key in",
    "Offending ",
    "Host key for ",
    "Host key verification failed",
    "No matching host key",
    "Password authentication is disabled",
    "Agent forwarding is disabled",
    "Port forwarding is disabled",
    "X11 forwarding is disabled",
    "UpdateHostkeys is disabled",
    "Warning: Permanently added",
)
"""OpenSSH's own stderr (the MITM banner above all): replaced by one cxml line, never echoed."""
FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/=]{20,}")


@dataclass(frozen=True)
class SshTarget:
    """Where to connect and with which files; the files are paths, never their contents."""

    host: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    """A private key file, or the public half of the key `identity_agent` holds."""
    known_hosts_file: str = "<known_hosts>"
    accept_new_host_key: bool = False
    connect_timeout_s: int = 15
    upload_limit_kbit_s: int | None = None
    identity_agent: str | None = None
    """The socket of the agent holding the key (see cxml.deploy.keys), if the key is in one."""
    known_hosts_source: str = "--known-hosts / CXML_KNOWN_HOSTS"
    """Where the expected host keys came from, for the message when one does not match."""

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def label(self) -> str:
        return f"{self.destination}:{self.port}"


def common_options(target: SshTarget) -> list[str]:
    """Options for ssh and sftp: no user config, no prompts, the given key and known_hosts only."""
    options = [
        "-F", "/dev/null",
        "-o", "BatchMode=yes",
        "-o", f"StrictHostKeyChecking={'accept-new' if target.accept_new_host_key else 'yes'}",
        "-o", f"UserKnownHostsFile={config_path(target.known_hosts_file)}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "UpdateHostKeys=no",
        "-o", f"ConnectTimeout={target.connect_timeout_s}",
        "-o", "ServerAliveInterval=5",
        "-o", "ServerAliveCountMax=3",
        "-o", "LogLevel=ERROR",
    ]  # fmt: skip
    if target.identity_agent:
        options += ["-o", f"IdentityAgent={config_path(target.identity_agent)}"]
    if target.key_file:
        options += ["-o", "IdentitiesOnly=yes", "-i", target.key_file]
    return options


def config_path(path: str) -> str:
    """A path as an ssh_config value: quoted when it holds a space (a runner's temp dir may)."""
    return f'"{path}"' if any(c.isspace() for c in path) else path


def ssh_argv(target: SshTarget, remote_argv: Sequence[str]) -> list[str]:
    """`ssh ... host -- <command>`; the remote shell gets the command quoted word by word."""
    return [
        "ssh",
        *common_options(target),
        "-p",
        str(target.port),
        target.destination,
        "--",
        shlex.join(remote_argv),
    ]


def sftp_argv(target: SshTarget, limit_kbit_s: int | None = None) -> list[str]:
    """`sftp -b -`: a batch read from stdin that stops at the first failed command."""
    argv = ["sftp", *common_options(target), "-P", str(target.port), "-b", "-"]
    if limit_kbit_s:
        argv += ["-l", str(limit_kbit_s)]
    return [*argv, target.destination]


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


def run_command(
    argv: Sequence[str],
    *,
    stdin_text: str | None = None,
    echo_prefix: str | None = None,
    timeout_s: float | None = None,
) -> CommandResult:
    """Run ssh/sftp, keeping stderr (echoed live with `echo_prefix`, for long host steps)."""
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    except FileNotFoundError:
        raise DeployError(
            f"{argv[0]}: not found; install the OpenSSH client (apt-get install openssh-client)"
        ) from None
    stderr_lines: list[str] = []

    def pump_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            stderr_lines.append(line)
            if echo_prefix is not None and echoed(line):
                print(f"{echo_prefix}{line.rstrip()}", file=sys.stderr, flush=True)

    reader = threading.Thread(target=pump_stderr, daemon=True)
    reader.start()
    try:
        if stdin_text is not None:
            assert process.stdin is not None
            try:
                process.stdin.write(stdin_text)
                process.stdin.close()
            except BrokenPipeError:
                pass
        assert process.stdout is not None
        stdout = process.stdout.read()
        returncode = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_child(process)
        raise DeployError(
            f"{argv[0]} did not finish within {timeout_s:.0f} s; check the host and the network"
        ) from None
    except BaseException:  # SIGTERM (see interrupt_on_termination) or Ctrl-C: no orphan ssh/sftp
        stop_child(process)
        raise
    reader.join(timeout=5)
    return CommandResult(returncode, stdout, "".join(stderr_lines))


def echoed(line: str) -> bool:
    """Host progress is echoed; the host's `error:` line (it becomes the one error cxml prints)
    and OpenSSH's own messages (the MITM banner) are not."""
    text = line.strip()
    return bool(text) and not text.startswith("error: ") and not text.startswith(SSH_BANNER_LINES)


def stop_child(process: subprocess.Popen[str], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s`: ssh closes its session when it can."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace_s)


@contextmanager
def interrupt_on_termination() -> Iterator[None]:
    """SIGTERM and SIGHUP (a cancelled job, a closed terminal) raise KeyboardInterrupt, once.

    Python's default for SIGTERM is to die on the spot: the ssh or sftp child would run on and
    no `finally` would stop the key agent. As an exception, every cleanup on the way out runs;
    a second signal while it does is ignored. Only the main thread can set handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = (signal.SIGTERM, signal.SIGHUP)
    before = {signum: signal.getsignal(signum) for signum in handled}
    interrupted = False

    def interrupt(signum: int, frame: object) -> None:
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in handled:
        signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def connection_error(result: CommandResult, target: SshTarget) -> CxmlError | None:
    """The error when ssh/sftp could not connect or log in (not a remote failure), else None."""
    text = result.stderr
    if any(marker in text for marker in HOST_KEY_PROBLEMS):
        return host_key_error(text, target)
    if "Permission denied" in text:
        return ConfigError(
            f"{target.label}: SSH key refused (permission denied); check --user and the deploy key"
        )
    if result.returncode == 255:
        last = _last_line(text) or "connection failed"
        return DeployError(
            f"{target.label}: SSH connection failed ({last}); check --host, --port and the network"
        )
    return None


def host_key_error(stderr: str, target: SshTarget) -> ConfigError:
    """One line for OpenSSH's host key failures (its MITM banner is a dozen)."""
    offered = FINGERPRINT.search(stderr)
    shown = f" (it offered {offered.group(0)})" if offered else ""
    changed = " has changed and" if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr else ""
    return ConfigError(
        f"the host key of {target.host} port {target.port}{shown}{changed} does not match the "
        f"known_hosts expected from {target.known_hosts_source}; refusing to connect (someone may "
        "be intercepting, or "
        "the host was reinstalled). Check the key on the host out of band, then update "
        f"{target.known_hosts_source} with the line from `ssh-keyscan -p {target.port} "
        f"{target.host}`"
    )


def remote_error(result: CommandResult) -> str:
    """The host's own `error: ...` line, else its last line of stderr."""
    for line in reversed(result.stderr.splitlines()):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    return _last_line(result.stderr) or f"exit code {result.returncode}"


def host_failure(result: CommandResult) -> DeployError:
    """A failed host command, with the host's own exit code when it is one of cxml's kinds."""
    code = result.returncode if result.returncode in (EXIT_INPUT, EXIT_RUNTIME) else None
    return DeployError(remote_error(result), exit_code=code)


def local_argv(target: SshTarget, step: PlanStep) -> list[str]:
    """What runs here for a step: sftp with its batch for an upload, else ssh with the command."""
    if step.channel == "sftp":
        return sftp_argv(target, target.upload_limit_kbit_s)
    return ssh_argv(target, step.argv)


def run_step(step: PlanStep, target: SshTarget, *, echo_host: bool = True) -> dict[str, Any]:
    """Run one step; returns the JSON object the host printed last ({} if none)."""
    info(f"- {step.title}")
    result = run_command(
        local_argv(target, step),
        stdin_text=step.stdin,
        echo_prefix="  host: " if echo_host else None,
    )
    if result.returncode != 0:
        raise connection_error(result, target) or host_failure(result)
    return last_json_object(result.stdout)


def last_json_object(stdout: str) -> dict[str, Any]:
    last = (stdout.strip().splitlines() or ["{}"])[-1]
    try:
        parsed = json.loads(last)
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""

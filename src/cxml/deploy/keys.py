"""Where the deploy's SSH credentials live while it runs: never on disk, never past the deploy.

A key given as material (the `ssh-key` secret, $CXML_SSH_KEY) goes from memory into a short-lived
`ssh-agent` through `ssh-add -` on stdin; ssh then signs with the agent, selected by the key's
public half. The agent is started as `ssh-agent -a SOCKET sh -c '... exec cat'` with cat reading a
pipe from this process: when the deploy ends in any way, SIGKILL included, the pipe closes, cat
exits, and OpenSSH's agent exits with its parent (it checks every 10 s) and removes its socket.
A normal end or a SIGTERM stops it at once. The private directory that holds the socket, the
public key and known_hosts is 0700, named after this process's pid, and removed at the end, or by
the next deploy once that pid is gone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from cxml.core import env
from cxml.core.env import CXML_KNOWN_HOSTS, CXML_SSH_KEY
from cxml.core.errors import ConfigError, DeployError
from cxml.core.processes import process_exists
from cxml.deploy import ssh

PRIVATE_DIR_PREFIX = "cxml-ssh-"
AGENT_SOCKET_NAME = "agent"
MAX_SOCKET_PATH = 100
"""A Unix socket path holds at most 107 bytes on Linux (103 on macOS)."""
AGENT_START_TIMEOUT_S = 15.0
AGENT_WATCHER = 'echo "$SSH_AGENT_PID"; exec cat >/dev/null'
"""The agent's command: reports the agent's pid, then lives exactly as long as our pipe."""
DRY_RUN_KNOWN_HOSTS = "<known_hosts from input>"
"""known_hosts as a dry run names it: it reads no input."""


@dataclass(frozen=True)
class SshCredentials:
    key_file: str | None
    """The private key file given by the user, or the public key of the agent's key."""
    known_hosts_file: str
    identity_agent: str | None = None
    """The socket of the agent that holds the key, when the key came as material."""


@contextmanager
def credential_files(
    *,
    key_file: str | None,
    key_material: str | None,
    known_hosts: str | None,
    known_hosts_file: str | None,
    accept_new_host_key: bool,
) -> Iterator[SshCredentials]:
    """known_hosts in a private directory and key material in an agent, both gone afterwards."""
    hosts_text = known_hosts_text(known_hosts, known_hosts_file, accept_new_host_key)
    remove_stale_private_dirs()
    with private_directory() as private_dir:
        hosts_path = private_dir / "known_hosts"
        write_private(hosts_path, hosts_text)
        if key_file is not None or not key_material:
            yield SshCredentials(key_file=key_file, known_hosts_file=str(hosts_path))
            return
        with key_agent(private_dir, normalise_key(key_material)) as (socket_path, public_key):
            yield SshCredentials(
                key_file=str(public_key),
                known_hosts_file=str(hosts_path),
                identity_agent=str(socket_path),
            )


def known_hosts_text(
    known_hosts: str | None, known_hosts_file: str | None, accept_new_host_key: bool
) -> str:
    contents = known_hosts or ""
    if known_hosts_file:
        try:
            contents += "\n" + Path(known_hosts_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(
                f"--known-hosts-file {known_hosts_file}: cannot read it ({reason})"
            ) from None
    if not contents.strip() and not accept_new_host_key:
        raise ConfigError(
            "no known_hosts for the deploy host: pass --known-hosts (the output of "
            "`ssh-keyscan` checked "
            "out of band) or set CXML_KNOWN_HOSTS; --accept-new-host-key trusts the "
            "first key seen"
        )
    return contents.strip() + "\n" if contents.strip() else ""


def normalise_key(material: str) -> str:
    """Keys pasted into CI secrets lose their final newline or gain \\r; OpenSSH rejects both."""
    text = material.replace("\r\n", "\n").strip()
    return text + "\n"


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


# --- the private directory -------------------------------------------------------------------


@contextmanager
def private_directory() -> Iterator[Path]:
    """A new 0700 directory named after this process; removed when the block ends."""
    directory = Path(
        tempfile.mkdtemp(prefix=f"{PRIVATE_DIR_PREFIX}{os.getpid()}-", dir=short_temp_dir())
    )
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def short_temp_dir() -> str:
    """The temp dir, unless the agent's socket path would be too long there."""
    base = tempfile.gettempdir()
    longest = os.path.join(base, f"{PRIVATE_DIR_PREFIX}4194304-xxxxxxxx", AGENT_SOCKET_NAME)
    return base if len(longest) <= MAX_SOCKET_PATH else "/tmp"


def remove_stale_private_dirs() -> None:
    """Remove the private directories of earlier deploys of this user whose process is gone."""
    for base in {tempfile.gettempdir(), "/tmp"}:
        with contextlib.suppress(OSError):
            for entry in Path(base).glob(f"{PRIVATE_DIR_PREFIX}*-*"):
                owner_pid = private_dir_pid(entry)
                if owner_pid is not None and not process_exists(owner_pid):
                    shutil.rmtree(entry, ignore_errors=True)


def private_dir_pid(entry: Path) -> int | None:
    """The pid in a private directory's name if it is a real directory of this user, else None."""
    pid_text = entry.name.removeprefix(PRIVATE_DIR_PREFIX).split("-", 1)[0]
    try:
        status = entry.lstat()
    except OSError:
        return None
    if not pid_text.isdigit() or not Path(entry).is_dir() or entry.is_symlink():
        return None
    if status.st_uid != os.getuid():
        return None
    return int(pid_text)


# --- the agent -------------------------------------------------------------------------------


@contextmanager
def key_agent(private_dir: Path, key: str) -> Iterator[tuple[Path, Path]]:
    """An ssh-agent holding `key`; yields its socket and the key's public half (a file)."""
    socket_path = private_dir / AGENT_SOCKET_NAME
    watcher = start_agent(socket_path)
    agent_pid: int | None = None
    try:
        agent_pid = read_agent_pid(watcher, socket_path)
        add_key(socket_path, key)
        public_key = private_dir / "id_key.pub"
        write_private(public_key, listed_public_key(socket_path))
        yield socket_path, public_key
    finally:
        stop_agent(watcher, agent_pid)


def start_agent(socket_path: Path) -> subprocess.Popen[str]:
    try:
        return subprocess.Popen(
            ["ssh-agent", "-a", str(socket_path), "sh", "-c", AGENT_WATCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=agent_env(None),
        )
    except FileNotFoundError:
        raise DeployError(
            "ssh-agent: not found; install the OpenSSH client (apt-get install openssh-client)"
        ) from None


def read_agent_pid(watcher: subprocess.Popen[str], socket_path: Path) -> int:
    """The agent's pid, which its command prints first; a bound wait, so a stuck start fails."""
    stdout = watcher.stdout
    assert stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(AGENT_START_TIMEOUT_S)
    pid_text = lines[0].strip() if lines else ""
    if not pid_text.isdigit() or not socket_path.exists():
        raise DeployError(
            f"ssh-agent did not start ({agent_problem(watcher)}); check the OpenSSH client"
        )
    return int(pid_text)


def agent_problem(watcher: subprocess.Popen[str]) -> str:
    if watcher.poll() is None:
        return f"no answer within {AGENT_START_TIMEOUT_S:.0f} s"
    assert watcher.stderr is not None
    lines = [line.strip() for line in watcher.stderr.read().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {watcher.returncode}"


def add_key(socket_path: Path, key: str) -> None:
    """`ssh-add -` with the key on stdin; no terminal and no askpass, so a passphrase fails."""
    try:
        result = subprocess.run(
            ["ssh-add", "-q", "-"],
            input=key,
            capture_output=True,
            text=True,
            env=agent_env(socket_path),
            timeout=30,
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DeployError("ssh-add did not finish within 30 s; check the OpenSSH client") from None
    if result.returncode != 0:
        raise ConfigError(
            "$CXML_SSH_KEY (the ssh-key input): not a private key OpenSSH can load "
            f"({ssh_add_reason(result.stderr)}); paste the whole key from -----BEGIN to "
            "-----END, without a passphrase"
        )


def ssh_add_reason(stderr: str) -> str:
    """ssh-add's reason in its own words (it never prints key material), without the source."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "rejected"
    reason = lines[-1]
    return reason.split(": ", 1)[1] if reason.startswith("Error loading key") else reason


def listed_public_key(socket_path: Path) -> str:
    result = subprocess.run(
        ["ssh-add", "-L"],
        capture_output=True,
        text=True,
        env=agent_env(socket_path),
        timeout=30,
        check=False,
    )
    keys = [line for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0 or len(keys) != 1:
        raise DeployError("ssh-agent does not list the deploy key it was given; deploy again")
    return keys[0] + "\n"


def agent_env(socket_path: Path | None) -> dict[str, str]:
    """The environment for ssh-agent and ssh-add: this agent only, never a prompt."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID", "SSH_ASKPASS", "DISPLAY")
    }
    environment["SSH_ASKPASS_REQUIRE"] = "never"
    if socket_path is not None:
        environment["SSH_AUTH_SOCK"] = str(socket_path)
    return environment


def stop_agent(watcher: subprocess.Popen[str], agent_pid: int | None) -> None:
    """SIGTERM the agent (it forgets the key and removes its socket), then end its watcher."""
    if agent_pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(agent_pid, signal.SIGTERM)
    for stream in (watcher.stdin, watcher.stdout, watcher.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    try:
        watcher.wait(timeout=5)
    except subprocess.TimeoutExpired:
        watcher.kill()
        watcher.wait(timeout=5)


def credentials_from_args(args: argparse.Namespace) -> AbstractContextManager[SshCredentials]:
    """`credential_files` from the options `add_credential_arguments` adds, falling back to
    $CXML_SSH_KEY and $CXML_KNOWN_HOSTS."""
    return credential_files(
        key_file=args.ssh_key_file,
        key_material=env.get(CXML_SSH_KEY),
        known_hosts=args.known_hosts or env.get(CXML_KNOWN_HOSTS),
        known_hosts_file=args.known_hosts_file,
        accept_new_host_key=args.accept_new_host_key,
    )


def dry_run_credentials(args: argparse.Namespace) -> SshCredentials:
    """The credentials as a dry run names them: the key file given, or where the key material
    would come from; nothing is read and no agent is started."""
    key_label = args.ssh_key_file or (
        f"<key from ${CXML_SSH_KEY}>" if env.get(CXML_SSH_KEY) else None
    )
    return SshCredentials(key_label, DRY_RUN_KNOWN_HOSTS)


def ssh_target(
    creds: SshCredentials, args: argparse.Namespace, host: str, port: int, user: str | None
) -> ssh.SshTarget:
    """How to reach one host with `creds` and the host-key choice of the options
    `add_credential_arguments` adds."""
    return ssh.SshTarget(
        host=host,
        port=port,
        user=user,
        key_file=creds.key_file,
        identity_agent=creds.identity_agent,
        known_hosts_file=creds.known_hosts_file,
        accept_new_host_key=args.accept_new_host_key,
    )


def add_credential_arguments(
    parser: argparse._ActionsContainer, *, hosts: str = "the host"
) -> None:
    """The SSH key and host-key options every command that connects to a host takes."""
    parser.add_argument(
        "--ssh-key-file", help=f"private key file (default: the key in ${CXML_SSH_KEY})"
    )
    parser.add_argument(
        "--known-hosts", help=f"known_hosts lines for {hosts} (default ${CXML_KNOWN_HOSTS})"
    )
    parser.add_argument("--known-hosts-file", help="a known_hosts file to trust")
    parser.add_argument(
        "--accept-new-host-key",
        action="store_true",
        help="trust the host key seen on first connect (warned)",
    )

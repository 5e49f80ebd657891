"""Run a swap detached from the SSH session, so a cancelled client cannot cut it short.

The command the client runs over SSH starts a worker — the same command with `--worker-run ID` —
in a new session with its output in ROOT/runs/ID.log, echoes that log to stderr as it grows,
waits for the worker, and prints the worker's result (ROOT/runs/ID.json) or its error. When the
SSH session dies (Ctrl-C, a cancelled CI job, a dropped network), the echo fails and the
command may die with it; the worker, in its own session and deaf to SIGHUP and SIGPIPE, goes on
to a consistent end: switched with the old release stopped, or rolled back.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cxml.core import files
from cxml.core.errors import EXIT_RUNTIME, CxmlError, DeployError
from cxml.deploy.host.settings import HostSettings

DETACHED_COMMANDS = ("activate", "rollback")
RUN_ID = re.compile(r"[0-9]{8}T[0-9]{6}-[0-9]+")
KEEP_RUNS_S = 7 * 24 * 3600.0
POLL_S = 0.1


def run_detached(settings: HostSettings, arguments: Sequence[str]) -> dict[str, Any]:
    """Start the worker for `arguments`, echo its log until it ends, return its result."""
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    drop_old_runs(settings)
    run_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"
    log_path = settings.runs_dir / f"{run_id}.log"
    argv = [sys.executable, "-m", "cxml.deploy.host", *arguments, f"--worker-run={run_id}"]
    with log_path.open("wb") as log_handle:
        worker = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    follow_log(log_path, worker)
    return read_result(settings, run_id, worker.returncode)


def follow_log(log_path: Path, worker: subprocess.Popen[bytes]) -> None:
    """Copy the worker's log to stderr until the worker ends; a closed stderr stops the copy,
    not the wait (the client is gone, the worker is not)."""
    echo = True
    with log_path.open("rb") as log_handle:
        while True:
            finished = worker.poll() is not None
            chunk = log_handle.read()
            if chunk and echo:
                try:
                    sys.stderr.buffer.write(chunk)
                    sys.stderr.flush()
                except (OSError, ValueError):
                    echo = False
            if finished:
                return
            time.sleep(POLL_S)


def read_result(settings: HostSettings, run_id: str, exit_code: int | None) -> dict[str, Any]:
    result_path = result_file(settings, run_id)
    if not result_path.exists():
        raise DeployError(
            f"the host's deploy worker ended (exit {exit_code}) without a result; its log is "
            f"{settings.runs_dir / (run_id + '.log')}; run `status` to see where the host is"
        )
    outcome = files.read_json(result_path, what="deploy result")
    result_path.unlink(missing_ok=True)
    if outcome.get("ok"):
        result: dict[str, Any] = outcome["result"]
        return result
    raise DeployError(
        str(outcome.get("error")), exit_code=int(outcome.get("exit_code", EXIT_RUNTIME))
    )


def run_as_worker(settings: HostSettings, run_id: str, work: Callable[[], dict[str, Any]]) -> int:
    """The detached side: do the work whatever happens to the SSH session, keep the outcome.

    The error is kept for the command to print, not printed here: the log is echoed to the
    client, and an error printed twice reads as two failures."""
    for deaf_to in (signal.SIGHUP, signal.SIGPIPE, signal.SIGINT):
        signal.signal(deaf_to, signal.SIG_IGN)
    result_path = result_file(settings, run_id)
    try:
        outcome: dict[str, Any] = {"ok": True, "result": work()}
    except CxmlError as exc:
        outcome = {"ok": False, "error": str(exc), "exit_code": exc.exit_code}
    except Exception as exc:  # a bug: its traceback goes to the log, the client gets one line
        traceback.print_exc()
        outcome = {
            "ok": False,
            "error": f"the host's deploy worker failed ({type(exc).__name__}: {exc}); its log "
            f"is {settings.runs_dir / (run_id + '.log')}",
            "exit_code": EXIT_RUNTIME,
        }
    files.write_json(result_path, outcome)
    return 0 if outcome["ok"] else int(outcome["exit_code"])


def result_file(settings: HostSettings, run_id: str) -> Path:
    if RUN_ID.fullmatch(run_id) is None:
        raise DeployError(f"--worker-run {run_id!r}: not a run id; it is set by the host itself")
    return settings.runs_dir / f"{run_id}.json"


def drop_old_runs(settings: HostSettings) -> None:
    cutoff = time.time() - KEEP_RUNS_S
    for path in settings.runs_dir.iterdir():
        if path.is_file() and not path.is_symlink() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)

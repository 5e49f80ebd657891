"""The pre-fork supervisor: several serving processes on one listening socket, stopped together."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import traceback

from cxml.core.console import run_entry_point
from cxml.core.errors import ConfigError
from cxml.serve.app import serve_one
from cxml.serve.metrics import ServiceMetrics
from cxml.serve.settings import ServeSettings


def bind_listener(settings: ServeSettings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((settings.host, settings.port))
    except OSError as exc:
        listener.close()
        raise ConfigError(
            f"cannot listen on {settings.host}:{settings.port} ({exc.strerror}); pick "
            "another --port"
        ) from None
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener


def serve_workers(settings: ServeSettings) -> int:
    """Fork `workers` processes on one listening socket (before torch is imported); supervise them.

    A worker that fails to start (say, a model that does not load) stops the others and its exit
    code becomes this process's; SIGTERM is passed on, and each worker finishes its requests.
    """
    listener = bind_listener(settings)
    metrics = ServiceMetrics()
    children: list[int] = []
    for _ in range(settings.workers):
        pid = os.fork()
        if pid == 0:
            os._exit(_worker_main(settings, listener, metrics))
        children.append(pid)
    listener.close()
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    exit_code = 0
    while children:
        pid, status = os.wait()
        children.remove(pid)
        code = os.waitstatus_to_exitcode(status)
        if code not in (0, -signal.SIGTERM, -signal.SIGINT) and not stopping:
            exit_code = code if code > 0 else 1
            forward(signal.SIGTERM, None)
    return exit_code


def _worker_main(settings: ServeSettings, listener: socket.socket, metrics: ServiceMetrics) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        return run_entry_point(lambda _argv: _serve_and_return(settings, listener, metrics), [])
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _serve_and_return(
    settings: ServeSettings, listener: socket.socket, metrics: ServiceMetrics
) -> int:
    serve_one(settings, listener, metrics)
    return 0

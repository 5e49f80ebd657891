"""The pre-fork supervisor: the model loaded once, several serving processes forked from it (each
on its own socket of one port), stopped together."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import socket
import sys
import traceback

from cxml.core.console import run_entry_point
from cxml.core.errors import ConfigError
from cxml.serve.app import serve_one
from cxml.serve.balance import ConnectionShares
from cxml.serve.metrics import ServiceMetrics
from cxml.serve.service import PredictionService
from cxml.serve.settings import ServeSettings


def bind_listeners(settings: ServeSettings) -> list[socket.socket]:
    """One listening socket per worker, all on the port (SO_REUSEPORT): the kernel spreads new
    connections evenly across them, where one shared socket goes to whichever worker wakes first
    (measured: one worker took every request while the other idled)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    listeners: list[socket.socket] = []
    port = settings.port
    try:
        for _ in range(settings.workers):
            listener = socket.socket(family, socket.SOCK_STREAM)
            listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind((settings.host, port))
            port = listener.getsockname()[1]  # port 0: the others join the one the first got
            listener.listen(2048)
            listener.set_inheritable(True)
    except OSError as exc:
        for listener in listeners:
            listener.close()
        raise ConfigError(
            f"cannot listen on {settings.host}:{settings.port} ({exc.strerror}); pick "
            "another --port"
        ) from None
    return listeners


def serve_workers(settings: ServeSettings) -> int:
    """Load the model once, then fork `workers` processes that share it copy-on-write, each on its
    own socket; supervise them.

    Threads (decoding, inference, torch's pool) start in each worker after the fork. A worker that
    fails (say, while warming up) stops the others and its exit code becomes this process's;
    SIGTERM is passed on, and each worker finishes its requests.
    """
    listeners = bind_listeners(settings)
    metrics = ServiceMetrics()
    try:
        service = PredictionService(settings, metrics)
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    shares = ConnectionShares(len(listeners))  # before the fork: the workers share it
    share_before_fork()
    children: list[int] = []
    for index, listener in enumerate(listeners):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            for other in listeners:
                if other is not listener:
                    other.close()
            os._exit(_worker_main(settings, listener, service, index, shares))
        children.append(pid)
    for listener in listeners:
        listener.close()
    del service  # the workers hold it; the supervisor only waits
    gc.collect()
    release_free_memory()
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


def share_before_fork() -> None:
    """Make what every worker needs once, in the supervisor, so the workers share its pages.

    The web stack is imported here rather than in each worker after the fork (one copy instead of
    one per worker); freed heap goes back to the kernel before it is copied; and gc.freeze() moves
    the objects alive now out of the collector's sight, so a worker's collections do not write to
    them (a write un-shares the whole page).
    """
    import fastapi  # noqa: F401
    import PIL.PngImagePlugin  # noqa: F401
    import starlette.formparsers  # noqa: F401
    import uvicorn.loops.uvloop
    import uvicorn.protocols.http.httptools_impl  # noqa: F401

    gc.collect()
    release_free_memory()
    gc.freeze()


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the kernel (glibc's malloc_trim; elsewhere nothing)."""
    # the process's own symbols (libc among them): find_library would run ldconfig
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def _worker_main(
    settings: ServeSettings,
    listener: socket.socket,
    service: PredictionService,
    index: int,
    shares: ConnectionShares,
) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        return run_entry_point(
            lambda _argv: _serve_and_return(listener, service, index, shares), []
        )
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _serve_and_return(
    listener: socket.socket, service: PredictionService, index: int, shares: ConnectionShares
) -> int:
    serve_one(service.settings, listener, service=service, worker=index, shares=shares)
    return 0

"""One deploy at a time per host: an flock on ROOT/deploy.lock that names its holder."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from cxml.core.errors import DeployError
from cxml.deploy.host.progress import log, now_iso
from cxml.deploy.host.settings import HostSettings


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

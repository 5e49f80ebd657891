"""Whether a process (not necessarily this one's child) is still running."""

from __future__ import annotations

import os
from pathlib import Path


def process_exists(pid: int) -> bool:
    """`pid` has not exited: it answers signal 0 and is not a zombie (an exited orphan some
    container inits never reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return not is_zombie(pid)


def is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[-1].split()
    return bool(fields) and fields[0] == "Z"

"""git at the edges: the repository's top, whether a ref exists, a file at a ref, HEAD."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cxml.core import env


def run_git(args: list[str], cwd: Path, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=timeout
    )


def git_toplevel(start: str | Path = ".") -> Path | None:
    try:
        result = run_git(["rev-parse", "--show-toplevel"], Path(start))
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return Path(result.stdout.strip()) if result.returncode == 0 else None


def ref_exists(ref: str, cwd: str | Path = ".") -> bool:
    try:
        result = run_git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], Path(cwd))
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def git_show(path: str | Path, ref: str) -> str | None:
    """The contents of `path` (relative to the current directory) at git `ref`, or None."""
    top = git_toplevel()
    if top is None:
        return None
    absolute = Path(path).resolve()
    try:
        relative = absolute.relative_to(top.resolve())
    except ValueError:
        return None
    result = run_git(["show", f"{ref}:{relative.as_posix()}"], top)
    return result.stdout if result.returncode == 0 else None


def current_commit() -> str | None:
    """The commit being built: `GITHUB_SHA` in Actions, else the checkout's HEAD, else None."""
    if env.get(env.GITHUB_SHA):
        return env.get(env.GITHUB_SHA)
    try:
        result = run_git(["rev-parse", "HEAD"], Path("."), timeout=10)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None

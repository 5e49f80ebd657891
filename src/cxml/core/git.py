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


def remote_default_branch(remote: str = "origin", cwd: str | Path = ".") -> str | None:
    """`origin/<default>` as the clone recorded it (`refs/remotes/origin/HEAD`), or None."""
    try:
        result = run_git(
            ["symbolic-ref", "--quiet", "--short", f"refs/remotes/{remote}/HEAD"],
            Path(cwd),
            timeout=10,
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    name = result.stdout.strip()
    return name if result.returncode == 0 and name else None


def is_shallow(cwd: str | Path = ".") -> bool:
    """True in a shallow clone (actions/checkout's default depth 1): other refs' history is absent."""
    try:
        result = run_git(["rev-parse", "--is-shallow-repository"], Path(cwd), timeout=10)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip() == "true"


def current_branch(cwd: str | Path = ".") -> str | None:
    """The checked-out branch's name; None on a detached HEAD (a PR's merge commit in Actions)."""
    try:
        result = run_git(["symbolic-ref", "--quiet", "--short", "HEAD"], Path(cwd), timeout=10)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    name = result.stdout.strip()
    return name if result.returncode == 0 and name else None

"""Where the baseline comes from: a file at a git ref, or the registry's `champion`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cxml.core import env
from cxml.core.errors import ConfigError, RecordError
from cxml.core.git import (
    current_branch,
    git_show,
    is_shallow,
    ref_exists,
    remote_default_branch,
)
from cxml.records.gate import NO_BASELINE, BaselineInfo
from cxml.records.metrics import parse_metrics_text

ChampionLookup = Callable[[], dict[str, Any] | None]
"""Returns the registry champion's metrics (or None); called only when the registry is asked."""


SHALLOW_FIX = "the checkout is shallow: use actions/checkout with fetch-depth: 0"
SPECS = "auto, champion, none, git:<ref> or a git ref"


def default_base_refs() -> list[str]:
    """The refs tried in order for `baseline: auto`, the way git finds a default branch:
    the PR's base branch, the remote's default (`origin/HEAD`), then main and master."""
    refs: list[str] = []
    base = env.get(env.GITHUB_BASE_REF)
    if base:
        refs += [f"origin/{base}", base]
    remote_default = remote_default_branch()
    # A clone of the PR's own branch records it as origin/HEAD: that is no base to compare with.
    if remote_default and remote_default != f"origin/{current_branch()}":
        refs.append(remote_default)
    refs += ["origin/main", "origin/master", "main", "master"]
    return list(dict.fromkeys(refs))


def check_baseline_spec(spec: str, *, label: str = "evaluate.baseline") -> None:
    """The baseline setting's syntax, checked when params are loaded (refs are checked later:
    a shallow checkout may not have them yet)."""
    text = spec.strip()
    if not text:
        raise ConfigError(f"{label}: empty; use {SPECS}")
    ref = text[4:] if text.startswith("git:") else text
    if not ref:
        raise ConfigError(f"{label}: git: needs a ref, e.g. git:origin/main")
    if any(c.isspace() or ord(c) < 32 for c in ref) or ref.startswith("-") or ".." in ref:
        raise ConfigError(f"{label}: {spec!r} is not a git ref; use {SPECS}")


def missing_baseline_fix() -> str:
    """How to get a baseline where there is none: fetch history, or commit the metrics."""
    if is_shallow():
        return SHALLOW_FIX
    return "commit the metrics file on the base branch, or set evaluate.baseline"


def metrics_at_ref(metrics_path: str | Path, ref: str) -> dict[str, Any] | None:
    text = git_show(metrics_path, ref)
    if text is None:
        return None
    try:
        return parse_metrics_text(text, label=f"{metrics_path} at {ref}", fix="fix it on that ref")
    except RecordError:  # unusable at that ref (any way, however deep): no baseline from it
        return None


def resolve_baseline(
    spec: str,
    metrics_path: str | Path,
    *,
    champion_lookup: ChampionLookup | None = None,
) -> BaselineInfo:
    """Turn `auto | git:<ref> | champion | none` into baseline metrics.

    `champion_lookup` is a zero-argument callable returning the champion's metrics (or None);
    it is only called when the registry is asked, so git-only runs never import mlflow.
    """
    spec = spec.strip()
    if spec == "none":
        return NO_BASELINE
    if spec.startswith("git:"):
        ref = spec[4:]
        if not ref:
            raise ConfigError("baseline: git: needs a ref, e.g. git:origin/main")
        return _baseline_from_git(ref, metrics_path, required=True)
    if spec == "champion":
        return _baseline_from_champion(champion_lookup)
    if spec == "auto":
        return _auto_baseline(metrics_path, champion_lookup)
    if ref_exists(spec):  # a bare ref, as in `baseline: main`
        return _baseline_from_git(spec, metrics_path, required=True)
    raise ConfigError(
        f"baseline: unknown value {spec!r}: not auto, champion, none or a git ref here; "
        "use one of those, or fetch the ref first (actions/checkout with fetch-depth: 0)"
    )


def _auto_baseline(
    metrics_path: str | Path, champion_lookup: ChampionLookup | None
) -> BaselineInfo:
    """The first base branch that has the metrics file, else the champion, else none (and why)."""
    candidates = default_base_refs()
    existing = [ref for ref in candidates if ref_exists(ref)]
    for ref in existing:
        found = _baseline_from_git(ref, metrics_path, required=False)
        if found.metrics is not None:
            return found
    champion = _baseline_from_champion(champion_lookup)
    if champion.metrics is not None:
        return champion
    name = Path(metrics_path).as_posix()
    where = (
        f"{name} is not committed at {' / '.join(existing)}"
        if existing
        else f"no base branch found (tried {', '.join(candidates)})"
    )
    shallow = f"; {SHALLOW_FIX}" if is_shallow() else ""
    return BaselineInfo(
        source="none",
        description=f"no baseline: {where} and the registry has no champion{shallow}",
        metrics=None,
    )


def _baseline_from_git(ref: str, metrics_path: str | Path, *, required: bool) -> BaselineInfo:
    if required and not ref_exists(ref):
        shallow = " (the checkout is shallow)" if is_shallow() else ""
        raise ConfigError(
            f"baseline: git ref {ref!r} not found{shallow}; fetch it (actions/checkout with "
            "fetch-depth: 0) or choose another ref"
        )
    metrics = metrics_at_ref(metrics_path, ref)
    where = f"{Path(metrics_path).as_posix()} at {ref}"
    if metrics is None:
        return BaselineInfo(
            source=f"git:{ref}", ref=ref, description=f"no baseline: no {where}", metrics=None
        )
    return BaselineInfo(source=f"git:{ref}", ref=ref, description=where, metrics=metrics)


def _baseline_from_champion(champion_lookup: ChampionLookup | None) -> BaselineInfo:
    metrics = champion_lookup() if champion_lookup is not None else None
    if metrics is None:
        return BaselineInfo(
            source="champion", description="no baseline: the registry has no champion", metrics=None
        )
    return BaselineInfo(source="champion", description="registry alias champion", metrics=metrics)

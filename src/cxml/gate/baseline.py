"""Where the baseline comes from: a file at a git ref, or the registry's `champion`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cxml.core import env
from cxml.core.errors import ConfigError, RecordError
from cxml.core.git import git_show, ref_exists
from cxml.records.gate import NO_BASELINE, BaselineInfo
from cxml.records.metrics import parse_metrics_text

ChampionLookup = Callable[[], dict[str, Any] | None]
"""Returns the registry champion's metrics (or None); called only when the registry is asked."""


def default_base_refs() -> list[str]:
    """The refs tried in order for `baseline: auto`: the PR's base branch, origin/main, main."""
    refs: list[str] = []
    base = env.get(env.GITHUB_BASE_REF)
    if base:
        refs += [f"origin/{base}", base]
    refs += ["origin/main", "main"]
    return list(dict.fromkeys(refs))


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
        for ref in default_base_refs():
            if ref_exists(ref):
                found = _baseline_from_git(ref, metrics_path, required=False)
                if found.metrics is not None:
                    return found
        champion = _baseline_from_champion(champion_lookup)
        if champion.metrics is not None:
            return champion
        return BaselineInfo(
            source="none",
            description=(
                f"no baseline: {Path(metrics_path).as_posix()} is not committed at "
                f"{' / '.join(default_base_refs())} and the registry has no champion"
            ),
            metrics=None,
        )
    if ref_exists(spec):  # a bare ref, as in `baseline: main`
        return _baseline_from_git(spec, metrics_path, required=True)
    raise ConfigError(
        f"baseline: unknown value {spec!r}: not auto, champion, none or a git ref here; "
        "use one of those, or fetch the ref first (actions/checkout with fetch-depth: 0)"
    )


def _baseline_from_git(ref: str, metrics_path: str | Path, *, required: bool) -> BaselineInfo:
    if required and not ref_exists(ref):
        raise ConfigError(
            f"baseline: git ref {ref!r} not found; fetch it (actions/checkout with fetch-depth: 0) "
            "or choose another ref"
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

"""The host's record of its releases: state.json, its history, and the current/previous links."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cxml.core import files
from cxml.core.errors import RecordError
from cxml.deploy.host.progress import now_iso
from cxml.deploy.host.settings import HostSettings
from cxml.records.release import is_release_name

HISTORY_LENGTH = 50


@dataclass
class HostState:
    current: str | None = None
    previous: str | None = None
    releases: list[str] = field(default_factory=list)
    """Installed releases, oldest first (the order pruning keeps the newest of)."""
    history: list[dict[str, Any]] = field(default_factory=list)


def read_state(settings: HostSettings) -> HostState:
    if not settings.state_file.exists():
        return HostState()
    data = files.read_json(settings.state_file, what="host state")
    state = HostState(
        current=data.get("current"),
        previous=data.get("previous"),
        releases=list(data.get("releases", [])),
        history=list(data.get("history", [])),
    )
    named = [state.current, state.previous, *state.releases]
    for name in named:
        if name is not None and not (isinstance(name, str) and is_release_name(name)):
            raise RecordError(
                f"{settings.state_file}: {name!r} is not a release name; the file was changed "
                "by hand, fix it or move it away"
            )
    return state


def write_state(settings: HostSettings, state: HostState) -> None:
    files.write_json(settings.state_file, asdict(state))
    for name, release in (("current", state.current), ("previous", state.previous)):
        link = settings.root / name
        temporary = settings.root / f".{name}.link"
        temporary.unlink(missing_ok=True)
        if release is None:
            link.unlink(missing_ok=True)
            continue
        temporary.symlink_to(Path("releases") / release)
        os.replace(temporary, link)


def record_event(state: HostState, action: str, release: str, result: str, **details: Any) -> None:
    event = {"at": now_iso(), "action": action, "release": release, "result": result}
    event.update({k: v for k, v in details.items() if v is not None})
    state.history = [*state.history, event][-HISTORY_LENGTH:]


def releases_to_prune(state: HostState, keep: int) -> list[str]:
    """The oldest installed releases beyond the newest `keep`; never the current or previous one."""
    protected = {state.current, state.previous}
    kept = state.releases[-keep:] if keep > 0 else []
    return [r for r in state.releases if r not in kept and r not in protected]


def after_switch(state: HostState, new_release: str) -> HostState:
    """State once `new_release` serves: the old current becomes previous."""
    previous = state.current if state.current != new_release else state.previous
    releases = [r for r in state.releases if r != new_release] + [new_release]
    return HostState(
        current=new_release, previous=previous, releases=releases, history=list(state.history)
    )

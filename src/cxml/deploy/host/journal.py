"""The swap's journal: ROOT/journal.json says how far a swap got, so an interrupted one is ended.

A swap writes the journal before it starts the new service and updates it at each step (new
service started, state switched); it removes the journal once the old service is stopped. If the
host's deploy process dies on the way (killed, the machine rebooted), the next `activate`,
`rollback` or `status` finds the journal under the deploy lock and replays it: a swap whose switch
was recorded is finished (the old release's service stopped), any other is undone (the new
service stopped, the upstream file put back).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any

from cxml.core import files
from cxml.core.errors import RecordError
from cxml.deploy.host.progress import log
from cxml.deploy.host.proxy import restore_proxy
from cxml.deploy.host.services import Service, forget_service, load_service, stop_service
from cxml.deploy.host.settings import HostSettings
from cxml.deploy.host.state import read_state, record_event, write_state
from cxml.records.release import is_release_name

STEPS = ("starting", "started", "switched")


@dataclass(frozen=True)
class Journal:
    action: str
    release: str
    step: str
    old: Service | None = None
    new: Service | None = None
    proxy_before: str | None = None


def write_journal(settings: HostSettings, journal: Journal) -> None:
    data = asdict(journal)
    files.write_json(settings.journal_file, data)


def read_journal(settings: HostSettings) -> Journal | None:
    if not settings.journal_file.exists():
        return None
    data = files.read_json(settings.journal_file, what="deploy journal")
    try:
        journal = Journal(
            action=str(data["action"]),
            release=str(data["release"]),
            step=str(data["step"]),
            old=service_of(data.get("old")),
            new=service_of(data.get("new")),
            proxy_before=data.get("proxy_before"),
        )
    except (KeyError, TypeError) as exc:
        raise RecordError(
            f"{settings.journal_file}: not a deploy journal ({exc}); it was changed by hand, "
            "move it away and check the host's services with `status`"
        ) from None
    if not is_release_name(journal.release) or journal.step not in STEPS:
        raise RecordError(
            f"{settings.journal_file}: names release {journal.release!r} at step "
            f"{journal.step!r}; it was changed by hand, move it away"
        )
    return journal


def service_of(data: Any) -> Service | None:
    return None if data is None else Service(**data)


def clear_journal(settings: HostSettings) -> None:
    settings.journal_file.unlink(missing_ok=True)


def replay_journal(settings: HostSettings) -> str | None:
    """End a swap that was interrupted (call under the deploy lock); says what it did, if any.

    A canary under way refuses the caller while its client holds its lease, and one whose client
    is gone is aborted first (cxml.deploy.host.canary: its record is this journal's other half).
    """
    from cxml.deploy.host.canary import settle_canary  # canary imports this module

    journal = read_journal(settings)
    settled = settle_canary(settings, journal)
    if journal is None:
        return settled
    state = read_state(settings)
    if journal.step == "switched" and state.current == journal.release:
        done = finish_swap(settings, journal)
    else:
        done = undo_swap(settings, journal)
        state = read_state(settings)
        record_event(state, journal.action, journal.release, "interrupted, rolled back")
        write_state(settings, state)
    clear_journal(settings)
    log(done)
    return f"{settled}; {done}" if settled else done


def finish_swap(settings: HostSettings, journal: Journal) -> str:
    """The switch was recorded: stop the old release's service, as the swap would have."""
    old = journal.old
    if old is not None and old.release != journal.release:
        stop_service(settings, old)
        recorded = load_service(settings, old.release)
        if recorded is None or recorded == old:
            forget_service(settings, old.release)
        return (
            f"finished the interrupted {journal.action} of {journal.release}: stopped release "
            f"{old.release} (port {old.port})"
        )
    return f"finished the interrupted {journal.action} of {journal.release}"


def undo_swap(settings: HostSettings, journal: Journal) -> str:
    """The switch was not recorded: stop the new service and put the upstream file back."""
    if journal.new is not None:
        stop_service(settings, journal.new, grace_s=5.0)
        recorded = load_service(settings, journal.release)
        if recorded == journal.new:
            forget_service(settings, journal.release)
    with contextlib.suppress(OSError):
        restore_proxy(settings, journal.proxy_before)
    return (
        f"undid the interrupted {journal.action} of {journal.release}: its service stopped, "
        "the proxy left on the release that was serving"
    )

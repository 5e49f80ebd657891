"""The host agent (`python -m cxml.deploy.host`), fast part: state, pruning, the lock, verified installs."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cxml.core.errors import ConfigError, DeployError, RecordError
from cxml.deploy.host.command import main, parse_args
from cxml.deploy.host.docker import build_digest, content_tag, dockerfile_sources
from cxml.deploy.host.health import wait_until_serving
from cxml.deploy.host.lock import deploy_lock
from cxml.deploy.host.proxy import proxy_check_command, upstream_config
from cxml.deploy.host.releases import (
    activate,
    discard,
    install_upload,
    make_world_readable,
    prepare,
    rollback,
    status,
)
from cxml.deploy.host.services import Service, process_start_time, save_service, service_alive
from cxml.deploy.host.settings import HostSettings
from cxml.deploy.host.state import (
    HostState,
    after_switch,
    read_state,
    releases_to_prune,
    write_state,
)
from cxml.records import release as bundle
from tests.support.deploy import make_model_file


def test_switch_makes_the_old_current_previous() -> None:
    state = HostState(current="1-a", previous=None, releases=["1-a"])
    after = after_switch(state, "2-b")
    assert (after.current, after.previous, after.releases) == ("2-b", "1-a", ["1-a", "2-b"])
    back = after_switch(after, "1-a")  # a rollback moves the release to the end
    assert (back.current, back.previous, back.releases) == ("1-a", "2-b", ["2-b", "1-a"])


@pytest.mark.parametrize(
    ("releases", "current", "previous", "keep", "pruned"),
    [
        (["1", "2", "3", "4"], "4", "3", 2, ["1", "2"]),
        (["1", "2", "3"], "3", "2", 5, []),
        (
            ["1", "2", "3", "4"],
            "2",
            "1",
            2,
            [],
        ),  # after rollbacks: current/previous are never removed
        (["1", "2", "3", "4", "5"], "5", "1", 3, ["2"]),
    ],
)
def test_pruning_keeps_the_newest_and_never_current_or_previous(
    releases: list[str], current: str, previous: str, keep: int, pruned: list[str]
) -> None:
    state = HostState(current=current, previous=previous, releases=releases)
    assert releases_to_prune(state, keep) == pruned


def test_upstream_config_names_the_port() -> None:
    text = upstream_config(4321)
    assert "upstream cxml_serving {" in text and "server 127.0.0.1:4321;" in text


def test_state_round_trip_and_symlinks(tmp_path: Path) -> None:
    settings = HostSettings(root=tmp_path)
    (tmp_path / "releases" / "2-b").mkdir(parents=True)
    state = HostState(
        current="2-b", previous="1-a", releases=["1-a", "2-b"], history=[{"action": "deploy"}]
    )
    write_state(settings, state)
    assert read_state(settings) == state
    assert (tmp_path / "current").resolve() == (tmp_path / "releases" / "2-b").resolve()
    assert (tmp_path / "previous").is_symlink()


def test_a_second_deploy_waits_for_the_lock_then_fails_clearly(tmp_path: Path) -> None:
    holder = HostSettings(root=tmp_path)
    waiter = HostSettings(root=tmp_path, lock_timeout_s=0.5)
    with deploy_lock(holder, "deploy of 1-a"):
        started = time.monotonic()
        with pytest.raises(DeployError) as error, deploy_lock(waiter, "deploy of 2-b"):
            pass
        assert time.monotonic() - started >= 0.5
    message = str(error.value)
    assert "deploy of 1-a" in message and "another deploy is running" in message


def test_a_waiting_deploy_goes_ahead_once_the_lock_is_free(tmp_path: Path) -> None:
    holder = HostSettings(root=tmp_path)
    order: list[str] = []

    def second() -> None:
        with deploy_lock(HostSettings(root=tmp_path, lock_timeout_s=10), "second"):
            order.append("second")

    with deploy_lock(holder, "first"):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        order.append("first")
    thread.join(timeout=10)
    assert order == ["first", "second"]


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = make_model_file(tmp_path_factory.mktemp("m") / "model.pt", seed=2)
    digest = bundle.sha256_file(model)
    info = bundle.ReleaseInfo(
        release=bundle.release_name("2", digest),
        model_version="2",
        model_name=None,
        run_id=None,
        tracking_uri=None,
        git_commit=None,
        created_at="2026-11-25T11:00:00Z",
        model_sha256=digest,
        model_metadata=bundle.read_model_metadata(model),
    )
    return bundle.save_bundle(tmp_path_factory.mktemp("b") / info.release, model, info).directory


def stage(settings: HostSettings, source: Path, name: str = "upload") -> Path:
    settings.incoming_dir.mkdir(parents=True, exist_ok=True)
    staging = settings.incoming_dir / f"{source.name}.{name}"
    shutil.copytree(source, staging)
    return staging


def test_a_verified_upload_is_renamed_into_releases(tmp_path: Path, uploaded: Path) -> None:
    settings = HostSettings(root=tmp_path)
    settings.releases_dir.mkdir(parents=True)
    staging = stage(settings, uploaded)
    install_upload(settings, uploaded.name, staging)
    assert not staging.exists()
    bundle.verify_bundle(settings.releases_dir / uploaded.name)
    again = stage(settings, uploaded, "again")  # the same release uploaded twice: kept once
    install_upload(settings, uploaded.name, again)
    assert not again.exists()


@pytest.mark.parametrize("damage", ["truncated model", "no manifest", "wrong release name"])
def test_a_partial_or_wrong_upload_never_becomes_a_release(
    tmp_path: Path, uploaded: Path, damage: str
) -> None:
    settings = HostSettings(root=tmp_path)
    settings.releases_dir.mkdir(parents=True)
    staging = stage(settings, uploaded)
    name = uploaded.name
    if damage == "truncated model":
        model = staging / "model.pt"
        model.write_bytes(model.read_bytes()[:5000])
    elif damage == "no manifest":
        (staging / "SHA256SUMS").unlink()
    else:
        name = "9-000000000000"
    with pytest.raises(DeployError, match="deploy again"):
        install_upload(settings, name, staging)
    assert not staging.exists()
    assert list(settings.releases_dir.iterdir()) == []


def test_uploads_outside_incoming_are_refused(tmp_path: Path, uploaded: Path) -> None:
    settings = HostSettings(root=tmp_path)
    with pytest.raises(ConfigError, match="must be under"):
        install_upload(settings, uploaded.name, uploaded)
    assert uploaded.exists()


def test_a_link_in_an_upload_is_refused_and_its_target_keeps_its_mode(
    tmp_path: Path, uploaded: Path
) -> None:
    settings = HostSettings(root=tmp_path / "root")
    settings.releases_dir.mkdir(parents=True)
    staging = stage(settings, uploaded)
    secret = tmp_path / "shadow"  # as root, the host would make this world-readable
    shutil.move(staging / "model.pt", secret)
    secret.chmod(0o600)
    (staging / "model.pt").symlink_to(secret)  # same bytes: its checksum matches
    with pytest.raises(DeployError, match=r"model\.pt is a link"):
        install_upload(settings, uploaded.name, staging)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert not staging.exists() and secret.exists()
    assert list(settings.releases_dir.iterdir()) == []


def test_permissions_are_changed_without_following_a_link(tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root only")
    secret.chmod(0o600)
    upload = tmp_path / "upload"
    upload.mkdir(mode=0o700)
    (upload / "model.pt").write_text("weights")
    (upload / "release.json").symlink_to(secret)  # swapped in after the checksums were checked
    with pytest.raises(DeployError, match=r"release\.json: is a symbolic link"):
        make_world_readable(upload)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    linked_dir = tmp_path / "linked"
    linked_dir.symlink_to(upload)
    with pytest.raises(DeployError, match="symbolic link"):
        make_world_readable(linked_dir)


def test_a_planted_link_in_incoming_is_removed_itself_never_its_target(tmp_path: Path) -> None:
    settings = HostSettings(root=tmp_path / "root")
    prepare(settings)
    other_upload = settings.incoming_dir / "1-abc.other"
    other_upload.mkdir()
    (other_upload / "model.pt").write_text("another deploy's upload")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("not the host's to remove")
    for name, target in (("2-abc.n1", other_upload), ("3-abc.n2", outside)):
        (settings.incoming_dir / name).symlink_to(target)
        main(
            [
                "discard",
                "--staging",
                str(settings.incoming_dir / name),
                "--root",
                str(settings.root),
            ]
        )
        assert not (settings.incoming_dir / name).is_symlink()
    assert (other_upload / "model.pt").exists() and (outside / "keep").exists()
    with pytest.raises(ConfigError, match="must be under"):
        discard(settings, settings.incoming_dir / ".." / "releases")
    dangling = settings.incoming_dir / "4-abc.n3"
    dangling.symlink_to(tmp_path / "nowhere")
    os.utime(dangling, (0, 0), follow_symlinks=False)
    prepare(settings)  # drops stale uploads: a dangling link is one, not a crash
    assert not dangling.is_symlink()


@pytest.mark.parametrize("name", ["../..", "/etc", "a/b", 5])
def test_a_state_file_naming_a_path_is_refused(tmp_path: Path, name: object) -> None:
    settings = HostSettings(root=tmp_path)
    settings.state_file.write_text(json.dumps({"current": "1-a", "previous": name, "releases": []}))
    with pytest.raises(RecordError, match="not a release name"):
        read_state(settings)


def test_zombies_and_reused_pids_count_as_stopped() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = process_start_time(child.pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process_start_time(child.pid) is not None:
        time.sleep(0.05)  # exited but not reaped: a zombie
    assert started is not None and process_start_time(child.pid) is None
    child.wait(timeout=30)
    service = Service(release="r", mode="process", port=1, pid=child.pid, pid_start=started)
    assert not service_alive(HostSettings(root=Path("/nonexistent")), service)


def test_status_and_rollback_without_previous(tmp_path: Path) -> None:
    settings = HostSettings(root=tmp_path)
    assert status(settings)["current"] is None
    with pytest.raises(DeployError, match="nothing to roll back to"):
        rollback(settings)


class FakeService(http.server.BaseHTTPRequestHandler):
    """Healthy, but reports another release on /version."""

    def do_GET(self) -> None:
        body = json.dumps({"status": "ok", "release": "1-old"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_service_reporting_the_wrong_release_fails_the_health_check(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        service = Service(release="2-new", mode="process", port=port, pid=os.getpid(),
                                      pid_start=process_start_time(os.getpid()))  # fmt: skip
        with pytest.raises(DeployError, match="reports release '1-old'"):
            wait_until_serving(HostSettings(root=tmp_path, health_timeout_s=5), service)
    finally:
        server.shutdown()


# --- the proxy check -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reload", "check", "expected"),
    [
        ("nginx -s reload", None, ("nginx", "-t")),
        ("/usr/sbin/nginx -p /srv/px -c /srv/px/nginx.conf -s reload", None,
         ("/usr/sbin/nginx", "-p", "/srv/px", "-c", "/srv/px/nginx.conf", "-t")),
        ("sudo nginx -s reload", None, ("sudo", "nginx", "-t")),
        ("systemctl reload nginx", None, None),  # not an nginx -s reload: nothing to derive
        ("systemctl reload nginx", "sudo nginx -t", ("sudo", "nginx", "-t")),
        ("nginx -s reload", "none", None),
    ],
)  # fmt: skip
def test_the_proxy_check_is_nginx_t_with_the_reload_commands_options(
    reload: str, check: str | None, expected: tuple[str, ...] | None
) -> None:
    args = parse_args(
        ["activate", "--root", "/srv/cxml", "--proxy-reload", reload]
        + (["--proxy-check", check] if check else [])
    )
    settings = HostSettings.from_args(args)
    assert proxy_check_command(settings) == expected


# --- the serving image -----------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def test_the_dockerfile_sources_are_what_it_copies_from_the_context() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert dockerfile_sources(text) == [
        "pyproject.toml", "README.md", ".ci/constraints.txt", "src",
    ]  # fmt: skip
    other = 'COPY --chown=1:1 a b /x/\nCOPY --from=build /wheels /w\nADD ["c d", "/e"]\nCOPY f \\\n  g /h\n'
    assert dockerfile_sources(other) == ["a", "b", "c d", "f", "g"]


@pytest.mark.parametrize(
    ("image", "tagged"),
    [
        ("cxml-serve:latest", "cxml-serve:latest-0123456789ab"),
        ("cxml-serve", "cxml-serve:latest-0123456789ab"),
        ("localhost:5000/team/cxml-serve", "localhost:5000/team/cxml-serve:latest-0123456789ab"),
        ("localhost/cxml-serve:test", "localhost/cxml-serve:test-0123456789ab"),
        ("cxml-serve@sha256:" + "f" * 64, "cxml-serve@sha256:" + "f" * 64),
    ],
)
def test_the_image_tag_carries_the_build_digest(image: str, tagged: str) -> None:
    assert content_tag(image, "0123456789abcdef" * 4) == tagged


def test_a_changed_package_or_dockerfile_gives_a_new_image_tag(tmp_path: Path) -> None:
    context = tmp_path / "context"
    for name in ("Dockerfile", "pyproject.toml", "README.md"):
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, context / name)
    (context / ".ci").mkdir()
    (context / ".ci" / "constraints.txt").write_text("torch==2.14.1\n")
    (context / "src" / "cxml").mkdir(parents=True)
    serve_py = context / "src" / "cxml" / "serve.py"
    serve_py.write_text("VERSION = 1\n")

    def tag(*build_args: str) -> str:
        digest = build_digest(context, build_args)
        return content_tag("cxml-serve:latest", digest)

    first = tag()
    assert tag() == first  # the same inputs, the same image
    (context / "src" / "cxml" / "__pycache__").mkdir()
    (context / "src" / "cxml" / "__pycache__" / "serve.cpython-311.pyc").write_bytes(b"\0")
    (context / "notes.txt").write_text("not copied into the image")
    assert tag() == first  # caches and files the Dockerfile does not copy change nothing
    serve_py.write_text("VERSION = 2\n")
    second = tag()
    assert second != first
    assert tag("BASE_IMAGE=localhost/base:2") != second
    (context / "Dockerfile").write_text((REPO / "Dockerfile").read_text() + "# changed\n")
    assert tag() not in (first, second)


def test_a_failed_image_build_is_rolled_back_and_the_old_service_keeps_running(
    tmp_path: Path, uploaded: Path
) -> None:
    # `false` stands in for a docker CLI whose every command fails: no image, and the build fails.
    context = tmp_path / "context"
    context.mkdir()
    shutil.copy(REPO / "Dockerfile", context / "Dockerfile")
    settings = HostSettings(
        root=tmp_path / "root", mode="docker", docker=("false",), docker_build_context=context
    )
    old = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        prepare(settings)
        old_service = Service(
            release="1-old", mode="process", port=1, pid=old.pid,
            pid_start=process_start_time(old.pid),
        )  # fmt: skip
        save_service(settings, old_service)
        write_state(settings, HostState(current="1-old", releases=["1-old"]))
        with pytest.raises(DeployError) as error:
            activate(settings, uploaded.name, stage(settings, uploaded), None)
        message = str(error.value)
        assert "`false build -t cxml-serve:latest-" in message
        assert message.endswith("rolled back, release 1-old still serving")
        state = read_state(settings)
        assert state.current == "1-old"
        assert state.history[-1]["result"] == "rolled back"
        assert state.history[-1]["release"] == uploaded.name
        assert service_alive(settings, old_service)
    finally:
        old.kill()
        old.wait(timeout=30)


@pytest.mark.parametrize(
    ("argv", "phrase"),
    [
        (["activate"], "activate needs --release"),
        (["activate", "--release", "../../etc"], "not a release name"),
        (["discard"], "discard needs --staging"),
        (["status", "--keep", "1"], "--keep: must be at least 2"),
    ],
)
def test_bad_host_arguments_are_config_errors(tmp_path: Path, argv: list[str], phrase: str) -> None:
    with pytest.raises(ConfigError, match=phrase):
        main([*argv, "--root", str(tmp_path)])


# --- the journal, orphans and the detached worker (issue 12) ---------------------------------


def fake_serve(settings: HostSettings, release: str) -> subprocess.Popen[bytes]:
    """A process that looks like `cxml serve` of `release` under this root, in its own session."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "-m", "cxml.serve",
         "--bundle", str(settings.releases_dir / release)],
        start_new_session=True,
    )  # fmt: skip


def service_of(process: subprocess.Popen[bytes], release: str, port: int = 1) -> Service:
    return Service(
        release=release, mode="process", port=port, pid=process.pid,
        pid_start=process_start_time(process.pid),
    )  # fmt: skip


def reap(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        process.kill()
        process.wait(timeout=30)


def test_status_finishes_a_swap_whose_switch_was_recorded(tmp_path: Path) -> None:
    from cxml.deploy.host.journal import Journal, write_journal

    settings = HostSettings(root=tmp_path / "root")
    prepare(settings)
    old, new = fake_serve(settings, "1-old"), fake_serve(settings, "2-new")
    try:
        old_service, new_service = service_of(old, "1-old"), service_of(new, "2-new", 2)
        save_service(settings, old_service)
        save_service(settings, new_service)
        write_state(
            settings, HostState(current="2-new", previous="1-old", releases=["1-old", "2-new"])
        )
        write_journal(settings, Journal("deploy", "2-new", "switched", old_service, new_service))
        report = status(settings)  # the deploy died draining: status ends it
        assert not service_alive(settings, old_service) and service_alive(settings, new_service)
        assert [s["release"] for s in report["services"]] == ["2-new"]
        assert report["orphans"] == [] and report["serving"] is True
        assert not settings.journal_file.exists()
    finally:
        reap(old, new)


def test_the_next_deploy_undoes_a_swap_cut_short_before_its_switch(tmp_path: Path) -> None:
    from cxml.deploy.host.journal import Journal, replay_journal, write_journal

    upstream = tmp_path / "upstream.conf"
    upstream.write_text(upstream_config(2))  # switched to the new port, not yet recorded
    settings = HostSettings(root=tmp_path / "root", proxy_config=upstream, proxy_reload=("true",))
    prepare(settings)
    old, new = fake_serve(settings, "1-old"), fake_serve(settings, "2-new")
    try:
        old_service, new_service = service_of(old, "1-old"), service_of(new, "2-new", 2)
        save_service(settings, old_service)
        write_state(settings, HostState(current="1-old", releases=["1-old"]))
        write_journal(
            settings,
            Journal("deploy", "2-new", "started", old_service, new_service, upstream_config(1)),
        )
        with deploy_lock(settings, "test"):
            done = replay_journal(settings)
        assert done is not None and "undid the interrupted deploy of 2-new" in done
        assert service_alive(settings, old_service) and not service_alive(settings, new_service)
        assert upstream.read_text() == upstream_config(1)
        state = read_state(settings)
        assert (
            state.current == "1-old" and state.history[-1]["result"] == "interrupted, rolled back"
        )
        assert not settings.journal_file.exists()
    finally:
        reap(old, new)


def test_status_flags_serving_processes_no_record_owns(tmp_path: Path) -> None:
    settings = HostSettings(root=tmp_path / "root")
    prepare(settings)
    owned, stray = fake_serve(settings, "1-a"), fake_serve(settings, "2-b")
    try:
        save_service(settings, service_of(owned, "1-a"))
        write_state(settings, HostState(current="1-a", releases=["1-a"]))
        report = status(settings)
        deadline = time.monotonic() + 10  # a loaded machine may show the child before its exec
        while report["orphans"] == [] and time.monotonic() < deadline:
            time.sleep(0.1)
            report = status(settings)
        assert report["orphans"] == [{"release": "2-b", "pid": stray.pid}]
        assert report["services"][0]["alive"] is True and report["services"][0]["current"]
    finally:
        reap(owned, stray)


def test_failed_releases_take_no_keep_slot_and_are_pruned(tmp_path: Path) -> None:
    from cxml.deploy.host.releases import prune

    settings = HostSettings(root=tmp_path, keep=2)
    prepare(settings)
    for name in ("1-a", "2-b", "3-failed", "4-c"):
        (settings.releases_dir / name).mkdir()
    state = HostState(current="4-c", previous="2-b", releases=["1-a", "2-b", "4-c"])
    write_state(settings, state)
    prune(settings, state)
    assert sorted(p.name for p in settings.releases_dir.iterdir()) == ["2-b", "4-c"]
    assert read_state(settings).releases == ["2-b", "4-c"]


def test_a_detached_activate_reports_the_workers_error_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = subprocess.run(
        [sys.executable, "-m", "cxml.deploy.host", "activate", "--release", "9-missing",
         "--root", str(root)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("error:") == 1
    assert "release 9-missing is not installed on the host" in result.stderr
    assert result.stdout == ""
    assert list((root / "runs").glob("*.json")) == []  # the result was read and removed

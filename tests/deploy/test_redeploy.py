"""`cxml redeploy`, fast part: the gate check, the deploy plan, credentials, the dry run, no torch."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from cxml import redeploy
from cxml.core.errors import ConfigError, GateError
from cxml.deploy import bundle, keys, plan, ssh
from cxml.records.gate import GateResult, parse_gate
from cxml.records.release import ReleaseInfo, ServingConfig
from cxml.records.run import RunRecord
from tests.support.deploy import write_workspace

FAKE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END OPENSSH PRIVATE KEY-----"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_workspace(tmp_path_factory.mktemp("ws"), "4")


# --- the gate --------------------------------------------------------------------------------


def gate(raw: dict[str, Any]) -> GateResult:
    return parse_gate(raw)


def test_a_passed_gate_deploys() -> None:
    assert plan.check_gate(gate({"decision": "pass"}), "gate.json", False, None) is None


@pytest.mark.parametrize(
    ("record", "phrase"),
    [
        (None, "gate.json not found"),
        (
            {
                "decision": "fail",
                "rules": [{"rule": "accuracy >= 0.9", "result": "fail", "value": 0.5}],
            },
            "rule 'accuracy >= 0.9' failed (value 0.5)",
        ),
        ({"decision": "fail"}, "the gate failed"),
    ],
)
def test_a_failed_or_missing_gate_is_refused(record: dict[str, Any] | None, phrase: str) -> None:
    with pytest.raises(GateError) as error:
        plan.check_gate(gate(record) if record else None, "gate.json", False, None)
    assert phrase in str(error.value) and "--force --reason" in str(error.value)
    assert error.value.exit_code == 2


def test_force_needs_a_reason_and_records_it() -> None:
    failed = gate({"decision": "fail"})
    with pytest.raises(ConfigError, match="--force needs --reason"):
        plan.check_gate(failed, "gate.json", True, "  ")
    assert plan.check_gate(failed, "gate.json", True, " incident 7 ") == "incident 7"
    assert plan.check_gate(None, "gate.json", True, "no gate yet") == "no gate yet"


# --- the plan --------------------------------------------------------------------------------


TARGET = ssh.SshTarget("serve.example", 2222, "deploy", "/keys/id", "/keys/known_hosts")


def agent(**changes: Any) -> plan.HostAgent:
    """The host agent of `cxml redeploy --mode process ...`, with settings changed."""
    args = redeploy.parse_args(
        ["--host", "serve.example", "--user", "deploy", "--port", "2222", "--mode", "process"]
    )
    base = redeploy.host_agent(args)
    return replace(base, settings=replace(base.settings, **changes))


def release(version: str = "4", forced_reason: str | None = None) -> ReleaseInfo:
    return bundle.describe_release(
        "ab" * 32,
        {"architecture": "small_cnn"},
        RunRecord(model_version=version, model_name="cxml-model", run_id="r"),
        gate({"decision": "pass"}),
        {"accuracy": 0.9, "per_class_accuracy": {"0": 1.0}, "ok": True},
        version=None,
        forced_reason=forced_reason,
        created_at="2026-11-25T11:00:00Z",
        serving=ServingConfig(),
    )


def test_release_record_takes_the_registry_version_and_numeric_metrics() -> None:
    info = release()
    assert (
        info.release.startswith("4-")  # the version, then the hash of what is served
        and info.model_version == "4"
        and info.model_name == "cxml-model"
    )
    assert info.metrics == {"accuracy": 0.9}
    assert info.gate_decision == "pass" and info.run_id == "r"


def test_release_metrics_come_from_evaluate_else_from_the_gate() -> None:
    recorded = gate({"decision": "pass", "metrics": {"accuracy": 0.8}})
    assert bundle.release_metrics({"accuracy": 0.9}, recorded) == {"accuracy": 0.9}
    assert bundle.release_metrics(None, recorded) == {"accuracy": 0.8}
    assert bundle.release_metrics(None, None) == {}


def test_plan_uploads_under_a_temporary_name_then_activates() -> None:
    name = release().release
    deploy_plan = plan.plan_deploy(agent(), release(), "/tmp/bundle", "n0nce")
    assert deploy_plan.staging_dir == f"/srv/cxml/incoming/{name}.n0nce"
    assert deploy_plan.release_dir == f"/srv/cxml/releases/{name}"
    prepare, upload, activate = deploy_plan.steps
    assert prepare.argv[:4] == ("python3", "-m", "cxml.deploy.host", "prepare")
    assert upload.channel == "sftp" and upload.argv == () and upload.stdin is not None
    batch = upload.stdin.splitlines()
    assert batch[0] == f'mkdir "/srv/cxml/incoming/{name}.n0nce"'
    assert batch[-1].startswith('put "/tmp/bundle/SHA256SUMS"')  # the manifest goes last
    assert activate.argv[3] == "activate"
    assert f"--staging=/srv/cxml/incoming/{name}.n0nce" in activate.argv
    assert deploy_plan.cleanup is not None and deploy_plan.cleanup.argv[3] == "discard"


def test_the_plan_holds_host_commands_and_the_executor_adds_ssh() -> None:
    deploy_plan = plan.plan_deploy(agent(), release(), "/tmp/bundle", "n0nce")
    _, upload, activate = deploy_plan.steps
    assert all("ssh" not in step.argv and "sftp" not in step.argv for step in deploy_plan.steps)
    local = ssh.local_argv(TARGET, activate)
    assert local[0] == "ssh" and "deploy@serve.example" in local
    assert local[-2:] == ["--", shlex.join(activate.argv)]
    assert ssh.local_argv(TARGET, upload)[0] == "sftp"
    limited = replace(TARGET, upload_limit_kbit_s=400)
    assert ssh.local_argv(limited, upload)[-3:] == ["-l", "400", "deploy@serve.example"]


@pytest.mark.parametrize("accept_new", [False, True])
def test_ssh_checks_the_host_key_against_the_given_file_only(accept_new: bool) -> None:
    target = ssh.SshTarget("h", 2222, "u", "/k", "/kh", accept_new_host_key=accept_new)
    argv = ssh.ssh_argv(target, ["true"])
    joined = " ".join(argv)
    expected = "accept-new" if accept_new else "yes"
    assert f"StrictHostKeyChecking={expected}" in joined
    assert "UserKnownHostsFile=/kh" in joined and "GlobalKnownHostsFile=/dev/null" in joined
    assert "-F /dev/null" in joined and "BatchMode=yes" in joined and "-i /k" in joined
    assert argv[argv.index("-p") : argv.index("-p") + 2] == ["-p", "2222"]
    assert ssh.sftp_argv(target, 100)[-3:] == ["-l", "100", "u@h"]


def test_forced_reason_and_host_options_reach_the_host() -> None:
    host = agent(
        mode="docker", docker=("podman", "--runtime", "runc"), public_url="http://127.0.0.1:8080"
    )
    activate = plan.plan_deploy(host, release(forced_reason="-f incident 7"), "/b", "n").steps[2]
    assert "--forced-reason=-f incident 7" in activate.argv
    assert "--docker-command=podman --runtime runc" in activate.argv
    assert "--public-url=http://127.0.0.1:8080" in activate.argv
    remote = ssh.local_argv(TARGET, activate)[-1]
    assert "'--forced-reason=-f incident 7'" in remote
    assert "'--docker-command=podman --runtime runc'" in remote


@pytest.mark.parametrize("name", ["../..", "..", "a/b", "/srv/cxml"])
def test_the_client_never_plans_a_release_that_names_a_path(name: str) -> None:
    with pytest.raises(ConfigError, match="not a release name"):
        plan.plan_deploy(agent(), replace(release(), release=name), "/b", "n")


def test_a_version_starting_with_a_dash_is_a_plain_release_name() -> None:
    args = redeploy.parse_args(["--host", "h", "--version=-rc.1", "--serve-args=--no-resize"])
    assert args.version == "-rc.1" and args.serve_args == "--no-resize"
    named = bundle.describe_release(
        "ab" * 32, {}, None, None, {}, version=args.version, forced_reason=None,
        created_at="2026-11-25T11:00:00Z", serving=ServingConfig(),
    )  # fmt: skip
    assert named.release.startswith("-rc.1-")
    steps = plan.plan_deploy(redeploy.host_agent(args), named, "/b", "n").steps
    remote = shlex.split(ssh.local_argv(TARGET, steps[2])[-1])  # as the host's shell splits it
    assert f"--release={named.release}" in remote and "--serve-args=--no-resize" in remote


def test_keep_must_hold_current_and_previous() -> None:
    args = redeploy.parse_args(["--host", "h", "--keep", "1"])
    with pytest.raises(ConfigError, match="--keep"):
        redeploy.host_agent(args)


# --- credentials ----------------------------------------------------------------------------


def test_known_hosts_go_to_a_private_file_and_a_key_file_is_used_where_it_is() -> None:
    with keys.credential_files(
        key_file="/home/me/.ssh/deploy", key_material=FAKE_KEY, known_hosts="h ssh-ed25519 AAAA",
        known_hosts_file=None, accept_new_host_key=False,
    ) as creds:  # fmt: skip
        assert creds.key_file == "/home/me/.ssh/deploy" and creds.identity_agent is None
        hosts = Path(creds.known_hosts_file)
        assert stat.S_IMODE(hosts.stat().st_mode) == 0o600
        assert stat.S_IMODE(hosts.parent.stat().st_mode) == 0o700
        assert hosts.read_text() == "h ssh-ed25519 AAAA\n"
    assert not hosts.parent.exists()


def test_ssh_signs_with_the_agent_chosen_by_the_public_key() -> None:
    target = ssh.SshTarget("h", key_file="/p/id_key.pub", identity_agent="/p dir/agent")
    argv = ssh.ssh_argv(target, ["true"])
    assert 'IdentityAgent="/p dir/agent"' in argv
    assert argv[argv.index("-i") + 1] == "/p/id_key.pub" and "IdentitiesOnly=yes" in argv


def test_no_known_hosts_is_refused_unless_accepting_new_keys() -> None:
    with (
        pytest.raises(ConfigError, match="no known_hosts"),
        keys.credential_files(
            key_file=None,
            key_material=None,
            known_hosts=None,
            known_hosts_file=None,
            accept_new_host_key=False,
        ),
    ):
        pass
    with keys.credential_files(
        key_file=None,
        key_material=None,
        known_hosts=None,
        known_hosts_file=None,
        accept_new_host_key=True,
    ) as creds:
        assert Path(creds.known_hosts_file).read_text() == ""


@pytest.mark.parametrize(
    ("stderr", "returncode", "phrase", "exit_code"),
    [
        ("Host key verification failed.\n", 255, "does not match the known_hosts", 2),
        ("root@h: Permission denied (publickey).\n", 255, "SSH key refused", 2),
        ("ssh: connect to host h port 22: Connection refused\n", 255, "Connection refused", 3),
    ],
)
def test_connection_problems_are_named(
    stderr: str, returncode: int, phrase: str, exit_code: int
) -> None:
    target = ssh.SshTarget("h")
    error = ssh.connection_error(ssh.CommandResult(returncode, "", stderr), target)
    assert error is not None and phrase in str(error)
    assert error.exit_code == exit_code  # a wrong key is the user's to fix; a dead network is not


@pytest.mark.parametrize(("host_code", "exit_code"), [(2, 2), (3, 3), (1, 3), (127, 3)])
def test_a_remote_error_line_is_passed_on(host_code: int, exit_code: int) -> None:
    stderr = "host: starting\nerror: release 4 failed its health check\n"
    result = ssh.CommandResult(host_code, "", stderr)
    assert ssh.connection_error(result, ssh.SshTarget("h")) is None
    assert ssh.remote_error(result) == "release 4 failed its health check"
    error = ssh.host_failure(result)
    assert str(error) == "release 4 failed its health check" and error.exit_code == exit_code


# --- the command line, as a process ---------------------------------------------------------


def run_redeploy(
    workspace: Path, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        "from cxml.core.console import run_entry_point\n"
        "from cxml import redeploy\n"
        "code = run_entry_point(redeploy.main, sys.argv[1:])\n"
        "assert 'torch' not in sys.modules, 'cxml redeploy imported torch'\n"
        "raise SystemExit(code)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "CXML_"))}
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=workspace,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_dry_run_prints_the_plan_without_torch_or_secrets(workspace: Path) -> None:
    result = run_redeploy(
        workspace, "--host", "serve.example", "--root", "/opt/cxml", "--dry-run",
        extra_env={"CXML_SSH_KEY": FAKE_KEY, "CXML_KNOWN_HOSTS": "serve.example ssh-ed25519 AAAA"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert (
        "plan (dry run, nothing is done): deploy to serve.example:22, root /opt/cxml, docker mode"
        in out
    )
    assert "release dir: /opt/cxml/releases/4-" in out
    assert "sftp> put" in out and "cxml.deploy.host activate" in out
    assert "<key from $CXML_SSH_KEY>" in out
    assert "c2VjcmV0" not in out + result.stderr and "PRIVATE KEY" not in out + result.stderr


def test_dry_run_of_a_failed_gate_is_refused(tmp_path: Path) -> None:
    workspace = write_workspace(tmp_path, "5", decision="fail")
    result = run_redeploy(workspace, "--host", "h", "--dry-run")
    assert result.returncode == 2
    assert result.stderr.startswith("error: the gate failed: rule 'accuracy >= 0.9' failed")


@pytest.mark.parametrize(
    ("gate_text", "phrase"),
    [
        ('{"decision": "maybe"}', "decision must be 'pass' or 'fail'"),
        ("[]", "expected a JSON object"),
    ],
)
def test_a_malformed_gate_file_is_an_input_error(
    tmp_path: Path, gate_text: str, phrase: str
) -> None:
    workspace = write_workspace(tmp_path, "5")
    (workspace / "gate.json").write_text(gate_text)
    result = run_redeploy(workspace, "--host", "h", "--dry-run")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and phrase in result.stderr


def test_missing_model_names_the_fix(tmp_path: Path, workspace: Path) -> None:
    result = run_redeploy(workspace, "--host", "h", "--dry-run", "--model", str(tmp_path / "no.pt"))
    assert result.returncode == 2 and "run `cxml train` first" in result.stderr


def test_rollback_dry_run(workspace: Path) -> None:
    result = run_redeploy(workspace, "--host", "h", "--rollback", "--dry-run", "--mode", "process")
    assert result.returncode == 0, result.stderr
    assert "cxml.deploy.host rollback" in result.stdout


def test_accepting_a_new_host_key_is_warned(workspace: Path) -> None:
    result = run_redeploy(workspace, "--host", "h", "--accept-new-host-key", "--dry-run")
    assert result.returncode == 0
    assert "warning: --accept-new-host-key" in result.stderr
    assert "StrictHostKeyChecking=accept-new" in result.stdout


def test_github_outputs_and_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "out"))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary"))
    result = {
        "release": "4-ab",
        "previous": "3-cd",
        "changed": True,
        "record": {"model_version": "4"},
    }
    redeploy.report_outputs(result, ssh.SshTarget("h"), "http://h:8080")
    outputs = (tmp_path / "out").read_text()
    assert (
        "release=4-ab\n" in outputs
        and "version=4-ab\n" in outputs
        and "model-version=4\n" in outputs
        and "previous-release=3-cd\n" in outputs
    )
    assert "url=http://h:8080\n" in outputs
    assert "4-ab" in (tmp_path / "summary").read_text()
    assert "h is now serving release 4-ab" in capsys.readouterr().out


def test_a_release_without_registry_version_does_not_touch_the_registry(
    capsys: pytest.CaptureFixture[str],
) -> None:
    redeploy.move_alias({"model_name": None, "model_version": "local"}, "champion")
    assert "alias champion not moved" in capsys.readouterr().out


def test_plan_rendering_lists_every_step() -> None:
    deploy_plan = plan.plan_deploy(agent(), release(), "/b", "n")
    text = plan.render_plan(
        deploy_plan,
        release(),
        destination="serve.example:2222",
        command_line=partial(ssh.local_argv, TARGET),
    )
    assert text.count("\n  1. ") == 1 and "\n  3. " in text
    assert "$ ssh " in text and "$ sftp " in text and "sftp> put" in text
    assert json.dumps(text)  # printable


def test_file_defaults_follow_params_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(
        "outputs:\n  model: out/m.pt\n  gate: out/gate.json\n  metrics_dir: out/metrics\n"
    )
    args = redeploy.parse_args(["--host", "h", "--run-info", "given.json"])
    redeploy.fill_paths_from_params(args)
    assert (args.model, args.gate, args.run_info) == ("out/m.pt", "out/gate.json", "given.json")
    assert Path(args.metrics) == Path("out/metrics/eval.json")


def test_the_release_record_drops_tracking_credentials_from_run_info() -> None:
    info = bundle.describe_release(
        "ab" * 32,
        {"architecture": "small_cnn"},
        RunRecord(
            model_version="4", tracking_uri="https://ci:s3cr3t-token@mlflow.example.com:5000"
        ),
        gate({"decision": "pass"}),
        {},
        version=None,
        forced_reason=None,
        created_at="2026-11-25T11:00:00Z",
        serving=ServingConfig(),
    )
    assert info.to_dict()["tracking_uri"] == "https://mlflow.example.com:5000"
    assert "s3cr3t-token" not in json.dumps(info.to_dict())


def test_the_host_gets_the_proxy_check_setting() -> None:
    check = ("nginx", "-t", "-c", "/etc/nginx/nginx.conf")
    assert "--proxy-check=nginx -t -c /etc/nginx/nginx.conf" in agent(proxy_check=check).command(
        "activate"
    )
    assert "--proxy-check=auto" in agent().command("activate")
    assert "--proxy-check=none" in agent(proxy_check=()).command("activate")


# --- deploy.yaml and the flags: flag > environment > serve > default ---------------------------

DEPLOY_YAML = """\
serve:
  mode: process
  root: /srv/app
  remote_python: /opt/venv/bin/python
  ssh: {user: deploy, port: 2200}
  proxy: {upstream_file: /etc/nginx/cxml/upstream.conf, public_url: https://m.example.com}
  keep: 4
environments:
  production:
    hosts: [prod-1.example.com, ops@prod-2.example.com:2222]
    keep: 7
    proxy: {reload: sudo nginx -s reload}
  staging:
    hosts:
      - {host: stage.example.com, root: /srv/stage, proxy: {public_url: http://stage:8080}}
"""


def destinations(tmp_path: Path, *argv: str) -> list[redeploy.Destination]:
    (tmp_path / "deploy.yaml").write_text(DEPLOY_YAML)
    full = ["--config", str(tmp_path / "deploy.yaml"), *argv]
    return redeploy.resolve_destinations(redeploy.parse_args(full), redeploy.given_options(full))


def test_an_environment_needs_nothing_but_deploy_yaml(tmp_path: Path) -> None:
    first, second = destinations(tmp_path, "--env", "production")
    assert (first.host, first.port, first.user) == ("prod-1.example.com", 2200, "deploy")
    assert (second.host, second.port, second.user) == ("prod-2.example.com", 2222, "ops")
    settings = first.agent.settings
    assert settings.keep == 7  # the environment over serve
    assert settings.mode == "process" and str(settings.root) == "/srv/app"  # serve over default
    assert settings.proxy_reload == ("sudo", "nginx", "-s", "reload")
    assert str(settings.proxy_config) == "/etc/nginx/cxml/upstream.conf"
    assert settings.public_url == "https://m.example.com"
    assert settings.drain_s == 2.0  # the default
    assert first.agent.python == ("/opt/venv/bin/python",)


def test_a_flag_given_overrides_the_environment(tmp_path: Path) -> None:
    first, second = destinations(
        tmp_path, "--env", "production", "--keep", "3", "--port", "22", "--user", "root",
        "--remote-python", "python3", "--public-url", "http://other",
    )  # fmt: skip
    assert first.agent.settings.keep == 3 and second.port == 22 and second.user == "root"
    assert first.agent.python == ("python3",)
    assert second.agent.settings.public_url == "http://other"
    # a flag left at its default does not override: drain, mode, root stay the environment's
    assert first.agent.settings.mode == "process" and str(first.agent.settings.root) == "/srv/app"


def test_a_host_entry_may_carry_its_own_root_and_proxy(tmp_path: Path) -> None:
    (stage,) = destinations(tmp_path, "--env", "staging")
    assert str(stage.agent.settings.root) == "/srv/stage"
    assert stage.agent.settings.public_url == "http://stage:8080"
    assert str(stage.agent.settings.proxy_config) == "/etc/nginx/cxml/upstream.conf"  # serve's


@pytest.mark.parametrize(
    ("argv", "phrase"),
    [
        (["--env", "prodution"], "no environment 'prodution' (did you mean production?)"),
        (["--env", "production", "--host", "h"], "--host and --env production: pick one"),
        ([], "say where to deploy: --env NAME"),
    ],
)
def test_where_to_deploy_must_be_clear(tmp_path: Path, argv: list[str], phrase: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(phrase)):
        destinations(tmp_path, *argv)


def test_flag_mode_without_a_proxy_is_refused_before_anything_runs(workspace: Path) -> None:
    result = run_redeploy(workspace, "--host", "h", "--ssh-key-file", "/nonexistent")
    assert result.returncode == 2
    assert result.stderr.startswith("error: no proxy to switch")
    assert "--proxy-config" in result.stderr and "serve.proxy.upstream_file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    for check in ("none", "auto"):  # nginx -t alone cannot see a reload that did not happen
        unchecked = run_redeploy(
            workspace, "--host", "h", "--proxy-config", "/etc/nginx/up.conf", "--proxy-check", check
        )
        assert unchecked.returncode == 2 and "--public-url" in unchecked.stderr
        assert "serve.proxy.public_url" in unchecked.stderr
    warned = run_redeploy(
        workspace, "--host", "h", "--proxy-config", "/etc/nginx/up.conf", "--dry-run"
    )
    assert warned.returncode == 0
    assert "a real deploy would be refused: the switch cannot be verified" in warned.stderr


def test_no_proxy_is_only_for_a_single_host(tmp_path: Path) -> None:
    (tmp_path / "deploy.yaml").write_text(DEPLOY_YAML)
    argv = ["--config", str(tmp_path / "deploy.yaml"), "--env", "production", "--no-proxy"]
    args = redeploy.parse_args(argv)
    found = redeploy.resolve_destinations(args, redeploy.given_options(argv))
    assert "--no-proxy is for a single --host" in str(redeploy.unverified_switch(found, args))
    flag_args = redeploy.parse_args(["--host", "h", "--no-proxy"])
    flag_found = redeploy.resolve_destinations(flag_args, {"host", "no_proxy"})
    assert redeploy.unverified_switch(flag_found, flag_args) is None


def test_dry_run_of_an_environment_lists_every_host(tmp_path: Path, workspace: Path) -> None:
    (workspace / "deploy.yaml").write_text(DEPLOY_YAML)
    result = run_redeploy(workspace, "--env", "production", "--dry-run", "--known-hosts", "x y z")
    assert result.returncode == 0, result.stderr
    assert "deploy to deploy@prod-1.example.com:2200, root /srv/app" in result.stdout
    assert "deploy to ops@prod-2.example.com:2222, root /srv/app" in result.stdout


# --- the gate is bound to the model ------------------------------------------------------------

SHA_A, SHA_B = "a" * 64, "b" * 64


def test_a_model_other_than_the_judged_one_is_refused() -> None:
    judged = plan.JudgedModel(sha256=SHA_A, run_id="run1")
    with pytest.raises(GateError) as error:
        plan.check_model_binding(judged, SHA_B, "run1", "gate.json", force=False)
    message = str(error.value)
    assert "aaaaaaaaaaaa" in message and "bbbbbbbbbbbb" in message and SHA_A not in message
    assert "re-run cxml evaluate" in message.lower() and error.value.exit_code == 2
    with pytest.raises(
        GateError, match=re.escape("run.json names run run2, gate.json judged run run1")
    ):
        plan.check_model_binding(judged, SHA_A, "run2", "gate.json", force=False)
    plan.check_model_binding(judged, SHA_A, "run1", "gate.json", force=False)
    plan.check_model_binding(judged, SHA_A, None, "gate.json", force=False)  # run id unknown


def test_an_old_gate_without_the_model_is_warned(capsys: pytest.CaptureFixture[str]) -> None:
    plan.check_model_binding(plan.JudgedModel(None, None), SHA_A, "r", "gate.json", force=False)
    assert "does not record which model it judged" in capsys.readouterr().err


def test_a_retrained_model_after_a_passing_gate_is_refused(tmp_path: Path) -> None:
    workspace = write_workspace(tmp_path, "6")
    model = workspace / "model" / "model.pt"
    gate_record = json.loads((workspace / "gate.json").read_text())
    gate_record["model"] = {"path": "model/model.pt", "sha256": redeploy.sha256_file(model),
                            "run_id": "run6"}  # fmt: skip
    (workspace / "gate.json").write_text(json.dumps(gate_record))
    judged = run_redeploy(workspace, "--host", "h", "--dry-run")
    assert judged.returncode == 0, judged.stderr
    write_workspace(tmp_path, "6", seed=99)  # retrained: other weights, same gate.json kept
    (workspace / "gate.json").write_text(json.dumps(gate_record))
    retrained = run_redeploy(workspace, "--host", "h", "--dry-run")
    assert retrained.returncode == 2
    assert retrained.stderr.startswith("error: the model is not the one the gate judged")
    assert "re-run cxml evaluate" in retrained.stderr.lower()


# --- what ssh prints ---------------------------------------------------------------------------

MITM_BANNER = """\
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Someone could be eavesdropping on you right now (man-in-the-middle attack)!
It is also possible that a host key has just been changed.
The fingerprint for the ED25519 key sent by the remote host is
SHA256:Hg6h0bqXkHq0Pq3Yx8z1m0l9sOa2sTQ6l9v1kEoJz4E.
Please contact your system administrator.
Add correct host key in /tmp/x/known_hosts to get rid of this message.
Offending ED25519 key in /tmp/x/known_hosts:1
Host key for [127.0.0.1]:2222 has changed and you have requested strict checking.
Host key verification failed.
"""


def test_the_mitm_banner_becomes_one_line_naming_the_fix() -> None:
    target = ssh.SshTarget("127.0.0.1", 2222, "root", known_hosts_source="$CXML_KNOWN_HOSTS")
    error = ssh.connection_error(ssh.CommandResult(255, "", MITM_BANNER), target)
    assert isinstance(error, ConfigError)
    message = str(error)
    assert "\n" not in message and "@@@" not in message
    assert message.startswith("the host key of 127.0.0.1 port 2222 (it offered SHA256:Hg6h0")
    assert "has changed" in message and "$CXML_KNOWN_HOSTS" in message
    assert "ssh-keyscan -p 2222 127.0.0.1" in message
    assert not any(ssh.echoed(line) for line in MITM_BANNER.splitlines())


def test_host_progress_is_echoed_but_its_error_line_is_not() -> None:
    assert ssh.echoed("starting release 4-ab (process mode)\n")
    assert not ssh.echoed("error: release 4-ab failed its health check\n")


def test_status_lines_name_each_service_and_flag_orphans() -> None:
    state = {
        "services": [
            {"release": "2-ab", "mode": "process", "pid": 41, "port": 8001, "alive": True,
             "current": True},
            {"release": "1-cd", "mode": "docker", "container": "cxml-serve-1", "port": 8000,
             "alive": False, "current": False},
        ],
        "orphans": [{"release": "1-cd", "pid": 77}, {"container": "cxml-serve-9"}],
    }  # fmt: skip
    lines = redeploy.service_lines(state)
    assert lines[0] == "service of 2-ab: process (pid 41), port 8001, running, current"
    assert lines[1] == "service of 1-cd: docker (cxml-serve-1), port 8000, NOT running"
    assert lines[2].startswith("ORPHAN process 77 of release 1-cd")
    assert lines[3].startswith("ORPHAN container cxml-serve-9:")
    assert redeploy.service_lines({"services": "junk", "orphans": None}) == []

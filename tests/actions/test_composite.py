"""The action metadata (action.yml files) and the setup script, checked without running a workflow.

- every action.yml validates against the action-metadata schema shipped in check-jsonschema;
- inputs are kebab-case and documented, outputs declared and wired to a step that exists;
- every step runs in bash and no `${{ ... }}` expression is pasted into a script;
- the root action runs the same one-line steps as the separate actions (how each step's
  inputs become its arguments is tested in test_action_inputs.py);
- the setup script: cache key, reuse, a half-built venv is rebuilt (also after a real kill);
  one cache per trust level (a pull request's venv never runs in a push job) and a manifest of
  file hashes checked on every reuse (a changed venv is rebuilt, with a warning).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.actions import ACTION_FILES, PYTHON, REPO_ROOT, load_script, tool, tool_env

SETUP_SCRIPT = REPO_ROOT / "actions" / "setup" / "cxml_setup.py"
KEBAB = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def load_action(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def action_id(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


ACTIONS = pytest.mark.parametrize("path", ACTION_FILES, ids=action_id)


def test_every_action_validates_against_the_action_metadata_schema() -> None:
    result = subprocess.run(
        [
            tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.github-actions",
            *map(str, ACTION_FILES),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(ACTION_FILES) == 6  # root, setup, train, evaluate, report, redeploy


@ACTIONS
def test_inputs_are_kebab_case_and_documented(path: Path) -> None:
    action = load_action(path)
    for name, spec in action.get("inputs", {}).items():
        assert KEBAB.match(name), f"{name}: inputs are kebab-case"
        assert str(spec.get("description", "")).strip(), f"{name}: no description"
        assert "required" in spec, f"{name}: say whether it is required"
        if not spec["required"]:
            assert "default" in spec, f"{name}: optional inputs document their default"
            assert isinstance(spec["default"], str), f"{name}: defaults are strings (quote 'true')"


@ACTIONS
def test_outputs_are_declared_and_come_from_a_step(path: Path) -> None:
    action = load_action(path)
    step_ids = {step.get("id") for step in action["runs"]["steps"]}
    for name, spec in action.get("outputs", {}).items():
        assert KEBAB.match(name), name
        assert str(spec.get("description", "")).strip(), f"{name}: no description"
        for step in re.findall(r"steps\.([a-z-]+)\.outputs", spec["value"]):
            assert step in step_ids, f"output {name} reads step {step!r}, which does not exist"


def test_each_action_declares_the_outputs_the_issue_promises() -> None:
    promised = {
        "train": {"run-id", "model-path", "metrics-file"},
        "evaluate": {"gate", "gate-file"},
        "report": {"comment-url", "report-file"},
        "redeploy": {"version", "url"},
    }
    for name, outputs in promised.items():
        declared = set(load_action(REPO_ROOT / "actions" / name / "action.yml")["outputs"])
        assert outputs <= declared, f"{name}: missing {outputs - declared}"
    root = set(load_action(REPO_ROOT / "action.yml")["outputs"])
    assert promised["train"] | promised["evaluate"] | promised["report"] <= root


@ACTIONS
def test_steps_use_bash_and_never_paste_expressions_into_scripts(path: Path) -> None:
    action = load_action(path)
    assert action["runs"]["using"] == "composite"
    for step in action["runs"]["steps"]:
        assert step.get("shell") == "bash", f"step {step.get('id')}: shell: bash"
        script = step["run"]
        assert "${{" not in script, (
            f"step {step.get('id')}: pass inputs through env:, not into run:"
        )
        defined = set(step.get("env", {}))
        used = set(re.findall(r"\$\{?(CXML_[A-Z_]+)", script))
        assert used <= defined | {"CXML_SETUP_PYTHON"}, f"undefined variables: {used - defined}"
        for name, value in step.get("env", {}).items():
            if name.startswith("CXML_") and "inputs." in str(value):
                input_name = re.search(r"inputs\.([a-z0-9-]+)", str(value))
                assert input_name and input_name[1] in action["inputs"], f"{name}: unknown input"


def step_scripts(path: Path) -> dict[str, str]:
    """Scripts by step id, with the action's own location taken out (root vs actions/<x>)."""
    scripts = {}
    for step in load_action(path)["runs"]["steps"]:
        script = step["run"].replace('"$GITHUB_ACTION_PATH/actions/', '"$GITHUB_ACTION_PATH/../')
        scripts[str(step["id"])] = script
    return scripts


def test_root_action_runs_the_same_scripts_as_the_separate_actions() -> None:
    root = step_scripts(REPO_ROOT / "action.yml")
    for step in ("train", "evaluate", "report"):
        separate = step_scripts(REPO_ROOT / "actions" / step / "action.yml")
        assert root[step] == separate[step], f"action.yml's {step} step drifted from actions/{step}"
        assert root["setup"] == separate["setup"]


def test_root_action_takes_the_union_of_the_step_inputs() -> None:
    # The report's `target`/`name` are prefixed in the root action (a `name` input would read as
    # the action's name); `model-changed` is wired from the train step inside it, and
    # `tracking-in-background` is always on (its report step follows in the same job).
    renamed = {"target": "report-target", "name": "report-name"}
    wired_inside = {"model-changed", "tracking-in-background"}
    root_inputs = set(load_action(REPO_ROOT / "action.yml")["inputs"])
    for step in ("train", "evaluate", "report"):
        step_inputs = set(load_action(REPO_ROOT / "actions" / step / "action.yml")["inputs"])
        expected = {renamed.get(name, name) for name in step_inputs - wired_inside}
        assert expected <= root_inputs, f"action.yml lacks {sorted(expected - root_inputs)}"


def test_every_action_runs_the_same_setup_step() -> None:
    setups = {}
    for path in ACTION_FILES:
        steps = load_action(path)["runs"]["steps"]
        setup = steps[0]
        assert setup["id"] == "setup"
        setups[action_id(path)] = (
            setup["env"],
            setup["run"].replace("../setup/", "").replace("actions/setup/", ""),
        )
    assert len({repr(value) for value in setups.values()}) == 1, setups


# --- the setup script ----------------------------------------------------------------------


@pytest.fixture
def setup_script() -> Any:
    return load_script(SETUP_SCRIPT)


def test_extras_and_packages_are_parsed_strictly(setup_script: Any) -> None:
    assert setup_script.parse_extras(" train, report dvc,train ") == ["dvc", "report", "train"]
    assert setup_script.parse_extras("") == []
    with pytest.raises(setup_script.SetupError, match="not an extra name"):
        setup_script.parse_extras("train;rm -rf ~")
    assert setup_script.parse_packages("dvc-s3, 'x'") == ["dvc-s3", "'x'"]
    with pytest.raises(setup_script.SetupError, match="is an option"):
        setup_script.parse_packages("--index-url=http://evil")


def test_the_venv_key_changes_with_what_would_be_installed(
    setup_script: Any, tmp_path: Path
) -> None:
    source = tmp_path / "cxml"
    (source / "src" / "cxml").mkdir(parents=True)
    (source / "pyproject.toml").write_text(
        '[project]\nname = "cxml"\nversion = "9.1"\n', encoding="utf-8"
    )
    key = setup_script.venv_key(source, ["train"], [], False)
    assert key.startswith(f"cxml-9.1-py{sys.version_info.major}.{sys.version_info.minor}-")
    assert key == setup_script.venv_key(source, ["train"], [], False)
    assert key != setup_script.venv_key(source, ["train", "dvc"], [], False)
    assert key != setup_script.venv_key(source, ["train"], ["dvc-s3"], False)
    assert key != setup_script.venv_key(source, ["train"], [], True)
    (source / "pyproject.toml").write_text(
        '[project]\nname = "cxml"\nversion = "9.1"\n# dep\n', encoding="utf-8"
    )
    assert key != setup_script.venv_key(source, ["train"], [], False)


def fake_builds(setup_script: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the slow parts (venv creation, pip) by stand-ins that record what ran."""
    calls: list[str] = []

    def build_venv(venv: Path, *args: object) -> None:
        calls.append("build")
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "python").write_text("", encoding="utf-8")

    def install_package(venv: Path, *args: object, with_dependencies: bool) -> None:
        calls.append("install" if with_dependencies else "reinstall")

    monkeypatch.setattr(setup_script, "build_venv", build_venv)
    monkeypatch.setattr(setup_script, "install_package", install_package)
    return calls


def test_a_complete_venv_is_reused_and_a_half_built_one_rebuilt(
    setup_script: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_builds(setup_script, monkeypatch)
    cache = tmp_path / "tool-cache"
    venv, hit = setup_script.ensure_venv(REPO_ROOT, ["train"], [], False, cache)
    assert (hit, calls) == (False, ["build"])
    assert (venv / ".cxml-complete").is_file()

    assert setup_script.ensure_venv(REPO_ROOT, ["train"], [], False, cache) == (venv, True)
    assert calls == ["build"]

    (venv / ".cxml-complete").unlink()  # as if the job was killed before the marker was written
    (venv / "half-installed-package").write_text("", encoding="utf-8")
    assert setup_script.ensure_venv(REPO_ROOT, ["train"], [], False, cache) == (venv, False)
    assert calls == ["build", "build"]
    assert not (venv / "half-installed-package").exists()


def test_a_changed_package_source_reinstalls_only_cxml(
    setup_script: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_builds(setup_script, monkeypatch)
    source = tmp_path / "action-checkout"
    (source / "src" / "cxml").mkdir(parents=True)
    (source / "pyproject.toml").write_text(
        '[project]\nname = "cxml"\nversion = "0.1"\n', encoding="utf-8"
    )
    (source / "src" / "cxml" / "__init__.py").write_text("", encoding="utf-8")
    cache = tmp_path / "tool-cache"
    setup_script.ensure_venv(source, [], [], False, cache)
    (source / "src" / "cxml" / "__init__.py").write_text("# changed\n", encoding="utf-8")
    _, hit = setup_script.ensure_venv(source, [], [], False, cache)
    assert hit is True
    assert calls == ["build", "reinstall"]
    setup_script.ensure_venv(source, [], [], False, cache)
    assert calls == ["build", "reinstall"]


def test_too_old_python_is_one_clear_error(
    setup_script: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(setup_script.sys, "version_info", (3, 10, 12))
    with pytest.raises(setup_script.SetupError, match=r"cxml needs 3\.11 or newer"):
        setup_script.check_python_version()


def run_setup(cache: Path, outputs: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **tool_env(),
        # A push job, whatever event the test suite itself runs under.
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_EVENT_PATH": "",
        "RUNNER_TOOL_CACHE": str(cache),
        "CXML_SETUP_PYTHON": PYTHON,
        "CXML_SETUP_EXTRAS": "train,report,dvc",
        "GITHUB_OUTPUT": str(outputs),
        **extra,
    }
    return subprocess.run(
        [PYTHON, str(SETUP_SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def read_outputs(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return dict(line.split("=", 1) for line in lines)


@pytest.mark.slow
def test_setup_builds_reuses_and_survives_a_kill(tmp_path: Path) -> None:
    """Real venvs: killed mid-build -> rebuilt; then a warm run reuses it."""
    cache = tmp_path / "tool-cache"
    outputs = tmp_path / "outputs.txt"
    env = {
        **tool_env(),
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_EVENT_PATH": "",
        "RUNNER_TOOL_CACHE": str(cache),
        "CXML_SETUP_PYTHON": PYTHON,
        "CXML_SETUP_EXTRAS": "train,report,dvc",
    }
    killed = subprocess.Popen(
        [PYTHON, str(SETUP_SCRIPT)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while (
        not list((cache / "cxml" / "trusted").glob("cxml-*/bin/python"))
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)  # the whole job: setup script, venv, pip
    killed.wait(timeout=30)
    assert not list((cache / "cxml" / "trusted").glob("cxml-*/.cxml-complete")), (
        "killed too late to test a half-built venv"
    )

    rebuilt = run_setup(cache, outputs)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "incomplete" in rebuilt.stdout and "rebuilding" in rebuilt.stdout
    cold = read_outputs(outputs)
    assert cold["cache-hit"] == "false"
    python = Path(cold["python"])
    check = subprocess.run(
        [str(python), "-c", "import cxml, torch, dvc; print(cxml.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert check.stdout.strip().startswith(str(Path(cold["venv"])))  # the action's copy, not ours
    shipped = subprocess.run(  # the installed wheel carries the templates `cxml init` writes
        [
            str(python),
            "-c",
            "from cxml.init import template_text; print(template_text('workflows/cxml-main.yml'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert (
        shipped.stdout
        == (REPO_ROOT / "workflows-templates" / "cxml-main.yml").read_text(encoding="utf-8") + "\n"
    )

    outputs.unlink()
    warm = run_setup(cache, outputs)
    assert warm.returncode == 0, warm.stdout + warm.stderr
    warm_outputs = read_outputs(outputs)
    assert warm_outputs["cache-hit"] == "true"
    assert warm_outputs["python"] == cold["python"]
    # reuse, not a rebuild (cold took tens of seconds); the speed itself is measured in
    # benchmarks/action_overhead.py, not asserted here where a loaded machine would flake
    assert float(warm_outputs["seconds"]) < float(cold["seconds"])
    print(f"setup: cold {cold['seconds']} s, warm {warm_outputs['seconds']} s")


def test_setup_reports_bad_input_as_an_error_annotation(tmp_path: Path) -> None:
    result = run_setup(tmp_path / "cache", tmp_path / "out", CXML_SETUP_EXTRAS="train;id")
    assert result.returncode == 2
    assert result.stdout.startswith("::error::cxml setup: extras: 'train;id' is not an extra name")
    assert not (tmp_path / "cache").exists()


# --- the setup script: trust levels and the manifest ----------------------------------------

REPOSITORY_JSON = {"full_name": "acme/widgets"}
FORK_PULL_REQUEST = {
    "pull_request": {"number": 7, "head": {"repo": {"full_name": "mallory/widgets"}}},
    "repository": REPOSITORY_JSON,
}
SAME_REPO_PULL_REQUEST = {
    "pull_request": {"number": 8, "head": {"repo": REPOSITORY_JSON}},
    "repository": REPOSITORY_JSON,
}


def workflow_run_event(event: str, head_repository: str) -> dict[str, Any]:
    run = {"event": event, "head_repository": {"full_name": head_repository}}
    return {"workflow_run": run, "repository": REPOSITORY_JSON}


@pytest.mark.parametrize(
    ("event_name", "event", "level"),
    [
        ("push", {}, "trusted"),
        ("schedule", {}, "trusted"),
        ("workflow_dispatch", {}, "trusted"),
        ("pull_request", SAME_REPO_PULL_REQUEST, "pull-request"),
        ("pull_request", FORK_PULL_REQUEST, "untrusted"),
        ("pull_request", {}, "untrusted"),  # no payload: assume the worst
        ("pull_request_target", SAME_REPO_PULL_REQUEST, "untrusted"),
        ("workflow_run", workflow_run_event("push", "acme/widgets"), "trusted"),
        ("workflow_run", workflow_run_event("pull_request", "mallory/widgets"), "untrusted"),
        ("workflow_run", workflow_run_event("pull_request", "acme/widgets"), "untrusted"),
        ("issue_comment", {}, "untrusted"),
        ("some_future_event", {}, "untrusted"),
    ],
)
def test_each_event_has_its_trust_level(
    setup_script: Any,
    monkeypatch: pytest.MonkeyPatch,
    event_name: str,
    event: dict[str, Any],
    level: str,
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert setup_script.trust_level(event_name, event) == level


def test_outside_actions_the_cache_is_a_local_one(
    setup_script: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    assert setup_script.trust_level("", {}) == "local"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert setup_script.trust_level("", {}) == "untrusted"


def real_venvs_without_install(setup_script: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real venvs (`python -m venv`, no pip) so a planted `.pth` really runs; cxml not installed."""

    def build_venv(venv: Path, *args: object) -> None:
        subprocess.run(
            [PYTHON, "-m", "venv", "--without-pip", str(venv)],
            check=True,
            timeout=300,
            capture_output=True,
        )
        (venv / "installed-by-cxml.txt").write_text("cxml\n", encoding="utf-8")

    def install_package(venv: Path, *args: object, with_dependencies: bool) -> None:
        pass

    monkeypatch.setattr(setup_script, "build_venv", build_venv)
    monkeypatch.setattr(setup_script, "install_package", install_package)


def setup_job(
    setup_script: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    event_name: str,
    event: dict[str, Any],
) -> dict[str, str]:
    """Run the setup script's main() as a job of `event_name` would; return its outputs."""
    event_file = tmp_path / f"event-{event_name}.json"
    event_file.write_text(json.dumps(event), encoding="utf-8")
    outputs = tmp_path / f"outputs-{event_name}-{time.monotonic_ns()}.txt"
    for name in ("CXML_SETUP_CACHE_DIR", "CXML_SETUP_PYTHON", "CXML_SETUP_PACKAGES"):
        monkeypatch.delenv(name, raising=False)
    for name in ("GITHUB_PATH", "GITHUB_ENV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CXML_SETUP_EXTRAS", "report")
    monkeypatch.setenv("RUNNER_TOOL_CACHE", str(tmp_path / "tool-cache"))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_EVENT_NAME", event_name)
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event_file))
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    assert setup_script.main() == 0
    return read_outputs(outputs)


def plant_pth(venv: Path, proof: Path) -> Path:
    """What a pull request's code can do from inside the venv: a `.pth` line runs at every start."""
    site_packages = next((venv / "lib").glob("python3*/site-packages"))
    planted = site_packages / "zzz_planted.pth"
    planted.write_text(f"import pathlib; pathlib.Path({str(proof)!r}).touch()\n", encoding="utf-8")
    return planted


def start_python(venv: Path) -> None:
    subprocess.run(
        [str(venv / "bin" / "python"), "-c", "pass"], check=True, timeout=60, capture_output=True
    )


def test_a_pth_planted_by_a_pull_request_never_runs_in_a_push_job(
    setup_script: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_venvs_without_install(setup_script, monkeypatch)
    proof = tmp_path / "planted-code-ran"
    pr = setup_job(setup_script, monkeypatch, tmp_path, "pull_request", FORK_PULL_REQUEST)
    plant_pth(Path(pr["venv"]), proof)
    start_python(Path(pr["venv"]))
    assert proof.exists(), "the plant must work, or this test proves nothing"
    proof.unlink()

    push = setup_job(setup_script, monkeypatch, tmp_path, "push", {})
    assert push["venv"] != pr["venv"]
    assert push["cache-hit"] == "false"
    start_python(Path(push["venv"]))
    assert not proof.exists(), "code planted by a pull request ran in the push job"
    assert setup_job(setup_script, monkeypatch, tmp_path, "push", {})["cache-hit"] == "true"


@pytest.mark.parametrize("change", ["planted .pth", "edited file", "swapped link"])
def test_a_changed_trusted_venv_is_detected_and_rebuilt(
    setup_script: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    change: str,
) -> None:
    real_venvs_without_install(setup_script, monkeypatch)
    proof = tmp_path / "planted-code-ran"
    first = setup_job(setup_script, monkeypatch, tmp_path, "push", {})
    venv = Path(first["venv"])
    assert "/trusted/" in first["venv"]
    if change == "planted .pth":
        plant_pth(venv, proof)
    elif change == "edited file":
        with (venv / "installed-by-cxml.txt").open("a", encoding="utf-8") as handle:
            handle.write("import evil\n")
    else:
        (venv / "bin" / "python").unlink()
        (venv / "bin" / "python").symlink_to("/bin/sh")
    capsys.readouterr()

    again = setup_job(setup_script, monkeypatch, tmp_path, "schedule", {})
    assert again["venv"] == first["venv"]
    assert again["cache-hit"] == "false"
    out = capsys.readouterr().out
    assert out.startswith("::warning::cxml setup:"), out
    assert "rebuilding" in out
    start_python(venv)
    assert not proof.exists()
    assert (venv / "installed-by-cxml.txt").read_text(encoding="utf-8") == "cxml\n"
    assert setup_job(setup_script, monkeypatch, tmp_path, "push", {})["cache-hit"] == "true"


def test_a_venv_without_a_manifest_is_not_trusted(
    setup_script: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_builds(setup_script, monkeypatch)
    cache = tmp_path / "tool-cache"
    venv, _ = setup_script.ensure_venv(REPO_ROOT, ["train"], [], False, cache)
    (venv / ".cxml-manifest.json").unlink()  # e.g. planted as a whole, marker and all
    assert setup_script.ensure_venv(REPO_ROOT, ["train"], [], False, cache) == (venv, False)
    assert calls == ["build", "build"]

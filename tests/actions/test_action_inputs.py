"""One way from action inputs to step arguments: `python -m cxml.action <step>`.

- per step, table-driven: the `CXML_<STEP>_*` environment an action sets -> the argv its
  entry point gets (empty means "not given"; booleans strict; values stay values);
- every input an action.yml declares is mapped by the helper, and every mapped input is declared
  and handed over through the step's `env:` under the name the helper reads;
- the argv the helper builds parses with each entry point's own parser;
- the helper runs with `python -m`, imports no step (nor torch) until its step runs, and turns a
  bad input into one `::error::` line and exit 2.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from cxml import action as action_inputs
from cxml.action import STEPS, Input, Kind, env_name, input_arguments, step_argv
from cxml.core.errors import ConfigError
from tests.support.actions import PYTHON, REPO_ROOT

RUN_LINE = '"$CXML_PYTHON" -m cxml.action {step}'
SETUP_INPUTS = {"working-directory", "python", "extras", "pip-packages", "cache-dir"}
# Inputs the step reads from its own environment variable, not from a flag (secrets stay out of
# argv, where `ps` would show them).
PASSED_AS_ENV = {
    "report": {"github-token": "GITHUB_TOKEN", "api-url": "GITHUB_API_URL"},
    "redeploy": {"ssh-key": "CXML_SSH_KEY", "known-hosts": "CXML_KNOWN_HOSTS"},
}
# The root action prefixes the report's `target`/`name` and wires or fixes some inputs itself.
ROOT_ENV = {
    "CXML_REPORT_TARGET": "${{ inputs.report-target }}",
    "CXML_REPORT_NAME": "${{ inputs.report-name }}",
    "CXML_REPORT_MODEL_CHANGED": "${{ steps.train.outputs.model-changed }}",
    "CXML_EVALUATE_FAIL_ON_GATE": "false",
    "CXML_EVALUATE_TRACKING_IN_BACKGROUND": "true",
}


def load_action(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def action_step(path: Path, step_id: str) -> dict[str, Any]:
    steps = {step["id"]: step for step in load_action(path)["runs"]["steps"]}
    step = steps[step_id]
    assert isinstance(step, dict)
    return step


# --- env -> argv, per step ------------------------------------------------------------------

ARGV_CASES: list[tuple[str, dict[str, str], list[str]]] = [
    # train
    ("train", {}, []),
    (
        "train",
        {
            "CXML_TRAIN_PARAMS": "configs/params.yaml",
            "CXML_TRAIN_RESUME": "TRUE",
            "CXML_TRAIN_EPOCHS": " 3 ",
            "CXML_TRAIN_DEVICE": "cuda:1",
            "CXML_TRAIN_TRACKING": "false",
            "CXML_TRAIN_DVC": "Auto",
            "CXML_TRAIN_DVC_TARGETS": "train  dvc.yaml:evaluate\n",
            "CXML_TRAIN_DVC_PULL": "false",
            "CXML_TRAIN_DVC_PUSH": "true",
            "CXML_TRAIN_DVC_REMOTE": "s3",
        },
        [
            "--params=configs/params.yaml",
            "--resume",
            "--epochs=3",
            "--device=cuda:1",
            "--no-tracking",
            "--dvc=auto",
            "--dvc-target=train",
            "--dvc-target=dvc.yaml:evaluate",
            "--dvc-pull=false",
            "--dvc-push",
            "--dvc-remote=s3",
        ],
    ),
    (
        "train",  # the action's defaults: nothing to say
        {
            "CXML_TRAIN_PARAMS": "",
            "CXML_TRAIN_RESUME": "false",
            "CXML_TRAIN_TRACKING": "true",
            "CXML_TRAIN_DVC": "auto",
            "CXML_TRAIN_DVC_PUSH": "false",
        },
        ["--dvc=auto"],
    ),
    # evaluate
    ("evaluate", {"CXML_EVALUATE_FAIL_ON_GATE": "true"}, []),
    (
        "evaluate",
        {
            "CXML_EVALUATE_PARAMS": "p.yaml",
            "CXML_EVALUATE_BASELINE": "git:origin/main",
            "CXML_EVALUATE_GATE": "accuracy >= 0.9\n\n   \n  loss <= baseline * 1.1  \n",
            "CXML_EVALUATE_FAIL_ON_GATE": "false",
            "CXML_EVALUATE_TRACKING_IN_BACKGROUND": "true",
        },
        [
            "--params=p.yaml",
            "--baseline=git:origin/main",
            "--gate=accuracy >= 0.9",
            "--gate=loss <= baseline * 1.1",
            "--no-fail",
            "--tracking-in-background",
        ],
    ),
    # report
    ("report", {"CXML_REPORT_MODEL_CHANGED": "true", "CXML_REPORT_DRY_RUN": "false"}, []),
    (
        "report",
        {
            "CXML_REPORT_PARAMS": "p.yaml",
            "CXML_REPORT_TARGET": "none",
            "CXML_REPORT_NAME": 'Tune lr "; rm -rf ~ # $(id)',
            "CXML_REPORT_PUBLISH_IMAGES": "true",
            "CXML_REPORT_DRY_RUN": "true",
            "CXML_REPORT_MODEL_CHANGED": "false",
            "CXML_REPORT_FROM_ARTIFACT": "/runner/_temp/cxml-pr-report",
            "CXML_REPORT_MARKDOWN": "cml/report.md",
        },
        [
            "--params=p.yaml",
            "--target=none",
            '--name=Tune lr "; rm -rf ~ # $(id)',
            "--publish-images=true",
            "--dry-run",
            "--model-unchanged",
            "--from-artifact=/runner/_temp/cxml-pr-report",
            "--markdown=cml/report.md",
        ],
    ),
    ("report", {"CXML_REPORT_NAME": "--dry-run"}, ["--name=--dry-run"]),  # a value stays a value
    # redeploy: the action's defaults, then everything
    (
        "redeploy",
        {
            "CXML_REDEPLOY_ENVIRONMENT": "",
            "CXML_REDEPLOY_CONFIG": "deploy.yaml",
            "CXML_REDEPLOY_HOST": "deploy.example.com",
            "CXML_REDEPLOY_PORT": "",
            "CXML_REDEPLOY_MODE": "",
            "CXML_REDEPLOY_MODEL_PATH": "model/model.pt",
            "CXML_REDEPLOY_RUN_INFO": "run.json",
            "CXML_REDEPLOY_GATE_FILE": "gate.json",
            "CXML_REDEPLOY_KEEP": "",
            "CXML_REDEPLOY_ACCEPT_NEW_HOST_KEY": "false",
            "CXML_REDEPLOY_FORCE": "false",
            "CXML_REDEPLOY_ROLLBACK": "false",
            "CXML_REDEPLOY_DRY_RUN": "false",
            "CXML_REDEPLOY_USER": "",
            "CXML_REDEPLOY_ROOT": "",
        },
        [
            "--config=deploy.yaml",
            "--host=deploy.example.com",
            "--model=model/model.pt",
            "--run-info=run.json",
            "--gate=gate.json",
        ],
    ),
    # redeploy by environment: host settings left empty so deploy.yaml's apply
    (
        "redeploy",
        {
            "CXML_REDEPLOY_ENVIRONMENT": "production",
            "CXML_REDEPLOY_CONFIG": "ops/deploy.yaml",
            "CXML_REDEPLOY_PORT": "",
            "CXML_REDEPLOY_KEEP": "",
        },
        ["--env=production", "--config=ops/deploy.yaml"],
    ),
    (
        "redeploy",
        {
            "CXML_REDEPLOY_ENVIRONMENT": "production",
            "CXML_REDEPLOY_CONFIG": "ops/deploy.yaml",
            "CXML_REDEPLOY_HOST": "10.0.0.5",
            "CXML_REDEPLOY_USER": "deploy",
            "CXML_REDEPLOY_PORT": "2222",
            "CXML_REDEPLOY_ACCEPT_NEW_HOST_KEY": "true",
            "CXML_REDEPLOY_ROOT": "/srv/widgets",
            "CXML_REDEPLOY_MODE": "process",
            "CXML_REDEPLOY_IMAGE": "widgets:1",
            "CXML_REDEPLOY_DOCKER_COMMAND": "podman",
            "CXML_REDEPLOY_REMOTE_PYTHON": "/opt/venv/bin/python",
            "CXML_REDEPLOY_PUBLIC_URL": "http://127.0.0.1:8080",
            "CXML_REDEPLOY_PROXY_CONFIG": "/etc/nginx/cxml-upstream.conf",
            "CXML_REDEPLOY_MODEL_PATH": "out/m.pt",
            "CXML_REDEPLOY_RUN_INFO": "out/run.json",
            "CXML_REDEPLOY_GATE_FILE": "out/gate.json",
            "CXML_REDEPLOY_KEEP": "3",
            "CXML_REDEPLOY_FORCE": "true",
            "CXML_REDEPLOY_REASON": "hotfix #12",
            "CXML_REDEPLOY_ROLLBACK": "true",
            "CXML_REDEPLOY_DRY_RUN": "true",
        },
        [
            "--env=production",
            "--config=ops/deploy.yaml",
            "--host=10.0.0.5",
            "--user=deploy",
            "--port=2222",
            "--accept-new-host-key",
            "--root=/srv/widgets",
            "--mode=process",
            "--image=widgets:1",
            "--docker-command=podman",
            "--remote-python=/opt/venv/bin/python",
            "--public-url=http://127.0.0.1:8080",
            "--proxy-config=/etc/nginx/cxml-upstream.conf",
            "--model=out/m.pt",
            "--run-info=out/run.json",
            "--gate=out/gate.json",
            "--keep=3",
            "--force",
            "--reason=hotfix #12",
            "--rollback",
            "--dry-run",
        ],
    ),
]


@pytest.mark.parametrize(
    ("step", "environ", "argv"),
    ARGV_CASES,
    ids=[f"{step}-{i}" for i, (step, _, _) in enumerate(ARGV_CASES)],
)
def test_inputs_become_the_step_arguments(
    step: str, environ: dict[str, str], argv: list[str]
) -> None:
    assert step_argv(step, environ) == argv


def test_other_steps_inputs_and_unrelated_variables_are_ignored() -> None:
    environ = {"CXML_REPORT_DRY_RUN": "true", "CXML_TRAIN_PARAMS": "x", "CXML_EVALUATE": "y"}
    assert step_argv("evaluate", environ) == []


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        (Kind.VALUE, "", []),
        (Kind.VALUE, "   \n", []),
        (Kind.VALUE, " a b ", ["--x=a b"]),
        (Kind.FLAG, "", []),
        (Kind.FLAG, "true", ["--x"]),
        (Kind.FLAG, "True", ["--x"]),
        (Kind.FLAG, "false", []),
        (Kind.NEGATED, "", []),
        (Kind.NEGATED, "true", []),
        (Kind.NEGATED, "FALSE", ["--x"]),
        (Kind.LINES, "a\r\n\n b \n", ["--x=a", "--x=b"]),
        (Kind.WORDS, " a\tb\nc ", ["--x=a", "--x=b", "--x=c"]),
    ],
)
def test_each_kind_of_input(kind: Kind, text: str, expected: list[str]) -> None:
    assert input_arguments(Input("x", "--x", kind), text) == expected


@pytest.mark.parametrize(
    ("step", "variable", "value", "message"),
    [
        ("train", "CXML_TRAIN_DVC_PUSH", "yes", "input dvc-push: expected one of true, false, got 'yes'"),
        ("train", "CXML_TRAIN_DVC", "sometimes", "input dvc: expected one of auto, true, false, got 'sometimes'"),
        ("evaluate", "CXML_EVALUATE_FAIL_ON_GATE", "no", "input fail-on-gate: expected one of true, false"),
        ("report", "CXML_REPORT_DRY_RUN", "1", "input dry-run: expected one of true, false, got '1'"),
        ("redeploy", "CXML_REDEPLOY_FORCE", "ture", "input force: expected one of true, false, got 'ture'"),
    ],
)  # fmt: skip
def test_a_boolean_or_choice_that_is_neither_is_a_clear_error(
    step: str, variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        step_argv(step, {variable: value})
    assert caught.value.exit_code == 2


def test_an_unknown_step_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown action step 'deploy'; one of train, evaluate"):
        step_argv("deploy", {})


# --- the action files and the helper agree ----------------------------------------------------

SEPARATE_ACTIONS = sorted(STEPS)


@pytest.mark.parametrize("step", SEPARATE_ACTIONS)
def test_every_action_input_is_mapped_and_every_mapped_input_declared(step: str) -> None:
    declared = set(load_action(REPO_ROOT / "actions" / step / "action.yml")["inputs"])
    passed_as_env = set(PASSED_AS_ENV.get(step, {}))
    mapped = {action_input.name for action_input in STEPS[step].inputs}
    assert len(mapped) == len(STEPS[step].inputs), "an input is mapped twice"
    step_inputs = declared - SETUP_INPUTS - passed_as_env
    assert step_inputs - mapped == set(), f"actions/{step} inputs the helper ignores"
    assert mapped - step_inputs == set(), f"the helper maps inputs actions/{step} lacks"


@pytest.mark.parametrize("step", SEPARATE_ACTIONS)
def test_each_action_hands_its_inputs_to_the_helper_through_env(step: str) -> None:
    run = action_step(REPO_ROOT / "actions" / step / "action.yml", step)
    assert run["run"] == RUN_LINE.format(step=step)
    expected = {
        env_name(step, action_input): f"${{{{ inputs.{action_input.name} }}}}"
        for action_input in STEPS[step].inputs
    }
    expected |= {
        variable: f"${{{{ inputs.{name} }}}}"
        for name, variable in PASSED_AS_ENV.get(step, {}).items()
    }
    expected["CXML_PYTHON"] = "${{ steps.setup.outputs.python }}"
    assert run["env"] == expected


@pytest.mark.parametrize("step", ["train", "evaluate", "report"])
def test_the_root_action_hands_each_step_its_inputs_the_same_way(step: str) -> None:
    run = action_step(REPO_ROOT / "action.yml", step)
    assert run["run"] == RUN_LINE.format(step=step)
    root_inputs = set(load_action(REPO_ROOT / "action.yml")["inputs"])
    for action_input in STEPS[step].inputs:
        name = env_name(step, action_input)
        wired = ROOT_ENV.get(name, f"${{{{ inputs.{action_input.name} }}}}")
        assert run["env"].get(name) == wired, name
        if wired.startswith("${{ inputs."):
            assert wired.removeprefix("${{ inputs.").removesuffix(" }}") in root_inputs
    unknown = {name for name in run["env"] if name.startswith(f"CXML_{step.upper()}_")} - {
        env_name(step, action_input) for action_input in STEPS[step].inputs
    }
    assert not unknown, f"action.yml sets {sorted(unknown)}, which the helper never reads"


# --- the argv parses with the entry point's own parser ---------------------------------------

FULL_ENV = {  # per step, the case that gives the most inputs
    step: max((environ for s, environ, _ in ARGV_CASES if s == step), key=len) for step in STEPS
}


def test_the_full_cases_give_every_input() -> None:
    for step, environ in FULL_ENV.items():
        assert {env_name(step, i) for i in STEPS[step].inputs} <= set(environ), step


@pytest.mark.parametrize("step", sorted(STEPS))
def test_the_argv_parses_with_the_entry_points_own_parser(step: str) -> None:
    module = importlib.import_module(STEPS[step].module)
    args = module.parse_args(step_argv(step, FULL_ENV[step]))
    assert args is not None


def test_the_arguments_parse_as_values_not_options() -> None:
    from cxml.repro import parse_args

    args = parse_args(
        step_argv("train", {"CXML_TRAIN_PARAMS": "--resume", "CXML_TRAIN_DVC": "TRUE"})
    )
    assert (args.params, args.resume, args.dvc) == ("--resume", False, "true")


def test_repro_passes_training_options_that_cxml_train_knows(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without DVC, cxml.repro calls cxml.train's main; its argv parses with train's parser."""
    import cxml.repro

    seen: list[list[str]] = []
    fake_train = types.ModuleType("cxml.train")
    fake_train.main = lambda argv: seen.append(list(argv)) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cxml.train", fake_train)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    # setenv first so monkeypatch undoes what cxml.repro writes into os.environ (delenv of an
    # unset name records nothing, and CXML_DEVICE=cuda:1 would leak into later tests)
    monkeypatch.setenv("CXML_DEVICE", "")
    monkeypatch.delenv("CXML_DEVICE")
    argv = step_argv("train", {**FULL_ENV["train"], "CXML_TRAIN_DVC": "false"})
    assert cxml.repro.main(argv) == 0
    assert seen == [["--params=configs/params.yaml", "--resume", "--epochs=3", "--no-tracking"]]
    assert os.environ["CXML_DEVICE"] == "cuda:1"  # as before: applies inside `dvc repro` too
    monkeypatch.delitem(sys.modules, "cxml.train")
    from cxml.train import parse_args as train_parse_args

    parsed = train_parse_args(seen[0])
    assert (parsed.params, parsed.resume, parsed.epochs, parsed.no_tracking) == (
        "configs/params.yaml",
        True,
        3,
        True,
    )


# --- running it --------------------------------------------------------------------------------


def test_run_step_calls_the_step_main_with_the_built_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    fake_step = types.ModuleType("fake_step")
    fake_step.main = lambda argv: seen.append(list(argv)) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_step", fake_step)
    monkeypatch.setitem(
        action_inputs.STEPS, "fake", action_inputs.ActionStep("fake_step", (Input("x", "--x"),))
    )
    assert action_inputs.run_step("fake", {"CXML_FAKE_X": "1"}) == 7
    assert seen == [["--x=1"]]


def helper(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CXML_", "GITHUB_"))}
    return subprocess.run(
        [PYTHON, "-m", "cxml.action", *args],
        env={**clean, **environ},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_bad_input_stops_before_the_step_with_one_error_annotation() -> None:
    result = helper("redeploy", GITHUB_ACTIONS="true", CXML_REDEPLOY_DRY_RUN="yes")
    assert result.returncode == 2, result.stderr
    assert result.stdout == "::error::input dry-run: expected one of true, false, got 'yes'\n"
    assert "Traceback" not in result.stderr


def test_an_unknown_step_is_a_usage_error() -> None:
    result = helper("deploy")
    assert result.returncode == 2
    assert "invalid choice: 'deploy'" in result.stderr


def test_the_helper_imports_no_step_and_no_torch() -> None:
    code = (
        "import sys, cxml.action as a; a.step_argv('train', {}); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mlflow', 'dvc') "
        "or m in ('cxml.train', 'cxml.evaluate', 'cxml.repro', 'cxml.redeploy', 'cxml.report.step')))"
    )
    result = subprocess.run(
        [PYTHON, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert result.stdout.strip() == "[]"

"""A composite action's step in one line: its `CXML_<STEP>_*` inputs become the step's arguments.

Each action passes its inputs through `env:` (never pasted into the script, so a pull request's
title cannot become shell code), named `CXML_<STEP>_<INPUT>`: the input's kebab-case name
upper-cased with `_` for `-` (input `dvc-push` of the train action is `CXML_TRAIN_DVC_PUSH`).
The action's step is then one line::

    "$CXML_PYTHON" -m cxml.action train

which reads the step's table below, builds the argument list and calls the step's `main` with
it. The table says, per input, which flag it becomes and how:

- value: `--flag=VALUE` (the `=` form, so a value starting with `-` stays a value);
- choice: a value that must be one of a few words (any case);
- flag: `--flag` when the input is `true`;
- negated: `--flag` when the input is `false` (the flag turns off what is on by default);
- lines: `--flag=LINE` for every non-blank line (gate rules);
- words: `--flag=WORD` for every word separated by whitespace (DVC stages).

An empty input is "not given": no argument, so the step's own default (or params.yaml) applies.
Booleans are `true` or `false` in any case; anything else is one clear error naming the input,
raised before the step runs. Step modules are imported by name only when their step runs, so
this module costs no torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from cxml.core import console
from cxml.core.errors import ConfigError


class Kind(Enum):
    VALUE = "value"
    CHOICE = "choice"
    FLAG = "flag"
    NEGATED = "negated"
    LINES = "lines"
    WORDS = "words"


BOOLEANS = ("true", "false")


@dataclass(frozen=True)
class Input:
    """One action input (kebab-case, as in action.yml) and the command-line flag it becomes."""

    name: str
    flag: str
    kind: Kind = Kind.VALUE
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class ActionStep:
    """The Python entry point an action's step calls, and the inputs it takes from `env:`."""

    module: str
    inputs: tuple[Input, ...]


AUTO_OR_BOOLEAN = ("auto", *BOOLEANS)

STEPS: dict[str, ActionStep] = {
    "train": ActionStep(
        "cxml.repro",
        (
            Input("params", "--params"),
            Input("resume", "--resume", Kind.FLAG),
            Input("epochs", "--epochs"),
            Input("device", "--device"),
            Input("tracking", "--no-tracking", Kind.NEGATED),
            Input("dvc", "--dvc", Kind.CHOICE, AUTO_OR_BOOLEAN),
            Input("dvc-targets", "--dvc-target", Kind.WORDS),
            Input("dvc-pull", "--dvc-pull", Kind.CHOICE, AUTO_OR_BOOLEAN),
            Input("dvc-push", "--dvc-push", Kind.FLAG),
            Input("dvc-remote", "--dvc-remote"),
        ),
    ),
    "evaluate": ActionStep(
        "cxml.evaluate",
        (
            Input("params", "--params"),
            Input("baseline", "--baseline"),
            Input("gate", "--gate", Kind.LINES),
            Input("fail-on-gate", "--no-fail", Kind.NEGATED),
            Input("tracking-in-background", "--tracking-in-background", Kind.FLAG),
        ),
    ),
    "report": ActionStep(
        "cxml.report.step",
        (
            Input("params", "--params"),
            Input("target", "--target"),
            Input("name", "--name"),
            Input("publish-images", "--publish-images", Kind.CHOICE, AUTO_OR_BOOLEAN),
            Input("dry-run", "--dry-run", Kind.FLAG),
            Input("model-changed", "--model-unchanged", Kind.NEGATED),
            Input("from-artifact", "--from-artifact"),
            Input("markdown", "--markdown"),
        ),
    ),
    "redeploy": ActionStep(
        "cxml.redeploy",
        (
            Input("environment", "--env"),
            Input("config", "--config"),
            Input("host", "--host"),
            Input("user", "--user"),
            Input("port", "--port"),
            Input("accept-new-host-key", "--accept-new-host-key", Kind.FLAG),
            Input("root", "--root"),
            Input("mode", "--mode"),
            Input("image", "--image"),
            Input("docker-command", "--docker-command"),
            Input("remote-python", "--remote-python"),
            Input("public-url", "--public-url"),
            Input("proxy-config", "--proxy-config"),
            Input("model-path", "--model"),
            Input("run-info", "--run-info"),
            Input("gate-file", "--gate"),
            Input("keep", "--keep"),
            Input("force", "--force", Kind.FLAG),
            Input("reason", "--reason"),
            Input("rollback", "--rollback", Kind.FLAG),
            Input("dry-run", "--dry-run", Kind.FLAG),
        ),
    ),
}
"""Action step name -> entry point and inputs. Inputs an action hands over otherwise (the
token as GITHUB_TOKEN, the SSH key as CXML_SSH_KEY, setup's and `working-directory`) are not
here: the step reads those itself."""


def env_name(step: str, action_input: Input) -> str:
    """`CXML_<STEP>_<INPUT>`: where the action's `env:` puts the input for the step."""
    return f"CXML_{step.upper()}_{action_input.name.upper().replace('-', '_')}"


def step_argv(step: str, environ: Mapping[str, str]) -> list[str]:
    """The arguments of the step's `main`, from the action inputs in `environ`."""
    argv: list[str] = []
    for action_input in find_step(step).inputs:
        text = environ.get(env_name(step, action_input), "")
        argv += input_arguments(action_input, text)
    return argv


def input_arguments(action_input: Input, text: str) -> list[str]:
    """The arguments one input becomes; none when it is empty (not given)."""
    value = text.strip()
    if not value:
        return []
    flag, kind = action_input.flag, action_input.kind
    if kind is Kind.VALUE:
        return [f"{flag}={value}"]
    if kind is Kind.CHOICE:
        return [f"{flag}={one_of(action_input, value, action_input.choices)}"]
    if kind is Kind.LINES:
        return [f"{flag}={line.strip()}" for line in value.splitlines() if line.strip()]
    if kind is Kind.WORDS:
        return [f"{flag}={word}" for word in value.split()]
    wanted = "true" if kind is Kind.FLAG else "false"
    return [flag] if one_of(action_input, value, BOOLEANS) == wanted else []


def one_of(action_input: Input, value: str, allowed: Sequence[str]) -> str:
    word = value.lower()
    if word not in allowed:
        raise ConfigError(
            f"input {action_input.name}: expected one of {', '.join(allowed)}, got {value!r}"
        )
    return word


def find_step(step: str) -> ActionStep:
    if step not in STEPS:
        raise ConfigError(f"unknown action step {step!r}; one of {', '.join(STEPS)}")
    return STEPS[step]


def run_step(step: str, environ: Mapping[str, str]) -> int:
    """Build the step's argv from its inputs, then call its `main` (imported only now)."""
    argv = step_argv(step, environ)
    module = importlib.import_module(find_step(step).module)
    result: int = module.main(argv)
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cxml.action",
        description="Run a cxml action's step with the arguments its CXML_<STEP>_* inputs give.",
    )
    parser.add_argument("step", choices=sorted(STEPS), help="the action step to run")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_step(args.step, os.environ)


if __name__ == "__main__":
    raise SystemExit(console.run_entry_point(main))

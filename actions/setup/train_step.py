"""The train action's one step: `python -m cxml.train`, or the DVC pipeline when the repo has one.

Run with the environment's Python (cxml installed) by `actions/train` and the root action.
Inputs come from the environment (`CXML_TRAIN_*`, set from the action's inputs through
`env:`), never from the command line a shell would parse.

DVC mode (`dvc: auto` and a `dvc.yaml`, or `dvc: true`): `dvc pull` when a remote is
configured, `dvc repro <targets>`, then `dvc push` when asked. The stage commands in
dvc.yaml call `python -m cxml.train` themselves, so DVC decides whether anything runs; a
change that touches no dependency of the stages retrains nothing, and the step output
`model-changed` is `false` ("model unchanged"): the model file recorded in dvc.lock is the one
committed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxml.core import console, files, ghactions
from cxml.core.config import load_params
from cxml.core.errors import ConfigError, CxmlError


@dataclass(frozen=True)
class TrainInputs:
    params: str | None
    resume: bool
    epochs: str | None
    device: str | None
    tracking: bool
    dvc: str
    dvc_targets: tuple[str, ...]
    dvc_pull: str
    dvc_push: bool
    dvc_remote: str | None


def read_inputs(environ: Mapping[str, str]) -> TrainInputs:
    def text(name: str) -> str | None:
        value = environ.get(f"CXML_TRAIN_{name}", "").strip()
        return value or None

    def choice(name: str, default: str, allowed: Sequence[str]) -> str:
        value = (text(name) or default).lower()
        if value not in allowed:
            input_name = name.lower().replace("_", "-")
            raise ConfigError(
                f"input {input_name}: expected one of {', '.join(allowed)}, got {value!r}"
            )
        return value

    booleans = ("true", "false")
    return TrainInputs(
        params=text("PARAMS"),
        resume=choice("RESUME", "false", booleans) == "true",
        epochs=text("EPOCHS"),
        device=text("DEVICE"),
        tracking=choice("TRACKING", "true", booleans) == "true",
        dvc=choice("DVC", "auto", ("auto", *booleans)),
        dvc_targets=tuple((text("DVC_TARGETS") or "").split()),
        dvc_pull=choice("DVC_PULL", "auto", ("auto", *booleans)),
        dvc_push=choice("DVC_PUSH", "false", booleans) == "true",
        dvc_remote=text("DVC_REMOTE"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    inputs = read_inputs(os.environ)
    if inputs.device:
        os.environ["CXML_DEVICE"] = inputs.device  # train reads it, also inside `dvc repro`
    if use_dvc(inputs):
        train_with_dvc(inputs)
    else:
        train_directly(inputs)
    return 0


def use_dvc(inputs: TrainInputs) -> bool:
    if inputs.dvc == "auto":
        return Path("dvc.yaml").is_file()
    if inputs.dvc == "true" and not Path("dvc.yaml").is_file():
        raise ConfigError(
            "input dvc: true, but there is no dvc.yaml here; run `cxml init` or set dvc: auto"
        )
    return inputs.dvc == "true"


def train_directly(inputs: TrainInputs) -> None:
    args = [sys.executable, "-m", "cxml.train"]
    if inputs.params:
        args += ["--params", inputs.params]
    if inputs.resume:
        args.append("--resume")
    if inputs.epochs:
        args += ["--epochs", inputs.epochs]
    if not inputs.tracking:
        args.append("--no-tracking")
    returncode = subprocess.run(args, check=False).returncode
    if returncode != 0:
        raise SystemExit(returncode)  # cxml.train has printed its own error and annotation
    ghactions.set_output("model-changed", "true")


def train_with_dvc(inputs: TrainInputs) -> None:
    ignored = [
        name for name, given in (("resume", inputs.resume), ("epochs", inputs.epochs)) if given
    ]
    if ignored:
        console.warn(
            f"input {', '.join(ignored)}: ignored with DVC; dvc.yaml's stage commands decide"
        )
    require_dvc()
    # Stage commands (`python -m cxml.train`) must find this environment's Python first.
    venv_bin = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join([venv_bin, os.environ.get("PATH", "")])
    params = load_params(inputs.params)
    model_path = params.outputs.model
    committed_model = locked_model_hash(Path("dvc.lock"), model_path)
    remote = ["-r", inputs.dvc_remote] if inputs.dvc_remote else []
    if inputs.dvc_pull == "true" or (inputs.dvc_pull == "auto" and has_remote(inputs.dvc_remote)):
        # Only what the asked-for stages need (their deps and their outputs, so an unchanged
        # stage is restored, not rerun). Missing files are normal (a stage never pushed):
        # repro recomputes them.
        targets = ["--with-deps", *inputs.dvc_targets] if inputs.dvc_targets else []
        dvc("pull", *remote, "--allow-missing", *targets, what="dvc pull", must_succeed=False)
    dvc("repro", *inputs.dvc_targets, what="dvc repro")
    trained_model = locked_model_hash(Path("dvc.lock"), model_path)
    model_changed = committed_model is None or committed_model != trained_model
    if inputs.dvc_push:
        dvc("push", *remote, "--run-cache", what="dvc push")
    if model_changed:
        console.info(f"dvc: {model_path} changed")
    else:
        console.info(
            f"dvc: model unchanged ({model_path} is the one in dvc.lock); nothing retrained"
        )
        ghactions.append_summary(
            f"**Model unchanged**: `{model_path}` is the one recorded in dvc.lock."
        )
    write_step_outputs(
        params.outputs.run_info, model_path, str(params.outputs.train_metrics), model_changed
    )


def require_dvc() -> None:
    import importlib.util

    if importlib.util.find_spec("dvc") is None:
        raise ConfigError(
            "this repository has a dvc.yaml but DVC is not installed in the cxml environment; "
            "add `dvc` to the `extras` input, or set `dvc: false` to train without DVC"
        )


def has_remote(name: str | None) -> bool:
    if name:
        return True
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "remote", "default"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and bool(result.stdout.strip())


def dvc(*args: str, what: str, must_succeed: bool = True) -> None:
    console.info(f"$ dvc {' '.join(args)}")
    returncode = subprocess.run([sys.executable, "-m", "dvc", *args], check=False).returncode
    if returncode == 0:
        return
    if must_succeed:
        raise CxmlError(f"{what} failed (exit {returncode}); see the DVC output above")
    console.warn(f"{what} failed (exit {returncode}); continuing without it")


def locked_model_hash(lock_file: Path, model_path: str) -> str | None:
    """The hash dvc.lock records for the model output, None when it records none."""
    if not lock_file.is_file():
        return None
    import yaml

    lock: Any = yaml.safe_load(lock_file.read_text(encoding="utf-8")) or {}
    stages = lock.get("stages", {}) if isinstance(lock, dict) else {}
    wanted = Path(model_path).as_posix()
    for stage in stages.values() if isinstance(stages, dict) else ():
        for out in stage.get("outs", []) if isinstance(stage, dict) else ():
            if isinstance(out, dict) and Path(str(out.get("path", ""))).as_posix() == wanted:
                return str(out.get("md5") or out.get("etag") or out.get("checksum") or "") or None
    return None


def write_step_outputs(
    run_info: str, model_path: str, metrics_file: str, model_changed: bool
) -> None:
    """Outputs from the files on disk: right whether the stage ran now or was restored by DVC."""
    run: dict[str, Any] = {}
    if Path(run_info).is_file():
        loaded = files.read_json(run_info, what="run info")
        run = loaded if isinstance(loaded, dict) else {}
    ghactions.set_output("run-id", str(run.get("run_id") or ""))
    ghactions.set_output("model-version", str(run.get("model_version") or ""))
    ghactions.set_output("model-path", model_path)
    ghactions.set_output("metrics-file", metrics_file)
    ghactions.set_output("model-changed", "true" if model_changed else "false")


if __name__ == "__main__":
    raise SystemExit(console.run_entry_point(main))

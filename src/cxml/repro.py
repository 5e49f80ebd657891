"""`python -m cxml.repro`: the train action's step: the DVC pipeline when there is one, else `cxml.train`.

DVC mode (`--dvc auto` and a `dvc.yaml` here, or `--dvc true`): `dvc pull` when a remote is
configured, `dvc repro <targets>`, then `dvc push` when asked. The stage commands in dvc.yaml
call `python -m cxml.train` themselves, so DVC decides whether anything runs; a change that
touches no dependency of the stages retrains nothing, and the step output `model-changed` is
`false` ("model unchanged"): the model file recorded in dvc.lock is the one committed.
Otherwise `cxml.train` runs here with the training options, and `model-changed` is `true`.

The train action runs it through `cxml.action`, which turns the action's inputs
into these options.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cxml.core import console, env, ghactions
from cxml.core.config import load_params
from cxml.core.errors import ConfigError, TrainingError
from cxml.records.run import read_run

AUTO_OR_BOOLEAN = ("auto", "true", "false")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cxml repro", description=__doc__)
    parser.add_argument("--params", default=None, help="params file (default: params.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--epochs", default=None, help="override train.epochs (not with DVC)")
    parser.add_argument(
        "--device", default=None, help="override train.device (as CXML_DEVICE, also inside DVC)"
    )
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    parser.add_argument(
        "--dvc",
        choices=AUTO_OR_BOOLEAN,
        default="auto",
        help="auto: the DVC pipeline when there is a dvc.yaml (default); true: require it",
    )
    parser.add_argument(
        "--dvc-target",
        dest="dvc_targets",
        action="append",
        default=[],
        metavar="STAGE",
        help="a stage `dvc repro` reproduces (repeatable; default: the whole pipeline)",
    )
    parser.add_argument(
        "--dvc-pull",
        choices=AUTO_OR_BOOLEAN,
        default="auto",
        help="auto: `dvc pull` when a DVC remote is configured (default)",
    )
    parser.add_argument(
        "--dvc-push", action="store_true", help="`dvc push --run-cache` after `dvc repro`"
    )
    parser.add_argument("--dvc-remote", default=None, help="DVC remote (default: the default one)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device:
        os.environ[env.CXML_DEVICE] = args.device  # train reads it, also inside `dvc repro`
    if use_dvc(args.dvc):
        train_with_dvc(args)
        return 0
    return train_directly(args)


def use_dvc(dvc: str) -> bool:
    if dvc == "auto":
        return Path("dvc.yaml").is_file()
    if dvc == "true" and not Path("dvc.yaml").is_file():
        raise ConfigError(
            "input dvc: true, but there is no dvc.yaml here; run `cxml init` or set dvc: auto"
        )
    return dvc == "true"


def train_directly(args: argparse.Namespace) -> int:
    train_argv = [f"--params={args.params}"] if args.params else []
    if args.resume:
        train_argv.append("--resume")
    if args.epochs:
        train_argv.append(f"--epochs={args.epochs}")
    if args.no_tracking:
        train_argv.append("--no-tracking")
    train = importlib.import_module("cxml.train")  # by name: a step is never imported
    returncode: int = train.main(train_argv)
    if returncode == 0:
        ghactions.set_output("model-changed", "true")
    return returncode


def train_with_dvc(args: argparse.Namespace) -> None:
    ignored = [name for name, given in (("resume", args.resume), ("epochs", args.epochs)) if given]
    if ignored:
        console.warn(
            f"input {', '.join(ignored)}: ignored with DVC; dvc.yaml's stage commands decide"
        )
    require_dvc()
    # Stage commands (`python -m cxml.train`) must find this environment's Python first.
    venv_bin = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join([venv_bin, os.environ.get("PATH", "")])
    params = load_params(args.params)
    model_path = params.outputs.model
    committed_model = locked_model_hash(Path("dvc.lock"), model_path)
    remote = ["-r", args.dvc_remote] if args.dvc_remote else []
    if args.dvc_pull == "true" or (args.dvc_pull == "auto" and has_remote(args.dvc_remote)):
        # Only what the asked-for stages need (their deps and their outputs, so an unchanged
        # stage is restored, not rerun). Missing files are normal (a stage never pushed):
        # repro recomputes them.
        targets = ["--with-deps", *args.dvc_targets] if args.dvc_targets else []
        dvc("pull", *remote, "--allow-missing", *targets, what="dvc pull", must_succeed=False)
    dvc("repro", *args.dvc_targets, what="dvc repro")
    trained_model = locked_model_hash(Path("dvc.lock"), model_path)
    model_changed = committed_model is None or committed_model != trained_model
    if args.dvc_push:
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
    with ghactions.log_group(f"dvc {' '.join(args)}"):
        console.info(f"$ dvc {' '.join(args)}")
        returncode = subprocess.run([sys.executable, "-m", "dvc", *args], check=False).returncode
    if returncode == 0:
        return
    if must_succeed:
        raise TrainingError(f"{what} failed (exit {returncode}); see the DVC output above")
    console.warn(f"{what} failed (exit {returncode}); continuing without it")


def locked_model_hash(lock_file: Path, model_path: str) -> str | None:
    """The hash dvc.lock records for the model output, None when it records none."""
    if not lock_file.is_file():
        return None
    from cxml.core.config import parse_yaml
    from cxml.core.files import read_utf8

    fix = "run `dvc repro` to rewrite it"
    text = read_utf8(lock_file, fix=fix, error=ConfigError)
    lock: Any = parse_yaml(text, str(lock_file))
    stages = lock.get("stages", {}) if isinstance(lock, dict) else {}
    wanted = Path(model_path).as_posix()
    for stage in stages.values() if isinstance(stages, dict) else ():
        outs = stage.get("outs") if isinstance(stage, dict) else None
        for out in outs if isinstance(outs, list) else ():
            if isinstance(out, dict) and Path(str(out.get("path", ""))).as_posix() == wanted:
                return str(out.get("md5") or out.get("etag") or out.get("checksum") or "") or None
    return None


def write_step_outputs(
    run_info: str, model_path: str, metrics_file: str, model_changed: bool
) -> None:
    """Outputs from the files on disk: right whether the stage ran now or was restored by DVC."""
    run = read_run(run_info)
    ghactions.set_output("run-id", (run and run.run_id) or "")
    ghactions.set_output("model-version", (run and run.model_version) or "")
    ghactions.set_output("model-path", model_path)
    ghactions.set_output("metrics-file", metrics_file)
    ghactions.set_output("model-changed", "true" if model_changed else "false")


if __name__ == "__main__":
    raise SystemExit(console.run_entry_point(main))

"""`cxml init [DIR]`: write params.yaml, deploy.yaml, dvc.yaml, workflow templates and ignore entries into a repository."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from cxml.core import console, env, files, git
from cxml.core.errors import ConfigError

# `--workflows` name -> template file (under cxml/templates/workflows, copied from the
# repository's workflows-templates/ and kept identical by tests/test_templates.py).
WORKFLOWS: dict[str, str] = {
    "pull-request": "cxml-pull-request.yml",
    # The trusted `workflow_run` job that comments for fork pull requests (read-only token).
    "pr-comment": "cxml-pr-comment.yml",
    "main": "cxml-main.yml",
    # staging -> checks -> production after a gated run of main (replaces main's deploy job)
    "promote": "cxml-promote.yml",
    "schedule": "cxml-schedule.yml",
    "ci": "ci.yml",
    "docker-image": "docker-image.yml",
}
DEFAULT_WORKFLOWS = ("pull-request", "pr-comment", "main")
TEMPLATE_ACTIONS = "org/cxml@v1"
"""How the templates name the cxml actions (`org/cxml/actions/train@v1`), a placeholder that
init always replaces: a workflow using it would fail on its first push."""
ACTIONS_PATTERN = re.compile(
    r"^(?P<repo>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)@(?P<ref>[A-Za-z0-9_./-]+)$"
)
GITHUB_GIT_URL = re.compile(
    r"^(?:git\+)?(?:https://|ssh://git@|git@)github\.com[/:](?P<repo>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?)"
    r"(?:\.git)?/?$"
)
WRITTEN_ACTION = re.compile(
    r"uses:\s*(?P<repo>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)/actions/(?:train|evaluate|report|redeploy)"
    r"@(?P<ref>[A-Za-z0-9_./-]+)"
)
ASK_FOR_ACTIONS = (
    "pass --actions OWNER/REPO@REF (the repository and tag you use cxml's actions from, "
    "e.g. --actions your-org/cxml@v1), or set CXML_ACTIONS; the workflows cannot work without it"
)


@dataclass(frozen=True)
class ActionsReference:
    """Where the written workflows take cxml's actions from, and how init knew it."""

    repo: str
    ref: str
    source: str

    @property
    def text(self) -> str:
        return f"{self.repo}@{self.ref}"


# Run outputs that never belong in git. Metrics stay tracked: the baseline of a pull request is
# metrics/eval.json at its base branch. With DVC, `dvc repro` ignores the cached outputs itself.
# The report's charts sit next to report.md (report-training.png, ...): built per run, never committed.
GITIGNORE_LINES = (
    "/mlflow.db",
    "/mlruns/",
    "/.cxml/",
    "/gate.json",
    "/report.md",
    "/report-*.png",
)
GITIGNORE_LINES_WITHOUT_DVC = ("/model/", "/run.json")
DVCIGNORE_LINES = ("/.cxml/", "/mlruns/", "/.venv/")
# actionlint (and editors using it) must know the self-hosted runner labels the workflows use.
ACTIONLINT_CONFIG = "self-hosted-runner:\n  labels: [gpu, deploy]\n"


@dataclass(frozen=True)
class PlannedFile:
    """One file init writes: whole (`replace`) or by adding its missing lines (`merge`)."""

    path: str
    content: str
    how: Literal["replace", "merge"]


@dataclass(frozen=True)
class Outcome:
    path: str
    action: Literal["wrote", "overwrote", "unchanged", "kept", "added"]
    detail: str = ""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cxml init",
        description="Write params.yaml, deploy.yaml, dvc.yaml, GitHub workflows and ignore entries into a "
        "repository. Safe to re-run: existing files are kept unless --force.",
    )
    parser.add_argument("directory", nargs="?", default=".", help="repository root (default: .)")
    parser.add_argument(
        "--workflows",
        default=",".join(DEFAULT_WORKFLOWS),
        help=f"comma-separated workflows to write: {', '.join(WORKFLOWS)}, all, or none "
        f"(default: {','.join(DEFAULT_WORKFLOWS)})",
    )
    parser.add_argument(
        "--actions",
        default=None,
        metavar="OWNER/REPO@REF",
        help="the repository and tag the workflows use cxml's actions from, e.g. your-org/cxml@v1 "
        f"(default: ${env.CXML_ACTIONS}, else the GitHub repository and ref cxml was installed "
        "from with pip's git URL; without any of them init stops and asks)",
    )
    parser.add_argument(
        "--no-dvc", action="store_true", help="no dvc.yaml, .dvcignore or `dvc init`"
    )
    parser.add_argument("--force", action="store_true", help="overwrite files that differ")
    parser.add_argument(
        "--example",
        choices=sorted(EXAMPLE_PARAMS),
        default="digits",
        help="the params.yaml to start from: digits (images, default) or breast_cancer (a "
        "tabular model, docs/tabular.md)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(args.directory)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root}: not a directory; give the repository's root directory")
    workflows = parse_workflows(args.workflows)
    use_dvc = not args.no_dvc
    if use_dvc:
        require_git_repository(root)
    actions = find_actions_reference(args.actions, root) if workflows else None
    planned = plan_files(
        workflows,
        actions=actions,
        use_dvc=use_dvc,
        example=args.example,
        data_dependency=csv_dependency(root, force=args.force) if use_dvc else None,
    )
    root.mkdir(parents=True, exist_ok=True)
    for outcome in apply_plan(root, planned, force=args.force):
        console.info(describe(outcome))
        if outcome.path == "dvc.yaml" and outcome.action == "kept":
            warn_missing_data_dependency(root, csv_dependency(root, force=args.force))
    if use_dvc:
        ensure_dvc_repository(root)
    console.info("")
    console.info(next_steps(workflows, use_dvc=use_dvc, actions=actions))
    return 0


def parse_workflows(text: str) -> tuple[str, ...]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names == ["all"]:
        return tuple(WORKFLOWS)
    if names in ([], ["none"]):
        return ()
    unknown = [name for name in names if name not in WORKFLOWS]
    if unknown:
        raise ConfigError(
            f"--workflows: unknown workflow {unknown[0]!r}; choose from {', '.join(WORKFLOWS)}, all, none"
        )
    return tuple(dict.fromkeys(names))


def parse_actions(text: str, *, label: str = "--actions") -> tuple[str, str]:
    match = ACTIONS_PATTERN.match(text.strip())
    if not match:
        raise ConfigError(f"{label}: expected OWNER/REPO@REF (e.g. your-org/cxml@v1), got {text!r}")
    return match["repo"], match["ref"]


def find_actions_reference(given: str | None, root: Path) -> ActionsReference:
    """--actions, else $CXML_ACTIONS, else what the workflows already written use, else the git
    URL pip installed cxml from; else ask."""
    if given is not None:
        return ActionsReference(*parse_actions(given), source="--actions")
    from_env = env.get(env.CXML_ACTIONS)
    if from_env and from_env.strip():
        return ActionsReference(
            *parse_actions(from_env, label=env.CXML_ACTIONS), source=env.CXML_ACTIONS
        )
    found = written_actions(root) or installed_from_github()
    if found is not None:
        return found
    raise ConfigError(ASK_FOR_ACTIONS)


def written_actions(root: Path) -> ActionsReference | None:
    """The reference cxml's workflows in `root` already use (a re-run keeps it)."""
    for file_name in WORKFLOWS.values():
        path = root / ".github" / "workflows" / file_name
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        match = WRITTEN_ACTION.search(text)
        if match and f"{match['repo']}@{match['ref']}" != TEMPLATE_ACTIONS:
            return ActionsReference(match["repo"], match["ref"], source=f"{path.name} there")
    return None


def installed_from_github() -> ActionsReference | None:
    """OWNER/REPO@REF when pip installed cxml from a GitHub git URL (PEP 610 direct_url.json)."""
    from importlib import metadata

    try:
        text = metadata.distribution("cxml").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    return actions_from_direct_url(text) if text else None


def actions_from_direct_url(text: str) -> ActionsReference | None:
    """The repository and ref of a `git+https://github.com/OWNER/REPO@REF` install, else None."""
    try:
        record = json.loads(text)
    except ValueError:
        return None
    vcs = record.get("vcs_info") if isinstance(record, dict) else None
    if not isinstance(vcs, dict) or vcs.get("vcs") != "git":
        return None
    match = GITHUB_GIT_URL.match(str(record.get("url", "")))
    ref = vcs.get("requested_revision") or vcs.get("commit_id")
    if not match or not isinstance(ref, str) or not ACTIONS_PATTERN.match(f"{match['repo']}@{ref}"):
        return None
    return ActionsReference(match["repo"], ref, source="the git URL cxml was installed from")


def template_text(name: str) -> str:
    """A file shipped in cxml/templates (package data)."""
    return resources.files("cxml").joinpath("templates", name).read_text(encoding="utf-8")


def workflow_text(file_name: str, *, repo: str, ref: str) -> str:
    """A workflow template with the cxml actions pointing at `repo@ref`."""
    text = template_text(f"workflows/{file_name}")
    template_repo, template_ref = parse_actions(TEMPLATE_ACTIONS)
    pattern = re.compile(
        rf"\b{re.escape(template_repo)}/actions/([a-z-]+)@{re.escape(template_ref)}\b"
    )
    return pattern.sub(lambda m: f"{repo}/actions/{m[1]}@{ref}", text)


EXAMPLE_PARAMS = {"digits": "params.yaml", "breast_cancer": "params-breast_cancer.yaml"}
"""`cxml init --example NAME`: the params template each built-in example starts from."""


def plan_files(
    workflows: Sequence[str],
    *,
    actions: ActionsReference | None,
    use_dvc: bool,
    example: str = "digits",
    data_dependency: str | None = None,
) -> list[PlannedFile]:
    planned = [
        PlannedFile("params.yaml", template_text(EXAMPLE_PARAMS[example]), "replace"),
        PlannedFile("deploy.yaml", template_text("deploy.yaml"), "replace"),
    ]
    ignore = list(GITIGNORE_LINES)
    if use_dvc:
        pipeline = with_data_dependency(template_text("dvc-pipeline.yaml"), data_dependency)
        planned.append(PlannedFile("dvc.yaml", pipeline, "replace"))
        planned.append(PlannedFile(".dvcignore", lines_text(DVCIGNORE_LINES), "merge"))
    else:
        ignore += GITIGNORE_LINES_WITHOUT_DVC
    planned.append(PlannedFile(".gitignore", lines_text(ignore), "merge"))
    if workflows:
        planned.append(PlannedFile(".github/actionlint.yaml", ACTIONLINT_CONFIG, "replace"))
    for name in workflows:
        if actions is None:
            raise ConfigError(ASK_FOR_ACTIONS)
        file_name = WORKFLOWS[name]
        planned.append(
            PlannedFile(
                f".github/workflows/{file_name}",
                workflow_text(file_name, repo=actions.repo, ref=actions.ref),
                "replace",
            )
        )
    return planned


def csv_dependency(root: Path, *, force: bool) -> str | None:
    """The CSV file (or folder) of a `data.source: csv` params.yaml that init keeps (one already
    there, unless --force replaces it): dvc.yaml lists it as a dependency of train and evaluate,
    so `dvc repro` retrains when the table changes. The built-in examples need none."""
    from cxml.core.config import load_params
    from cxml.core.errors import CxmlError

    path = root / "params.yaml"
    if force or not path.is_file():
        return None
    try:
        data = load_params(path).data
    except CxmlError:  # a broken params.yaml is for `cxml train` to report, with its fix
        return None
    return data.path if data.source == "csv" and data.path else None


def warn_missing_data_dependency(root: Path, data_path: str | None) -> None:
    """A dvc.yaml kept as it is that does not name the CSV: `dvc repro` would not see it change."""
    existing = (root / "dvc.yaml").read_text(encoding="utf-8", errors="replace")
    if data_path and data_path not in existing:
        console.warn(
            f"dvc.yaml: {data_path} (data.path) is not a dependency; add it to the deps of the "
            "train and evaluate stages, so `dvc repro` retrains when the table changes"
        )


def with_data_dependency(pipeline: str, data_path: str | None) -> str:
    """The dvc.yaml template with `data_path` among the deps of the train and evaluate stages."""
    if not data_path:
        return pipeline
    item = data_path if re.fullmatch(r"[\w./-]+", data_path) else json.dumps(data_path)
    train_cmd = "    cmd: python -m cxml.train --params params.yaml\n"
    evaluate_deps = "    deps:\n      - model/model.pt\n"
    if train_cmd not in pipeline or evaluate_deps not in pipeline:
        return pipeline
    pipeline = pipeline.replace(train_cmd, f"{train_cmd}    deps:\n      - {item}\n", 1)
    return pipeline.replace(evaluate_deps, f"{evaluate_deps}      - {item}\n", 1)


def lines_text(lines: Sequence[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def merged_lines(existing: str, wanted: str) -> tuple[str, int]:
    """`existing` plus the lines of `wanted` it lacks (under a `# cxml` header); how many were added."""
    present = {line.strip() for line in existing.splitlines()}
    missing = [line for line in wanted.splitlines() if line.strip() not in present]
    if not missing:
        return existing, 0
    prefix = existing if not existing or existing.endswith("\n") else existing + "\n"
    return prefix + "# cxml\n" + lines_text(missing), len(missing)


def apply_plan(root: Path, planned: Sequence[PlannedFile], *, force: bool) -> list[Outcome]:
    outcomes = []
    for item in planned:
        target = root / item.path
        existing = target.read_text(encoding="utf-8") if target.is_file() else None
        if item.how == "merge":
            merged, added = merged_lines(existing or "", item.content)
            if added:
                files.write_text(target, merged)
                outcomes.append(
                    Outcome(item.path, "added", f"{added} line{'s' if added != 1 else ''}")
                )
            else:
                outcomes.append(Outcome(item.path, "unchanged"))
        elif existing is None:
            files.write_text(target, item.content)
            outcomes.append(Outcome(item.path, "wrote"))
        elif existing == item.content:
            outcomes.append(Outcome(item.path, "unchanged"))
        elif force:
            files.write_text(target, item.content)
            outcomes.append(Outcome(item.path, "overwrote"))
        else:
            outcomes.append(
                Outcome(item.path, "kept", "it exists and differs; --force overwrites it")
            )
    return outcomes


def describe(outcome: Outcome) -> str:
    detail = f" ({outcome.detail})" if outcome.detail else ""
    if outcome.action == "added":
        return f"added {outcome.detail} to {outcome.path}"
    return f"{outcome.action:9} {outcome.path}{detail}"


def require_git_repository(root: Path) -> None:
    """DVC needs git: say so before anything is written, not after (`dvc init` would fail)."""
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if git.git_toplevel(existing) is None:
        raise ConfigError(
            f"{root}: not inside a git repository, and DVC needs one; run `git init` there first "
            "(or pass --no-dvc to set up without DVC)"
        )


def ensure_dvc_repository(root: Path) -> None:
    """`dvc init` where there is no .dvc yet; without DVC installed, say how."""
    if (root / ".dvc").is_dir():
        return
    import importlib.util

    if importlib.util.find_spec("dvc") is None:
        console.warn("DVC is not installed: `pip install 'cxml[dvc]'`, then run `dvc init` here")
        return
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "init", "--quiet"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()
        raise ConfigError(
            f"`dvc init` failed in {root} ({reason[-1] if reason else f'exit {result.returncode}'}); "
            "fix that and run `dvc init` there (the other files are written)"
        )
    console.info("ran       dvc init")


def next_steps(
    workflows: Sequence[str], *, use_dvc: bool, actions: ActionsReference | None = None
) -> str:
    steps = []
    if workflows and actions is not None:
        steps.append(
            f"the workflows use cxml's actions from {actions.text} (from {actions.source}); "
            "to use another repository or tag, run `cxml init --force --actions OWNER/REPO@REF` "
            f"or edit the `uses: {actions.repo}/actions/...@{actions.ref}` lines"
        )
    steps.append("git add -A && git commit -m 'cxml init'")
    steps.append(
        "dvc repro   (train and evaluate locally; then commit dvc.lock and metrics/)"
        if use_dvc
        else "cxml run    (train and evaluate locally)"
    )
    if use_dvc:
        steps.append(
            "add a DVC remote: `dvc remote add -d storage s3://BUCKET/PATH`; give CI its credentials "
            "as repository secrets in the remote's own variables (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY for S3; the workflows pass them on)"
        )
    training = {"pull-request", "main", "schedule"} & set(workflows)
    if training:
        steps.append("register a self-hosted runner with the label `gpu` (training jobs run there)")
        steps.append(
            "optional secret MLFLOW_TRACKING_URI: an MLflow server (default: a SQLite file per job)"
        )
    if {"main", "schedule"} & set(workflows):
        steps.append(
            "deploys: list the hosts of each environment and their proxy in deploy.yaml; a "
            "self-hosted runner with the label `deploy`, a GitHub environment `production` (add "
            "required reviewers to approve deploys) with the secret DEPLOY_KEY (private SSH key) "
            "and the variable DEPLOY_KNOWN_HOSTS (`ssh-keyscan -p PORT HOST` for every host)"
        )
    if "pull-request" in workflows:
        steps.append(
            "Settings -> Actions -> General: require approval for fork pull-request workflows "
            "(they would run on your self-hosted runner)"
        )
    if "docker-image" in workflows:
        steps.append("docker-image.yml builds Dockerfile.gpu: copy it from cxml's repository")
    return "next steps:\n" + "\n".join(
        f"  {number}. {step}" for number, step in enumerate(steps, 1)
    )


if __name__ == "__main__":
    raise SystemExit(console.run_entry_point(main))

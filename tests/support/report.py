"""Report test inputs: the files train/evaluate write (docs/formats.md), in a temp git repository.

Import the fixtures into a test module (`from tests.support.report import workspace`), or call
`write_run_outputs(directory, ...)` directly.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from cxml.core.console import run_entry_point
from cxml.report.step import main as report_main
from tests.conftest import git
from tests.support.github_server import pull_request_event

CLASSES = [str(i) for i in range(10)]
GITLAB_TOKEN = "glpat-fakeProjectToken123"
GITLAB_OTHER_TOKEN = "glpat-someoneElsesToken456"
GITLAB_USERS = {
    GITLAB_TOKEN: {"id": 71, "username": "project_42_bot_0a1b2c", "name": "cxml", "bot": True},
    GITLAB_OTHER_TOKEN: {"id": 72, "username": "mallory", "name": "Mallory", "bot": False},
}
GITLAB_PROJECT = "group/model-repo"
# Every variable the report reads from its environment; tests start from none of them set.
REPORT_ENV_VARS = (
    "GITHUB_ACTIONS",
    "GITHUB_OUTPUT",
    "GITHUB_STEP_SUMMARY",
    "GITHUB_EVENT_NAME",
    "GITHUB_EVENT_PATH",
    "GITHUB_BASE_REF",
    "GITHUB_SHA",
    "GITHUB_REPOSITORY",
    "GITHUB_SERVER_URL",
    "GITHUB_API_URL",
    "GITHUB_RUN_ID",
    "GITHUB_TOKEN",
    "CI_MERGE_REQUEST_IID",
    "CI_PROJECT_ID",
    "CI_API_V4_URL",
    "CI_JOB_TOKEN",
    "GITLAB_TOKEN",
    "MLFLOW_TRACKING_URI",
    "CXML_PARAMS",
)


def train_rows(epochs: int, *, lr: float, seed: int) -> list[list[Any]]:
    """Plausible learning curves: loss falls, accuracy rises, with a little noise."""
    rng = random.Random(seed)
    rows = []
    for epoch in range(1, epochs + 1):
        progress = 1 - math.exp(-epoch / 3.5)
        loss = 2.3 * (1 - progress) + 0.05 + rng.uniform(0, 0.03)
        val_loss = loss * 1.15 + 0.02
        accuracy = min(0.999, 0.12 + 0.87 * progress + rng.uniform(-0.01, 0.01))
        val_accuracy = min(0.995, accuracy - 0.015)
        current_lr = lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))
        rows.append(
            [
                epoch,
                round(loss, 4),
                round(accuracy, 4),
                round(val_loss, 4),
                round(val_accuracy, 4),
                round(current_lr, 5),
                round(0.8 * epoch, 2),
            ]
        )
    return rows


def confusion_rows(per_class: dict[str, float], support: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    rows = []
    for cls, accuracy in per_class.items():
        correct = round(accuracy * support)
        rows += [[cls, cls]] * correct
        for _ in range(support - correct):
            rows.append([cls, rng.choice([c for c in per_class if c != cls])])
    return rows


@dataclass(frozen=True)
class RunOutputs:
    """What one fake train+evaluate wrote."""

    accuracy: float
    epochs: int
    lr: float
    per_class: dict[str, float]


def eval_metrics(run: RunOutputs) -> dict[str, Any]:
    return {
        "accuracy": run.accuracy,
        "precision_macro": round(run.accuracy + 0.002, 4),
        "recall_macro": round(run.accuracy - 0.001, 4),
        "f1_macro": round(run.accuracy + 0.0005, 4),
        "latency_p50_ms": 0.82 if run.lr < 0.08 else 0.85,
        "latency_p95_ms": 1.31 if run.lr < 0.08 else 1.46,
        "num_test_images": 270,
        "per_class_accuracy": run.per_class,
    }


def per_class_for(accuracy: float, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    return {c: round(min(1.0, max(0.0, accuracy + rng.uniform(-0.05, 0.03))), 4) for c in CLASSES}


def write_run_outputs(
    root: Path,
    *,
    accuracy: float = 0.9741,
    epochs: int = 15,
    lr: float = 0.05,
    seed: int = 1,
    params_extra: str = "",
) -> RunOutputs:
    """params.yaml, metrics/*.json, plots/*.csv and run.json as train/evaluate write them."""
    run = RunOutputs(accuracy, epochs, lr, per_class_for(accuracy, seed))
    (root / "params.yaml").write_text(
        f"train:\n  epochs: {epochs}\n  lr: {lr}\n{params_extra}", encoding="utf-8"
    )
    (root / "metrics").mkdir(exist_ok=True)
    (root / "plots").mkdir(exist_ok=True)
    rows = train_rows(epochs, lr=lr, seed=seed)
    last = rows[-1]
    train_json = {
        "epochs": epochs,
        "loss": last[1],
        "accuracy": last[2],
        "val_loss": last[3],
        "val_accuracy": last[4],
        "seconds": last[6],
    }
    (root / "metrics" / "train.json").write_text(json.dumps(train_json, indent=2))
    (root / "metrics" / "eval.json").write_text(json.dumps(eval_metrics(run), indent=2))
    header = "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n"
    body = "".join(",".join(str(v) for v in row) + "\n" for row in rows)
    (root / "plots" / "train.csv").write_text(header + body)
    confusion = confusion_rows(run.per_class, 27, seed)
    (root / "plots" / "confusion.csv").write_text(
        "actual,predicted\n" + "".join(f"{a},{p}\n" for a, p in confusion)
    )
    (root / "plots" / "per_class.csv").write_text(
        "class,accuracy,support\n" + "".join(f"{c},{a},27\n" for c, a in run.per_class.items())
    )
    (root / "run.json").write_text(
        json.dumps(
            {
                "run_id": "4f1c2b9a0d8e47c6b1a2c3d4e5f60718",
                "experiment_id": "1",
                "tracking_uri": f"sqlite:///{root}/mlflow.db",
                "model_name": "cxml-model",
                "model_version": "3",
                "model_path": "model/model.pt",
                "git_commit": "0123456789abcdef0123456789abcdef01234567",
                "epochs": epochs,
            }
        )
    )
    return run


def gate_document(
    current: RunOutputs,
    baseline: RunOutputs | None,
    *,
    ref: str = "origin/main",
    rules: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """gate.json the way evaluate writes it for the default rules."""
    flat = {k: v for k, v in eval_metrics(current).items() if k != "per_class_accuracy"}
    flat.update({f"per_class_accuracy.{c}": v for c, v in current.per_class.items()})
    base_accuracy = baseline.accuracy if baseline else None
    if rules is None:
        rules = [
            {
                "rule": "accuracy >= 0.9",
                "metric": "accuracy",
                "op": ">=",
                "value": current.accuracy,
                "baseline": None,
                "threshold": 0.9,
                "result": "pass" if current.accuracy >= 0.9 else "fail",
                "relative": False,
                "reason": None,
            },
            relative_rule(current.accuracy, base_accuracy),
        ]
    decision = "fail" if any(r["result"] == "fail" for r in rules) else "pass"
    return {
        "decision": decision,
        "baseline": {
            "source": f"git:{ref}" if baseline else "none",
            "ref": ref if baseline else None,
            "metrics": eval_metrics(baseline) if baseline else None,
            "description": f"metrics/eval.json at {ref}" if baseline else "no baseline",
        },
        "metrics": flat,
        "rules": rules,
    }


def relative_rule(value: float, baseline: float | None) -> dict[str, Any]:
    if baseline is None:
        return {
            "rule": "accuracy >= baseline - 0.005",
            "metric": "accuracy",
            "op": ">=",
            "value": value,
            "baseline": None,
            "threshold": None,
            "result": "skipped",
            "relative": True,
            "reason": "no baseline",
        }
    threshold = round(baseline - 0.005, 4)
    return {
        "rule": "accuracy >= baseline - 0.005",
        "metric": "accuracy",
        "op": ">=",
        "value": value,
        "baseline": baseline,
        "threshold": threshold,
        "result": "pass" if value >= threshold else "fail",
        "relative": True,
        "reason": None,
    }


@dataclass(frozen=True)
class Workspace:
    """A git repo whose `main` holds the baseline run and whose work tree holds this change."""

    root: Path
    current: RunOutputs
    baseline: RunOutputs


def make_workspace(
    root: Path,
    *,
    accuracy: float = 0.9741,
    baseline_accuracy: float = 0.9667,
    lr: float = 0.1,
    epochs: int = 15,
    baseline_epochs: int = 12,
) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    baseline = write_run_outputs(root, accuracy=baseline_accuracy, epochs=baseline_epochs, seed=7)
    (root / "gate.json").write_text(json.dumps(gate_document(baseline, None)))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "baseline run")
    git(root, "update-ref", "refs/remotes/origin/main", "HEAD")
    git(root, "checkout", "-q", "-b", "feature")
    current = write_run_outputs(root, accuracy=accuracy, epochs=epochs, lr=lr, seed=3)
    (root / "gate.json").write_text(json.dumps(gate_document(current, baseline)))
    return Workspace(root, current, baseline)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No CI variables from the machine running the tests leak into the report."""
    for name in REPORT_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def workspace(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """This change (lr 0.1, 15 epochs) on top of a committed baseline run at origin/main; cwd in it."""
    made = make_workspace(tmp_path / "repo")
    clean_env.chdir(made.root)
    yield made


def in_actions(
    monkeypatch: pytest.MonkeyPatch,
    fake: Any,
    folder: Path,
    event_name: str,
    event: object,
    *,
    token: str | None = None,
) -> dict[str, Path]:
    """The environment GitHub Actions gives a job step (`actions_env`), set in this process;
    returns the step's output and summary files."""
    for key, value in actions_env(fake, folder, event_name, event, token=token).items():
        monkeypatch.setenv(key, value)
    return {"output": folder / "github_output", "summary": folder / "step_summary"}


def in_pull_request(
    monkeypatch: pytest.MonkeyPatch,
    fake: Any,
    folder: Path,
    *,
    token: str | None = None,
    **event_fields: Any,
) -> dict[str, Path]:
    """`in_actions` for a `pull_request` job on PR #7 of the fake GitHub (`event_fields` go to
    `pull_request_event`, e.g. `head_sha`)."""
    event = pull_request_event(7, **event_fields)
    return in_actions(monkeypatch, fake, folder, "pull_request", event, token=token)


def report(*args: str) -> int:
    """`cxml report *args` in this process, as the command line runs it: its exit code."""
    return run_entry_point(report_main, list(args))


def actions_env(
    fake: Any, folder: Path, event_name: str, event: object, *, token: str | None = None
) -> dict[str, str]:
    """The variables GitHub Actions gives a job step, pointed at the fake GitHub (`fake`), with
    the event, output and summary files written (empty) in `folder`."""
    event_path = folder / "event.json"
    event_path.write_text(json.dumps(event))
    for name in ("github_output", "step_summary"):
        (folder / name).write_text("")
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event_name,
        "GITHUB_EVENT_PATH": str(event_path),
        "GITHUB_REPOSITORY": fake.repository,
        "GITHUB_API_URL": fake.api_url,
        "GITHUB_SERVER_URL": fake.server_url,
        "GITHUB_TOKEN": token or fake.token,
        "GITHUB_RUN_ID": "4242",
        "GITHUB_SHA": "f" * 40,
        "GITHUB_OUTPUT": str(folder / "github_output"),
        "GITHUB_STEP_SUMMARY": str(folder / "step_summary"),
    }


def step_outputs(path: Path) -> dict[str, str]:
    """`name=value` lines of a $GITHUB_OUTPUT file."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


# ---------------------------------------------------------------- a fake GitLab


class FakeGitLab:
    """Merge request !5 of one project on a loopback server; notes kept in memory like GitLab.

    GitLab publishes no machine-readable REST description to check against, so the fake checks
    what its v4 docs state for the three note endpoints and `GET /user`: the paths,
    `PRIVATE-TOKEN` or `JOB-TOKEN`, a JSON body with a string `body`, and `per_page` <= 100
    (`violations`). Notes carry their `author`; each token in `users` acts as one user (a
    project access token's is a bot user, `project_<id>_bot_<hash>`). `tokens_seen` keeps every
    token it was sent, so a test can tell which (if any) reached it.
    """

    def __init__(
        self, *, project: str = GITLAB_PROJECT, users: dict[str, dict[str, Any]] | None = None
    ) -> None:
        self.project = project
        self.users = GITLAB_USERS if users is None else users
        self.notes: dict[int, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.tokens_seen: list[str] = []
        self.violations: list[str] = []
        self.ids = itertools.count(301)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/v4"

    def __enter__(self) -> FakeGitLab:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return

            def serve(self) -> None:
                parts = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.requests.append((self.command, parts.path))
                status, payload = fake.handle(
                    self.command, parts.path, parse_qs(parts.query), dict(self.headers), raw
                )
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = serve

        return Handler

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        raw: bytes,
    ) -> tuple[int, Any]:
        token = headers.get("PRIVATE-TOKEN") or headers.get("JOB-TOKEN") or ""
        self.tokens_seen.append(token)
        if token not in self.users:
            return 401, {"message": "401 Unauthorized"}
        if path == "/api/v4/user" and method == "GET":
            return 200, {
                **self.users[token],
                "state": "active",
                "web_url": "https://gitlab.example.com",
            }
        match = re.fullmatch(
            r"/api/v4/projects/([^/]+)/merge_requests/(\d+)(/notes(?:/(\d+))?)?", path
        )
        if match is None or unquote(match.group(1)) != self.project:
            return 404, {"message": "404 Project Not Found"}
        if int(match.group(2)) != 5:
            return 404, {"message": "404 Not found"}
        if int(query.get("per_page", ["20"])[0]) > 100:
            self.violations.append("per_page above 100")
        if match.group(3) is None:
            return (
                (
                    200,
                    {
                        "iid": 5,
                        "web_url": f"https://gitlab.example.com/{self.project}/-/merge_requests/5",
                    },
                )
                if method == "GET"
                else (405, {})
            )
        body: Any = None
        if method in ("POST", "PUT"):
            if not headers.get("Content-Type", "").startswith("application/json"):
                self.violations.append(f"{method} {path}: body is not JSON")
            body = json.loads(raw or b"{}")
            if not isinstance(body.get("body"), str):
                self.violations.append(f"{method} {path}: 'body' must be a string")
                return 400, {"message": "400 Bad request - body is missing"}
        note_id = match.group(4)
        if method == "GET" and note_id is None:
            page = int(query.get("page", ["1"])[0])
            per_page = int(query.get("per_page", ["20"])[0])
            items = sorted(self.notes.values(), key=lambda n: n["id"])
            return 200, items[(page - 1) * per_page : page * per_page]
        if method == "POST" and note_id is None:
            note = {
                "id": next(self.ids),
                "body": body["body"],
                "author": self.users[token],
                "system": False,
                "noteable_iid": 5,
            }
            self.notes[note["id"]] = note
            return 201, note
        if method == "PUT" and note_id is not None and int(note_id) in self.notes:
            self.notes[int(note_id)]["body"] = body["body"]
            return 200, self.notes[int(note_id)]
        return 404, {"message": "404 Not found"}


@pytest.fixture
def gitlab_server() -> Iterator[FakeGitLab]:
    """A running FakeGitLab; the test fails on any request GitLab's docs say it would reject."""
    with FakeGitLab() as fake:
        yield fake
    assert fake.violations == []


def in_gitlab_pipeline(
    monkeypatch: pytest.MonkeyPatch, fake: FakeGitLab, *, token: str | None = GITLAB_TOKEN
) -> None:
    """The variables of a merge-request pipeline for !5, pointed at the fake GitLab."""
    monkeypatch.setenv("CI_MERGE_REQUEST_IID", "5")
    monkeypatch.setenv("CI_PROJECT_ID", fake.project)
    monkeypatch.setenv("CI_API_V4_URL", fake.api_url)
    if token is not None:
        monkeypatch.setenv("GITLAB_TOKEN", token)

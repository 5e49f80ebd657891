"""Every environment variable cxml reads, in one place."""

from __future__ import annotations

import os


def get(name: str) -> str | None:
    """Return the variable's value, treating an empty string as unset."""
    value = os.environ.get(name)
    return value if value else None


def in_github_actions() -> bool:
    return get("GITHUB_ACTIONS") == "true"


# GitHub Actions
GITHUB_ACTIONS = "GITHUB_ACTIONS"
GITHUB_OUTPUT = "GITHUB_OUTPUT"
GITHUB_STEP_SUMMARY = "GITHUB_STEP_SUMMARY"
GITHUB_EVENT_NAME = "GITHUB_EVENT_NAME"
GITHUB_EVENT_PATH = "GITHUB_EVENT_PATH"
GITHUB_BASE_REF = "GITHUB_BASE_REF"
GITHUB_SHA = "GITHUB_SHA"
GITHUB_REPOSITORY = "GITHUB_REPOSITORY"
GITHUB_SERVER_URL = "GITHUB_SERVER_URL"
GITHUB_API_URL = "GITHUB_API_URL"
GITHUB_RUN_ID = "GITHUB_RUN_ID"
GITHUB_TOKEN = "GITHUB_TOKEN"

# GitLab CI
CI_MERGE_REQUEST_IID = "CI_MERGE_REQUEST_IID"
CI_PROJECT_ID = "CI_PROJECT_ID"
CI_API_V4_URL = "CI_API_V4_URL"
CI_JOB_TOKEN = "CI_JOB_TOKEN"
CI_PIPELINE_URL = "CI_PIPELINE_URL"
CI_COMMIT_SHA = "CI_COMMIT_SHA"
GITLAB_TOKEN = "GITLAB_TOKEN"

# MLflow
MLFLOW_TRACKING_URI = "MLFLOW_TRACKING_URI"

# cxml's own
CXML_PARAMS = "CXML_PARAMS"  # path of params.yaml (default ./params.yaml)
CXML_DEVICE = "CXML_DEVICE"  # overrides train.device
CXML_SSH_KEY = "CXML_SSH_KEY"  # private key material for redeploy (the action passes the secret)
CXML_KNOWN_HOSTS = "CXML_KNOWN_HOSTS"  # known_hosts content for redeploy
CXML_CACHE_DIR = "CXML_CACHE_DIR"  # persistent cache (torch.compile artifacts)

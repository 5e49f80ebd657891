"""Every environment variable cxml reads, in one place."""

from __future__ import annotations

import os


def get(name: str) -> str | None:
    """Return the variable's value, treating an empty string as unset."""
    value = os.environ.get(name)
    return value if value else None


def in_github_actions() -> bool:
    return get("GITHUB_ACTIONS") == "true"


def in_ci() -> bool:
    """CI=true (every major CI service sets it) or GitHub Actions."""
    return (get("CI") or "").lower() in ("true", "1") or in_github_actions()


# Any CI service (GitHub Actions, GitLab CI, ... set CI=true)
CI = "CI"

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
GITHUB_REF = "GITHUB_REF"
GITHUB_REF_NAME = "GITHUB_REF_NAME"
GITHUB_HEAD_REF = "GITHUB_HEAD_REF"
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
MLFLOW_TRACKING_USERNAME = "MLFLOW_TRACKING_USERNAME"  # basic auth to a tracking server
MLFLOW_TRACKING_PASSWORD = "MLFLOW_TRACKING_PASSWORD"
MLFLOW_TRACKING_TOKEN = "MLFLOW_TRACKING_TOKEN"  # bearer auth (basic wins when both are set)
MLFLOW_TRACKING_INSECURE_TLS = "MLFLOW_TRACKING_INSECURE_TLS"  # true: no TLS verification
MLFLOW_TRACKING_SERVER_CERT_PATH = "MLFLOW_TRACKING_SERVER_CERT_PATH"  # CA bundle
MLFLOW_TRACKING_CLIENT_CERT_PATH = "MLFLOW_TRACKING_CLIENT_CERT_PATH"  # client cert (.pem)
MLFLOW_TRACKING_AUTH = "MLFLOW_TRACKING_AUTH"  # an auth plugin: only the mlflow client has it
MLFLOW_TRACKING_AWS_SIGV4 = "MLFLOW_TRACKING_AWS_SIGV4"  # likewise (AWS SigV4 signing)

# cxml's own
CXML_PARAMS = "CXML_PARAMS"  # path of params.yaml (default ./params.yaml)
CXML_DEVICE = "CXML_DEVICE"  # overrides train.device
CXML_SSH_KEY = "CXML_SSH_KEY"  # private key material for redeploy (the action passes the secret)
CXML_KNOWN_HOSTS = "CXML_KNOWN_HOSTS"  # known_hosts content for redeploy
CXML_CACHE_DIR = "CXML_CACHE_DIR"  # persistent cache (torch.compile artifacts)
CXML_ACTIONS = "CXML_ACTIONS"  # OWNER/REPO@REF of the actions `cxml init` writes into workflows

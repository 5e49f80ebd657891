"""Links the report adds: the demo page of the staging service, from deploy.yaml."""

from __future__ import annotations

from pathlib import Path

from cxml.core.console import warn
from cxml.core.errors import ConfigError
from cxml.core.redact import redact_uri
from cxml.deploy.config import DEFAULT_DEPLOY_FILE, load_deploy_config
from cxml.report.escape import is_web_url
from cxml.report.model import DemoPage

STAGING = "staging"


def staging_page_url(
    deploy_file: str | Path | None = None, environment: str = STAGING
) -> str | None:
    """The demo page (`/`) of `environment`'s public URL in deploy.yaml; None when there is no
    deploy.yaml, no such environment or no public URL. A deploy.yaml that does not load is a
    warning: the link is a convenience, the report is right without it."""
    path = Path(deploy_file) if deploy_file is not None else Path(DEFAULT_DEPLOY_FILE)
    if not path.is_file():
        return None
    try:
        config = load_deploy_config(path)
    except ConfigError as exc:
        warn(f"the report links no demo page: {exc}")
        return None
    found = config.environments.get(environment)
    if found is None or not found.settings.proxy.public_url:
        return None
    return demo_page_url(found.settings.proxy.public_url)


def staging_demo_page(
    deploy_file: str | Path | None = None, environment: str = STAGING
) -> DemoPage | None:
    """The report's `▶ Try the staging model` link, when deploy.yaml gives one."""
    url = staging_page_url(deploy_file, environment)
    return DemoPage(environment, url) if url is not None and is_web_url(url) else None


def demo_page_url(public_url: str) -> str:
    """The page a person opens: the service's root, credentials and secrets masked."""
    return redact_uri(public_url).split("?", 1)[0].split("#", 1)[0].rstrip("/") + "/"

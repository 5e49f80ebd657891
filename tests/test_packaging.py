"""pyproject.toml: what `pip install 'cxml[all]'` brings, and what PyPI shows about the project."""

from __future__ import annotations

import tomllib

from tests.support.actions import REPO_ROOT

PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_the_all_extra_is_what_users_run_without_dev_tools() -> None:
    extras = PROJECT["optional-dependencies"]
    (all_extra,) = extras["all"]
    included = set(all_extra.removeprefix("cxml[").removesuffix("]").split(","))
    assert included == set(extras) - {"all", "dev"}
    assert any(requirement.startswith("pytest") for requirement in extras["dev"])


def test_ci_installs_the_dev_tools_the_tests_need() -> None:
    setup = (REPO_ROOT / ".ci" / "setup").read_text(encoding="utf-8")
    assert "'.[all,dev]'" in setup


def test_project_urls_and_classifiers() -> None:
    assert {"Homepage", "Source", "Issues", "Documentation"} <= set(PROJECT["urls"])
    assert all(url.startswith("https://") for url in PROJECT["urls"].values())
    classifiers = PROJECT["classifiers"]
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert "Typing :: Typed" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")], "license is the SPDX field"

"""Find or build the virtual environment the cxml actions run in (stdlib only: cxml is not installed yet).

Run by `actions/setup` (and by the first step of every other cxml action) with the base
interpreter: `python3 actions/setup/cxml_setup.py`. Inputs come from the environment:

- `CXML_SETUP_PYTHON`: the `python` input. When set, the venv sees that interpreter's installed
  packages (its site-packages, also when it is itself a venv), so a CUDA image or a runner that
  already has torch reuses it instead of downloading it again.
- `CXML_SETUP_EXTRAS`: comma-separated extras of the cxml package to install (`train,report`).
- `CXML_SETUP_PACKAGES`: more pip requirements for the venv, e.g. `dvc-s3` for an S3 DVC remote.
- `CXML_SETUP_CACHE_DIR`: where venvs live; default `$RUNNER_TOOL_CACHE/cxml`.

The venv directory is named by a key over the action's own `pyproject.toml`, the extras and the
Python version, the extra packages (and the base interpreter when its packages are inherited). A venv is used only
when its completion marker exists: one killed mid-install has none and is rebuilt. A file lock
keeps two jobs on one runner from building the same venv at once. When only the package source
changed (same dependencies), the package alone is reinstalled, which takes seconds.

Trust: code that runs in a venv can change it (a `.pth` file in site-packages runs in every later
Python start), so a job never runs a venv a less trusted job could have written. Venvs live in one
folder per trust level of the triggering event (`trusted`: push, schedule, workflow_dispatch, ...;
`pull-request`: pull requests from this repository; `untrusted`: fork pull requests,
pull_request_target, workflow_run of a fork's run, and any event not known to be trusted), and
each venv carries a manifest of the SHA-256 of every file and link in it, written at build time
and checked on every reuse: a venv that differs is rebuilt, with a `::warning::`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MARKER = ".cxml-complete"
MANIFEST = ".cxml-manifest.json"
TRUSTED_EVENTS = frozenset(
    {"push", "schedule", "workflow_dispatch", "release", "merge_group", "repository_dispatch"}
)
PULL_REQUEST_EVENTS = frozenset(
    {"pull_request", "pull_request_review", "pull_request_review_comment"}
)
# Not in Actions (a person running the script): its own folder, shared with no job.
LOCAL = "local"
MIN_PYTHON = (3, 11)
EXTRA_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
PIP = ("-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--quiet")


class SetupError(Exception):
    """A problem a person can fix; printed as one `::error::` line."""


def main() -> int:
    started = time.monotonic()
    try:
        check_python_version()
        source_root = Path(__file__).resolve().parents[2]
        extras = parse_extras(os.environ.get("CXML_SETUP_EXTRAS", ""))
        packages = parse_packages(os.environ.get("CXML_SETUP_PACKAGES", ""))
        inherit = bool(os.environ.get("CXML_SETUP_PYTHON", "").strip())
        trust = trust_level(os.environ.get("GITHUB_EVENT_NAME", ""), read_event())
        cache_root = cache_directory() / trust
        venv, cache_hit = ensure_venv(source_root, extras, packages, inherit, cache_root)
    except SetupError as exc:
        print(f"::error::cxml setup: {exc}", flush=True)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    seconds = time.monotonic() - started
    python = venv_python(venv)
    state = "cache hit" if cache_hit else "cache miss, built"
    print(f"cxml setup: {state}: {venv} ({seconds:.1f} s)", flush=True)
    write_github_file("GITHUB_PATH", f"{python.parent}\n")
    write_github_file("GITHUB_ENV", f"CXML_PYTHON={python}\n")
    outputs = {
        "python": str(python),
        "venv": str(venv),
        "cache-hit": "true" if cache_hit else "false",
        "seconds": f"{seconds:.2f}",
    }
    write_github_file("GITHUB_OUTPUT", "".join(f"{k}={v}\n" for k, v in outputs.items()))
    return 0


def check_python_version() -> None:
    if sys.version_info < MIN_PYTHON:
        found = ".".join(str(part) for part in sys.version_info[:3])
        raise SetupError(
            f"Python {found} at {sys.executable} is too old: cxml needs 3.11 or newer; "
            "set the `python` input or run actions/setup-python first"
        )


def parse_extras(text: str) -> list[str]:
    extras = sorted({part.strip().lower() for part in re.split(r"[,\s]+", text) if part.strip()})
    for extra in extras:
        if not EXTRA_PATTERN.match(extra):
            raise SetupError(f"extras: {extra!r} is not an extra name (use e.g. `train,report`)")
    return extras


def parse_packages(text: str) -> list[str]:
    packages = [part for part in re.split(r"[,\s]+", text) if part]
    for package in packages:
        if package.startswith("-"):
            raise SetupError(
                f"pip-packages: {package!r} is an option, not a requirement; list packages only"
            )
    return packages


def cache_directory() -> Path:
    explicit = os.environ.get("CXML_SETUP_CACHE_DIR", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    tool_cache = os.environ.get("RUNNER_TOOL_CACHE", "").strip()
    if tool_cache:
        return Path(tool_cache) / "cxml"
    return Path.home() / ".cache" / "cxml" / "venvs"


def read_event() -> dict[str, object]:
    """The webhook payload at `$GITHUB_EVENT_PATH`; {} when absent or unreadable."""
    path = os.environ.get("GITHUB_EVENT_PATH", "").strip()
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def trust_level(event_name: str, event: dict[str, object]) -> str:
    """Which cache this job may use: never one that a less trusted job could have written.

    Anything not known to be trusted is `untrusted`, so a new event type fails safe.
    """
    event_name = event_name.strip()
    if not event_name:
        return LOCAL if not os.environ.get("GITHUB_ACTIONS") else "untrusted"
    if event_name in TRUSTED_EVENTS:
        return "trusted"
    if event_name in PULL_REQUEST_EVENTS:
        return "pull-request" if same_repository_pull_request(event) else "untrusted"
    if event_name == "workflow_run":
        return "trusted" if workflow_run_of_this_repository(event) else "untrusted"
    return "untrusted"


def full_name(repository: object) -> str | None:
    name = repository.get("full_name") if isinstance(repository, dict) else None
    return name if isinstance(name, str) and name else None


def same_repository_pull_request(event: dict[str, object]) -> bool:
    pull = event.get("pull_request")
    head = pull.get("head") if isinstance(pull, dict) else None
    head_name = full_name(head.get("repo")) if isinstance(head, dict) else None
    base_name = full_name(event.get("repository"))
    return head_name is not None and head_name == base_name


def workflow_run_of_this_repository(event: dict[str, object]) -> bool:
    """A workflow_run after a push/schedule of this repository, not after a pull request."""
    run = event.get("workflow_run")
    if not isinstance(run, dict) or run.get("event") not in TRUSTED_EVENTS:
        return False
    head_name = full_name(run.get("head_repository"))
    return head_name is not None and head_name == full_name(event.get("repository"))


def read_project_version(pyproject: Path) -> str:
    import tomllib

    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        return str(data["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise SetupError(f"{pyproject}: cannot read the project version ({exc})") from None


def venv_key(source_root: Path, extras: list[str], packages: list[str], inherit: bool) -> str:
    """Name of the venv: changes whenever what pip would install into it changes."""
    pyproject = source_root / "pyproject.toml"
    if not pyproject.is_file():
        raise SetupError(f"{pyproject}: not found; the action checkout is incomplete")
    digest = hashlib.sha256(pyproject.read_bytes())
    digest.update(json.dumps([extras, packages]).encode())
    digest.update(sys.version.encode())
    if inherit:
        digest.update(json.dumps(base_site_packages()).encode())
    version = read_project_version(pyproject)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"cxml-{version}-py{python}-{digest.hexdigest()[:16]}"


def source_digest(source_root: Path) -> str:
    """Hash of what goes into the package: a changed file means the package is reinstalled."""
    digest = hashlib.sha256()
    files = [source_root / "pyproject.toml", *sorted(package_files(source_root / "src"))]
    for path in files:
        digest.update(str(path.relative_to(source_root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def package_files(src: Path) -> Iterator[Path]:
    for path in src.rglob("*"):
        parts = set(path.relative_to(src).parts)
        if (
            path.is_file()
            and "__pycache__" not in parts
            and not any(p.endswith(".egg-info") for p in parts)
        ):
            yield path


def base_site_packages() -> list[str]:
    """The running interpreter's site-packages (a venv's own ones when it is a venv)."""
    import site

    paths = [*site.getsitepackages()]
    return [p for p in dict.fromkeys(paths) if Path(p).is_dir()]


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


@contextmanager
def exclusive_lock(lock_file: Path) -> Iterator[None]:
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"cxml setup: waiting for another job to finish {lock_file.stem}", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_venv(
    source_root: Path, extras: list[str], packages: list[str], inherit: bool, cache_root: Path
) -> tuple[Path, bool]:
    """Return (venv, cache_hit); build or refresh the venv under a lock."""
    name = venv_key(source_root, extras, packages, inherit)
    venv = cache_root / name
    wanted_source = source_digest(source_root)
    with exclusive_lock(cache_root / f"{name}.lock"):
        marker = read_marker(venv)
        if marker is not None and venv_python(venv).exists():
            changed = changed_files(venv)
            if not changed:
                if marker.get("source") != wanted_source:
                    print("cxml setup: package source changed; reinstalling cxml only", flush=True)
                    (venv / MARKER).unlink()  # interrupted reinstall -> full rebuild next time
                    install_package(venv, source_root, extras, [], with_dependencies=False)
                    write_manifest(venv)
                    write_marker(venv, wanted_source)
                return venv, True
            warn_tampered(venv, changed)
        elif venv.exists():
            print(
                f"cxml setup: {venv} is incomplete (an interrupted build); rebuilding", flush=True
            )
        if venv.exists() or venv.is_symlink():
            remove_venv(venv)
        build_venv(venv, source_root, extras, packages, inherit)
        write_manifest(venv)
        write_marker(venv, wanted_source)
        return venv, False


def remove_venv(venv: Path) -> None:
    if venv.is_symlink() or not venv.is_dir():
        venv.unlink()
    else:
        shutil.rmtree(venv)


def warn_tampered(venv: Path, changed: list[str]) -> None:
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    message = (
        f"cxml setup: {venv} differs from what was built ({shown}): something wrote into the "
        "cached environment after it was built; rebuilding it"
    )
    print(f"::warning::{message}", flush=True)


def venv_files(venv: Path) -> dict[str, str]:
    """`relative path -> sha256:<hex>` of every file, `link:<target>` of every symlink.

    Links are recorded, never followed, so a link swapped to point elsewhere is a change too.
    """
    entries: dict[str, str] = {}
    for folder, dirs, files in os.walk(venv, followlinks=False):
        here = Path(folder)
        for name in [*dirs, *files]:
            path = here / name
            relative = path.relative_to(venv).as_posix()
            if relative in (MARKER, MANIFEST, f"{MARKER}.tmp", f"{MANIFEST}.tmp"):
                continue
            if path.is_symlink():
                entries[relative] = f"link:{os.readlink(path)}"
            elif path.is_file():
                entries[relative] = f"sha256:{file_sha256(path)}"
            elif not path.is_dir():
                entries[relative] = "special"  # a fifo or socket has no place in a venv
    return entries


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_manifest(venv: Path) -> None:
    tmp = venv / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(venv_files(venv), sort_keys=True), encoding="utf-8")
    os.replace(tmp, venv / MANIFEST)


def changed_files(venv: Path) -> list[str]:
    """Paths added, removed or changed since the manifest was written (["<manifest>"] if none)."""
    try:
        recorded = json.loads((venv / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [MANIFEST]
    if not isinstance(recorded, dict):
        return [MANIFEST]
    current = venv_files(venv)
    return sorted(
        path for path in recorded.keys() | current.keys() if recorded.get(path) != current.get(path)
    )


def read_marker(venv: Path) -> dict[str, str] | None:
    try:
        data = json.loads((venv / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_marker(venv: Path, source: str) -> None:
    """Written last and atomically: its presence means the venv is complete."""
    content = json.dumps(
        {"source": source, "python": sys.version.split()[0], "written": time.time()}
    )
    tmp = venv / f"{MARKER}.tmp"
    tmp.write_text(content, encoding="utf-8")
    os.replace(tmp, venv / MARKER)


def build_venv(
    venv: Path, source_root: Path, extras: list[str], packages: list[str], inherit: bool
) -> None:
    print(f"cxml setup: creating {venv}", flush=True)
    command = [sys.executable, "-m", "venv", str(venv)]
    if inherit:
        command.insert(3, "--system-site-packages")
    run(command, "creating the virtual environment")
    if inherit:
        # `--system-site-packages` of a venv's python reaches the *base* install, not the venv;
        # a .pth file adds the interpreter's own site-packages (after the new venv's, so the
        # package installed here wins).
        site_dir = venv_site_packages(venv)
        (site_dir / "_cxml_base.pth").write_text(
            "\n".join(base_site_packages()) + "\n", encoding="utf-8"
        )
    install_package(venv, source_root, extras, packages, with_dependencies=True)


def venv_site_packages(venv: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / version / "site-packages"


def install_package(
    venv: Path,
    source_root: Path,
    extras: list[str],
    packages: list[str],
    *,
    with_dependencies: bool,
) -> None:
    """pip-install a copy of the package source, so the build never writes into the action checkout."""
    with tempfile.TemporaryDirectory(prefix="cxml-src-") as tmp:
        copy = Path(tmp) / "cxml"
        copy.mkdir()
        shutil.copy2(source_root / "pyproject.toml", copy / "pyproject.toml")
        for name in ("README.md", "LICENSE"):
            if (source_root / name).is_file():
                shutil.copy2(source_root / name, copy / name)
        if not (copy / "README.md").exists():
            (copy / "README.md").write_text("cxml\n", encoding="utf-8")
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
        shutil.copytree(source_root / "src", copy / "src", ignore=ignore)
        requirement = f"{copy}[{','.join(extras)}]" if extras else str(copy)
        command = [str(venv_python(venv)), *PIP, requirement, *packages]
        if not with_dependencies:
            command += ["--no-deps", "--force-reinstall"]
        run(command, "installing cxml")


def run(command: list[str], what: str) -> None:
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise SetupError(f"{what} failed (exit {result.returncode}): {' '.join(command)}")


def write_github_file(variable: str, text: str) -> None:
    path = os.environ.get(variable)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)


if __name__ == "__main__":
    raise SystemExit(main())

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
        cache_root = cache_directory()
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
            if marker.get("source") != wanted_source:
                print("cxml setup: package source changed; reinstalling cxml only", flush=True)
                (venv / MARKER).unlink()  # interrupted reinstall -> full rebuild next time
                install_package(venv, source_root, extras, [], with_dependencies=False)
                write_marker(venv, wanted_source)
            return venv, True
        if venv.exists():
            print(
                f"cxml setup: {venv} is incomplete (an interrupted build); rebuilding", flush=True
            )
            shutil.rmtree(venv)
        build_venv(venv, source_root, extras, packages, inherit)
        write_marker(venv, wanted_source)
        return venv, False


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

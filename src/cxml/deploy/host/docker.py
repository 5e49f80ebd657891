"""The docker-compatible CLI on the host, and the serving image it runs (content-tagged)."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from cxml.core.errors import DeployError
from cxml.deploy.host.progress import log
from cxml.deploy.host.settings import HostSettings
from cxml.records.release import sha256_file

DOCKERFILE_NAME = "Dockerfile"
IGNORED_BUILD_PARTS = ("__pycache__", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache")


def run_docker(
    settings: HostSettings, args: Sequence[str], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    argv = [*settings.docker, *args]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise DeployError(
            f"{settings.docker[0]}: not found on the host; install Docker or set --docker-command"
        ) from None
    if check and result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        lines = lines or ["no output"]
        for line in lines[-15:-1]:
            log(f"  {line}")
        raise DeployError(f"`{shlex.join(argv[:4])} ...` failed on the host: {lines[-1]}")
    return result


def image_exists(settings: HostSettings, image: str) -> bool:
    return run_docker(settings, ["image", "inspect", image], check=False).returncode == 0


def ensure_image(settings: HostSettings) -> str:
    """The image to run: with a build context, one tagged by a hash of what goes into it, built
    when missing (so a changed package or Dockerfile never serves from a stale image)."""
    context = settings.docker_build_context
    if context is None:
        if image_exists(settings, settings.image):
            return settings.image
        raise DeployError(
            f"serving image {settings.image} not found on the host; build it there "
            f"(`docker build -t {settings.image} .` in the cxml checkout) or pass "
            "--docker-build-context"
        )
    image = content_tag(settings.image, build_digest(context, settings.docker_build_args))
    if image_exists(settings, image):
        return image
    log(f"building serving image {image} from {context} (new or changed build inputs)")
    build_args = [arg for value in settings.docker_build_args for arg in ("--build-arg", value)]
    tags = [image] if image == settings.image else [image, settings.image]
    tag_args = [arg for tag in tags for arg in ("-t", tag)]
    run_docker(settings, ["build", *tag_args, *build_args, str(context)])
    return image


def content_tag(image: str, digest: str) -> str:
    """`name:tag` -> `name:tag-<12 hex of digest>` (an image pinned by @digest is kept as it is)."""
    if "@" in image:
        return image
    slash = image.rfind("/")
    colon = image.rfind(":")
    name, tag = (image[:colon], image[colon + 1 :]) if colon > slash else (image, "latest")
    return f"{name}:{tag[:115]}-{digest[:12]}"


def dockerfile_sources(text: str) -> list[str]:
    """The build-context paths a Dockerfile's COPY and ADD instructions read."""
    joined = re.sub(r"\\\r?\n", " ", text)
    sources: list[str] = []
    for line in joined.splitlines():
        words = line.strip().split()
        if len(words) < 3 or words[0].upper() not in ("COPY", "ADD"):
            continue
        arguments = words[1:]
        if any(word.startswith("--from=") for word in arguments):
            continue  # copied from another stage or image, not from the context
        arguments = [word for word in arguments if not word.startswith("--")]
        if arguments and arguments[0].startswith("["):
            try:
                arguments = [str(item) for item in json.loads(" ".join(arguments))]
            except ValueError:
                continue
        sources += arguments[:-1]
    return sources


def build_digest(context: Path, build_args: Sequence[str]) -> str:
    """sha256 over the Dockerfile, every file its COPY/ADD instructions take from `context`, and
    the build arguments: the same digest means the same image."""
    digest = hashlib.sha256()
    dockerfile = context / DOCKERFILE_NAME
    try:
        text = dockerfile.read_text(encoding="utf-8")
    except OSError as exc:
        raise DeployError(
            f"{dockerfile}: cannot read it ({exc.strerror}); point --docker-build-context at a "
            "cxml checkout"
        ) from None
    digest.update(f"{DOCKERFILE_NAME}\0{text}\0".encode())
    for relative, path in build_files(context, dockerfile_sources(text)):
        digest.update(f"{relative}\0{sha256_file(path)}\0".encode())
    for build_arg in sorted(build_args):
        digest.update(f"--build-arg\0{build_arg}\0".encode())
    return digest.hexdigest()


def source_paths(context: Path, source: str) -> list[Path]:
    """What one COPY source names inside the context (`.` is all of it; globs are expanded)."""
    relative = source.strip().lstrip("/").rstrip("/")
    if relative in ("", "."):
        return [context]
    if ".." in Path(relative).parts:
        return []  # docker refuses sources outside the context
    if any(char in relative for char in "*?["):
        return sorted(context.glob(relative))
    path = context / relative
    return [path] if path.exists() else []


def build_files(context: Path, sources: Sequence[str]) -> list[tuple[str, Path]]:
    """(path relative to the context, file) for every file the sources name, sorted, no caches."""
    found: dict[str, Path] = {}
    for source in sources:
        for match in source_paths(context, source):
            candidates = [match] if match.is_file() else sorted(match.rglob("*"))
            for path in candidates:
                relative = path.relative_to(context)
                ignored = any(part in IGNORED_BUILD_PARTS for part in relative.parts)
                stale = path.suffix == ".pyc" or any(
                    part.endswith(".egg-info") for part in relative.parts
                )
                if path.is_file() and not ignored and not stale:
                    found[relative.as_posix()] = path
    return sorted(found.items())

"""The release bundle: model.pt, release.json and SHA256SUMS in one directory, read without torch.

The client writes a bundle (`save_bundle`), the serving host and `cxml serve` read it back
(`load_bundle`, after checking every file against SHA256SUMS). A damaged or partial upload is a
DeployError ("deploy again"); a record that is not one cxml wrote is a RecordError.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import re
import shutil
import stat
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxml.core import files
from cxml.core.errors import DeployError, RecordError
from cxml.core.redact import redact_uri

BUNDLE_FORMAT = "cxml-release/1"
MODEL_FILE_FORMAT = "cxml-model/1"
"""The `format` of a cxml model file; cxml.ml.models writes it, this module reads it torch-free."""
MODEL_FILE_NAME = "model.pt"
RELEASE_FILE_NAME = "release.json"
MANIFEST_FILE_NAME = "SHA256SUMS"
"""`sha256sum` format, so `sha256sum -c SHA256SUMS` checks a bundle on any host."""

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
RELEASE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
"""What `release_name` produces: a plain directory name, never a path."""


@dataclass(frozen=True)
class ServingConfig:
    """How `cxml serve` treats requests for this release (flags on the host may override)."""

    max_batch: int = 64
    max_request_bytes: int = 8 * 1024 * 1024
    resize: bool = True
    """Resize images of another size to the model's input size (False: reject them with 422)."""


@dataclass(frozen=True)
class ReleaseInfo:
    """What `release.json` records about one release."""

    release: str
    model_version: str
    model_name: str | None
    run_id: str | None
    tracking_uri: str | None
    git_commit: str | None
    created_at: str
    model_sha256: str
    model_metadata: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    gate_decision: str | None = None
    forced_reason: str | None = None
    serving: ServingConfig = field(default_factory=ServingConfig)

    @property
    def identity(self) -> str:
        """What this release serves, hashed (see `release_identity`)."""
        return release_identity(self.model_version, self.model_sha256, self.serving)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "release": self.release,
            "model_version": self.model_version,
            "model_name": self.model_name,
            "run_id": self.run_id,
            # release.json is world-readable on the serving host: no credentials in it
            "tracking_uri": redact_uri(self.tracking_uri) if self.tracking_uri else None,
            "git_commit": self.git_commit,
            "created_at": self.created_at,
            "model_sha256": self.model_sha256,
            "model_metadata": self.model_metadata,
            "metrics": self.metrics,
            "gate_decision": self.gate_decision,
            "forced_reason": self.forced_reason,
            "serving": {
                "max_batch": self.serving.max_batch,
                "max_request_bytes": self.serving.max_request_bytes,
                "resize": self.serving.resize,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = RELEASE_FILE_NAME) -> ReleaseInfo:
        if data.get("format") != BUNDLE_FORMAT:
            raise RecordError(f"{source}: not a cxml release record ({BUNDLE_FORMAT} expected)")
        release = data.get("release")
        if not isinstance(release, str) or not is_release_name(release):
            raise RecordError(
                f"{source}: release {release!r} is not a release name (one directory name of "
                "letters, digits, '.', '_', '-'); rebuild the bundle"
            )
        try:
            serving = ServingConfig(**data.get("serving", {}))
            return cls(
                release=release,
                model_version=str(data["model_version"]),
                model_name=data.get("model_name"),
                run_id=data.get("run_id"),
                tracking_uri=data.get("tracking_uri"),
                git_commit=data.get("git_commit"),
                created_at=str(data["created_at"]),
                model_sha256=str(data["model_sha256"]),
                model_metadata=dict(data.get("model_metadata") or {}),
                metrics=dict(data.get("metrics") or {}),
                gate_decision=data.get("gate_decision"),
                forced_reason=data.get("forced_reason"),
                serving=serving,
            )
        except (KeyError, TypeError) as exc:
            raise RecordError(
                f"{source}: release record is incomplete ({exc}); rebuild the bundle"
            ) from None


@dataclass(frozen=True)
class Bundle:
    directory: Path
    info: ReleaseInfo

    @property
    def model_path(self) -> Path:
        return self.directory / MODEL_FILE_NAME


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def release_identity(
    model_version: str, model_sha256: str, serving: ServingConfig | None = None
) -> str:
    """The sha256 of what a release serves: the model's bytes, the serving config, the version
    label. Build-time facts (created_at, run, metrics, a forced reason) are left out, so building
    the same thing twice gives the same release and deploying it again is a no-op."""
    served = serving or ServingConfig()
    identity = {
        "model_sha256": model_sha256,
        "model_version": model_version,
        "serving": {
            "max_batch": served.max_batch,
            "max_request_bytes": served.max_request_bytes,
            "resize": served.resize,
        },
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def release_name(
    model_version: str, model_sha256: str, serving: ServingConfig | None = None
) -> str:
    """`<version>-<12 hex of the release identity>`: one name per served content, readable."""
    version = _SAFE_NAME.sub("_", model_version).strip("._") or "local"
    return f"{version[:40]}-{release_identity(model_version, model_sha256, serving)[:12]}"


def is_release_name(name: str) -> bool:
    """Whether `name` can name a release directory (no path, no hidden file, no `..`)."""
    return RELEASE_NAME.fullmatch(name) is not None


# --- SHA256SUMS ------------------------------------------------------------------------------


def manifest_text(checksums: dict[str, str]) -> str:
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(checksums.items()))


def parse_manifest(text: str, *, source: str = MANIFEST_FILE_NAME) -> dict[str, str]:
    checksums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = re.fullmatch(r"([0-9a-f]{64}) [ *]([^/\\]+)", line)
        if match is None or match.group(2) in ("", ".", ".."):
            raise DeployError(
                f"{source}: line {number} is not `<sha256>  <file name>`; rebuild the bundle"
            )
        checksums[match.group(2)] = match.group(1)
    if not checksums:
        raise DeployError(f"{source}: lists no files; rebuild the bundle")
    return checksums


# --- the bundle directory --------------------------------------------------------------------


def save_bundle(
    directory: str | Path,
    model_file: str | Path,
    info: ReleaseInfo,
    extra_files: Mapping[str, bytes] | None = None,
) -> Bundle:
    """Write model.pt, release.json, any `extra_files` (plain names -> bytes: the demo page's
    examples) and SHA256SUMS into a new, empty `directory`."""
    target = Path(directory)
    extras = dict(extra_files or {})
    reserved = {MODEL_FILE_NAME, RELEASE_FILE_NAME, MANIFEST_FILE_NAME}
    for name in extras:
        if name in reserved or not is_release_name(name):
            raise RecordError(f"bundle file {name!r}: not a plain file name a bundle can hold")
    target.mkdir(parents=True, exist_ok=False)
    shutil.copyfile(model_file, target / MODEL_FILE_NAME)
    if sha256_file(target / MODEL_FILE_NAME) != info.model_sha256:
        raise DeployError(f"{model_file}: changed while the bundle was built; run redeploy again")
    files.write_json(target / RELEASE_FILE_NAME, info.to_dict())
    for name, data in extras.items():
        files.write_bytes(target / name, data)
    names = (MODEL_FILE_NAME, RELEASE_FILE_NAME, *extras)
    checksums = {name: sha256_file(target / name) for name in names}
    files.write_text(target / MANIFEST_FILE_NAME, manifest_text(checksums))
    return Bundle(target, info)


def verify_bundle(directory: str | Path) -> None:
    """Check every file against SHA256SUMS: nothing missing, nothing extra, nothing changed."""
    bundle_dir = Path(directory)
    refuse_anything_but_plain_files(bundle_dir)
    manifest = bundle_dir / MANIFEST_FILE_NAME
    if not manifest.is_file():
        raise DeployError(
            f"{bundle_dir}: no {MANIFEST_FILE_NAME}; the upload is incomplete, deploy again"
        )
    checksums = parse_manifest(manifest.read_text(encoding="utf-8"), source=str(manifest))
    for required in (MODEL_FILE_NAME, RELEASE_FILE_NAME):
        if required not in checksums:
            raise DeployError(f"{manifest}: does not list {required}; rebuild the bundle")
    present = {p.name for p in bundle_dir.iterdir()} - {MANIFEST_FILE_NAME}
    extra = sorted(present - set(checksums))
    if extra:
        raise DeployError(
            f"{bundle_dir}: unexpected file {extra[0]} not in {MANIFEST_FILE_NAME}; deploy again"
        )
    for name, expected in checksums.items():
        path = bundle_dir / name
        if not path.is_file():
            raise DeployError(
                f"{bundle_dir}: {name} is missing; the upload is incomplete, deploy again"
            )
        if sha256_file(path) != expected:
            raise DeployError(
                f"{bundle_dir}: {name} does not match its sha256; the upload is corrupt, "
                "deploy again"
            )


def refuse_anything_but_plain_files(bundle_dir: Path) -> None:
    """A bundle holds regular files only: a link could point the host's chmod or the checksum
    check at a file outside the bundle."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in bundle_dir.iterdir():
            if not stat.S_ISREG(entry.lstat().st_mode):
                raise DeployError(
                    f"{bundle_dir}: {entry.name} is a link or a directory, not a plain file; "
                    "refused, deploy again"
                )


def load_bundle(directory: str | Path, *, verify: bool = True) -> Bundle:
    """Read a bundle written by `save_bundle`, checking its checksums first."""
    bundle_dir = Path(directory)
    if not bundle_dir.is_dir():
        raise DeployError(f"{bundle_dir}: release bundle not found; pass the release directory")
    if verify:
        verify_bundle(bundle_dir)
    record_path = bundle_dir / RELEASE_FILE_NAME
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeployError(f"{record_path}: release record not found; deploy again") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise RecordError(f"{record_path}: not valid JSON ({exc}); rebuild the bundle") from None
    if not isinstance(record, dict):
        raise RecordError(f"{record_path}: expected a JSON object; rebuild the bundle")
    return Bundle(bundle_dir, ReleaseInfo.from_dict(record, source=str(record_path)))


def same_bundle(first: str | Path, second: str | Path) -> bool:
    """Whether two verified bundle directories serve the same thing: the same release identity
    (model bytes, serving config, version label), whatever their build-time facts say."""
    try:
        a, b = load_bundle(first, verify=False), load_bundle(second, verify=False)
        models = [manifest_checksums(bundle.directory).get(MODEL_FILE_NAME) for bundle in (a, b)]
    except (DeployError, RecordError, OSError):
        return False
    # the record's model_sha256 must be the file the manifest vouches for, in both bundles
    return (
        a.info.release == b.info.release
        and a.info.identity == b.info.identity
        and models == [a.info.model_sha256, b.info.model_sha256]
    )


def manifest_checksums(directory: str | Path) -> dict[str, str]:
    manifest = Path(directory) / MANIFEST_FILE_NAME
    return parse_manifest(manifest.read_text(encoding="utf-8"), source=str(manifest))


# --- a model file's metadata, read without torch ---------------------------------------------


class _Stub:
    """Stands in for a tensor or storage while unpickling: only the plain metadata is kept."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module.split(".")[0] == "torch":
            return _Stub
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in model file")

    def persistent_load(self, pid: object) -> object:
        return None


def read_model_metadata(path: str | Path) -> dict[str, Any]:
    """The `metadata` dict of a cxml model file, read from torch's zip format without torch."""
    model_path = Path(path)
    if not model_path.is_file():
        raise RecordError(
            f"{model_path}: model file not found; run `cxml train` first or pass --model PATH"
        )
    try:
        with zipfile.ZipFile(model_path) as archive:
            pickle_name = next(
                n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"
            )
            payload = _MetadataUnpickler(archive.open(pickle_name)).load()
    except (zipfile.BadZipFile, StopIteration, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise RecordError(
            f"{model_path}: not a readable cxml model file ({exc}); re-run `cxml train`"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FILE_FORMAT:
        raise RecordError(
            f"{model_path}: not a cxml model file ({MODEL_FILE_FORMAT} expected); re-run "
            "`cxml train`"
        )
    metadata = payload.get("metadata")
    if not isinstance(metadata, dict):
        raise RecordError(f"{model_path}: model file has no metadata; re-run `cxml train`")
    plain: dict[str, Any] = json.loads(json.dumps(metadata))
    return plain

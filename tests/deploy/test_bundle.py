"""The release bundle (cxml.records.release): save/load, checksums, model metadata without torch."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cxml.core.errors import DeployError, RecordError
from cxml.records import release
from cxml.records.release import ServingConfig
from tests.support.deploy import make_model_file


def release_info(model: Path, version: str = "3") -> release.ReleaseInfo:
    digest = release.sha256_file(model)
    return release.ReleaseInfo(
        release=release.release_name(version, digest),
        model_version=version,
        model_name="cxml-model",
        run_id="abc",
        tracking_uri=None,
        git_commit="f00",
        created_at="2026-11-25T11:00:00Z",
        model_sha256=digest,
        model_metadata=release.read_model_metadata(model),
        metrics={"accuracy": 0.97},
        gate_decision="pass",
    )


def info_for(digest: str, version: str = "2") -> release.ReleaseInfo:
    return release.ReleaseInfo(
        release=release.release_name(version, digest),
        model_version=version,
        model_name=None,
        run_id=None,
        tracking_uri=None,
        git_commit=None,
        created_at="2026-11-25T11:00:00Z",
        model_sha256=digest,
        model_metadata={},
    )


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_file(tmp_path_factory.mktemp("model") / "model.pt", seed=1)


def test_save_then_load_gives_the_same_release(tmp_path: Path, model_file: Path) -> None:
    info = release_info(model_file)
    saved = release.save_bundle(tmp_path / "b", model_file, info)
    loaded = release.load_bundle(saved.directory)
    assert loaded.info == info
    assert sorted(p.name for p in saved.directory.iterdir()) == [
        "SHA256SUMS",
        "model.pt",
        "release.json",
    ]
    # sha256sum -c understands the manifest
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"],
        cwd=saved.directory,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_save_refuses_an_existing_directory(tmp_path: Path, model_file: Path) -> None:
    (tmp_path / "b").mkdir()
    with pytest.raises(FileExistsError):
        release.save_bundle(tmp_path / "b", model_file, release_info(model_file))


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing", "extra", "no_manifest"])
def test_verify_catches_a_damaged_bundle(tmp_path: Path, model_file: Path, damage: str) -> None:
    saved = release.save_bundle(tmp_path / "b", model_file, release_info(model_file))
    model = saved.directory / "model.pt"
    if damage == "flip":
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF
        model.write_bytes(bytes(data))
    elif damage == "truncate":
        model.write_bytes(model.read_bytes()[:1000])
    elif damage == "missing":
        model.unlink()
    elif damage == "extra":
        (saved.directory / "evil.sh").write_text("rm -rf /")
    else:
        (saved.directory / "SHA256SUMS").unlink()
    with pytest.raises(DeployError) as error:
        release.load_bundle(saved.directory)
    assert "deploy again" in str(error.value)


@pytest.mark.parametrize(
    "text",
    ["", "nothex  model.pt\n", f"{'a' * 64}  ../escape\n", f"{'a' * 64}  dir/model.pt\n"],
)
def test_bad_manifests_are_refused(text: str) -> None:
    with pytest.raises(DeployError):
        release.parse_manifest(text)


def test_manifest_round_trip() -> None:
    checksums = {"model.pt": "a" * 64, "release.json": "b" * 64}
    assert release.parse_manifest(release.manifest_text(checksums)) == checksums


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("3", "3-"),
        ("v1.2", "v1.2-"),
        ("a/b c", "a_b_c-"),
        ("..", "local-"),
    ],
)
def test_release_names_are_safe_directory_names(version: str, expected: str) -> None:
    digest = "0123456789abcdef" * 4
    name = release.release_name(version, digest)
    assert name == expected + release.release_identity(version, digest)[:12]
    assert release.is_release_name(name)


def test_the_same_content_gives_the_same_release_whenever_it_is_built() -> None:
    digest = "ab" * 32
    first = replace(info_for(digest), created_at="2026-11-25T11:00:00Z", run_id="run1")
    again = replace(
        info_for(digest), created_at="2027-01-01T00:00:00Z", run_id="run9", forced_reason="x"
    )
    assert first.identity == again.identity
    assert release.release_name("2", digest) == release.release_name("2", digest, ServingConfig())


@pytest.mark.parametrize(
    "change",
    [
        {"model_sha256": "cd" * 32},
        {"model_version": "3"},
        {"serving": ServingConfig(max_batch=8)},
        {"serving": ServingConfig(resize=False)},
        {"serving": ServingConfig(max_request_bytes=1024)},
    ],
)
def test_a_change_in_what_is_served_gives_a_new_release(change: dict[str, Any]) -> None:
    base = {"model_version": "2", "model_sha256": "ab" * 32, "serving": ServingConfig()}
    changed = {**base, **change}
    assert release.release_identity(**base) != release.release_identity(**changed)
    assert release.release_name(**base) != release.release_name(**changed)


def test_bundles_built_twice_from_one_model_are_the_same_release(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    digest = release.sha256_file(model)
    built = [
        release.save_bundle(
            tmp_path / f"b{n}",
            model,
            replace(info_for(digest), created_at=f"2026-11-2{n}T00:00:00Z"),
        )
        for n in (1, 2)
    ]
    manifests = [(b.directory / release.MANIFEST_FILE_NAME).read_bytes() for b in built]
    assert manifests[0] != manifests[1]  # release.json records when each was built
    assert release.same_bundle(built[0].directory, built[1].directory)
    other = release.save_bundle(
        tmp_path / "b3", model, replace(info_for(digest), serving=ServingConfig(max_batch=1))
    )
    assert not release.same_bundle(built[0].directory, other.directory)


def test_metadata_without_torch_matches_torch(model_file: Path) -> None:
    from cxml.ml import models

    _, metadata = models.read_model_file(model_file)
    assert release.read_model_metadata(model_file) == metadata.to_dict()


def test_reading_metadata_does_not_import_torch(model_file: Path) -> None:
    code = (
        "import sys; from cxml.records import release; "
        f"m = release.read_model_metadata({str(model_file)!r}); "
        "assert m['architecture'] == 'small_cnn'; assert 'torch' not in sys.modules, 'torch "
        "imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("content", [b"not a zip", b"PK\x03\x04broken"])
def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(RecordError, match="not a readable cxml model file"):
        release.read_model_metadata(path)


def test_a_zip_with_foreign_objects_is_refused(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "model.pt"
    torch.save({"format": "cxml-model/1", "metadata": {}, "evil": Path("/")}, path)
    with pytest.raises(RecordError, match="unexpected object"):
        release.read_model_metadata(path)


def test_missing_model_file_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="run `cxml train` first"):
        release.read_model_metadata(tmp_path / "nope.pt")


@pytest.mark.parametrize(
    ("uri", "public"),
    [
        ("https://deploy:s3cr3t-token@mlflow.example.com/", "https://mlflow.example.com/"),
        ("http://user@127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("https://mlflow.example.com/api?workspace=7&access_token=s3cr3t-token", "https://mlflow.example.com/api?workspace=7&access_token=***"),
        ("sqlite:////srv/mlflow/mlflow.db", "sqlite:////srv/mlflow/mlflow.db"),
        ("databricks", "databricks"),
        ("connection refused: http://ci:pw@10.0.0.5:5000/api?key=abc", "connection refused: http://10.0.0.5:5000/api?key=***"),
    ],
)  # fmt: skip
def test_uris_lose_their_credentials(uri: str, public: str) -> None:
    from cxml.core.redact import redact_uri

    assert redact_uri(uri) == public


def test_release_json_never_holds_tracking_credentials(tmp_path: Path, model_file: Path) -> None:
    from dataclasses import replace

    secret_uri = "https://deploy:s3cr3t-token@mlflow.example.com"
    info = replace(release_info(model_file), tracking_uri=secret_uri)
    saved = release.save_bundle(tmp_path / "b", model_file, info)
    text = (saved.directory / "release.json").read_text()
    assert "s3cr3t-token" not in text and "deploy:" not in text
    assert release.load_bundle(saved.directory).info.tracking_uri == "https://mlflow.example.com"


def test_the_model_file_format_has_one_home(model_file: Path) -> None:
    import torch

    payload = torch.load(model_file, weights_only=True)
    assert payload["format"] == release.MODEL_FILE_FORMAT  # what cxml.ml.models writes


@pytest.mark.parametrize(
    "record", ['{"format": "something-else"}', '{"format": "cxml-release/1"}', "[]", "{not json"]
)
def test_a_release_record_cxml_did_not_write_is_a_record_error(
    tmp_path: Path, model_file: Path, record: str
) -> None:
    saved = release.save_bundle(tmp_path / "b", model_file, release_info(model_file))
    (saved.directory / "release.json").write_text(record)
    with pytest.raises(RecordError, match=r"release\.json"):
        release.load_bundle(saved.directory, verify=False)


@pytest.mark.parametrize(
    ("name", "ok"),
    [("4-abababababab", True), ("v1.2-0123", True), ("..", False), (".hidden", False),
     ("a/b", False), ("../etc", False), ("", False)],
)  # fmt: skip
def test_release_names_are_plain_directory_names(name: str, ok: bool) -> None:
    assert release.is_release_name(name) is ok
    if ok:
        assert release.is_release_name(release.release_name(name, "ab" * 32))


@pytest.mark.parametrize("link", ["model.pt", "SHA256SUMS", "extra"])
def test_a_bundle_holding_a_link_is_refused(tmp_path: Path, model_file: Path, link: str) -> None:
    saved = release.save_bundle(tmp_path / "b", model_file, release_info(model_file))
    outside = tmp_path / "outside"
    if link == "extra":  # a link to a directory, which no checksum names
        outside.mkdir()
    else:  # a link to a file with the very bytes the manifest expects
        (saved.directory / link).rename(outside)
    (saved.directory / link).symlink_to(outside)
    with pytest.raises(DeployError, match=f"{link} is a link or a directory"):
        release.verify_bundle(saved.directory)


@pytest.mark.parametrize("name", ["../..", "..", "a/b", "/etc", 7, None])
def test_a_release_record_naming_a_path_is_refused(
    tmp_path: Path, model_file: Path, name: object
) -> None:
    record = release_info(model_file).to_dict()
    record["release"] = name
    with pytest.raises(RecordError, match="not a release name"):
        release.ReleaseInfo.from_dict(record)

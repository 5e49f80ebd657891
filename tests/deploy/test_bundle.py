"""Release bundles: save/load, checksum verification, and model metadata read without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cxml.core.errors import DeployError
from cxml.deploy import bundle
from tests.support.deploy import make_model_file


def release_info(model: Path, version: str = "3") -> bundle.ReleaseInfo:
    digest = bundle.sha256_file(model)
    return bundle.ReleaseInfo(
        release=bundle.release_name(version, digest),
        model_version=version,
        model_name="cxml-model",
        run_id="abc",
        tracking_uri=None,
        git_commit="f00",
        created_at="2026-11-25T11:00:00Z",
        model_sha256=digest,
        model_metadata=bundle.read_model_metadata(model),
        metrics={"accuracy": 0.97},
        gate_decision="pass",
    )


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_file(tmp_path_factory.mktemp("model") / "model.pt", seed=1)


def test_save_then_load_gives_the_same_release(tmp_path: Path, model_file: Path) -> None:
    info = release_info(model_file)
    saved = bundle.save_bundle(tmp_path / "b", model_file, info)
    loaded = bundle.load_bundle(saved.directory)
    assert loaded.info == info
    assert sorted(p.name for p in saved.directory.iterdir()) == [
        "SHA256SUMS",
        "model.pt",
        "release.json",
    ]
    # sha256sum -c understands the manifest
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=saved.directory, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_save_refuses_an_existing_directory(tmp_path: Path, model_file: Path) -> None:
    (tmp_path / "b").mkdir()
    with pytest.raises(FileExistsError):
        bundle.save_bundle(tmp_path / "b", model_file, release_info(model_file))


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing", "extra", "no_manifest"])
def test_verify_catches_a_damaged_bundle(tmp_path: Path, model_file: Path, damage: str) -> None:
    saved = bundle.save_bundle(tmp_path / "b", model_file, release_info(model_file))
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
        bundle.load_bundle(saved.directory)
    assert "deploy again" in str(error.value)


@pytest.mark.parametrize(
    "text",
    ["", "nothex  model.pt\n", f"{'a' * 64}  ../escape\n", f"{'a' * 64}  dir/model.pt\n"],
)
def test_bad_manifests_are_refused(text: str) -> None:
    with pytest.raises(DeployError):
        bundle.parse_manifest(text)


def test_manifest_round_trip() -> None:
    checksums = {"model.pt": "a" * 64, "release.json": "b" * 64}
    assert bundle.parse_manifest(bundle.manifest_text(checksums)) == checksums


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("3", "3-0123456789ab"),
        ("v1.2", "v1.2-0123456789ab"),
        ("a/b c", "a_b_c-0123456789ab"),
        ("..", "local-0123456789ab"),
    ],
)
def test_release_names_are_safe_directory_names(version: str, expected: str) -> None:
    assert bundle.release_name(version, "0123456789abcdef" * 4) == expected


def test_metadata_without_torch_matches_torch(model_file: Path) -> None:
    from cxml.ml import models

    _, metadata = models.read_model_file(model_file)
    assert bundle.read_model_metadata(model_file) == metadata.to_dict()


def test_reading_metadata_does_not_import_torch(model_file: Path) -> None:
    code = (
        "import sys; from cxml.deploy import bundle; "
        f"m = bundle.read_model_metadata({str(model_file)!r}); "
        "assert m['architecture'] == 'small_cnn'; assert 'torch' not in sys.modules, 'torch "
        "imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("content", [b"not a zip", b"PK\x03\x04broken"])
def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(DeployError, match="not a readable cxml model file"):
        bundle.read_model_metadata(path)


def test_a_zip_with_foreign_objects_is_refused(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "model.pt"
    torch.save({"format": "cxml-model/1", "metadata": {}, "evil": Path("/")}, path)
    with pytest.raises(DeployError, match="unexpected object"):
        bundle.read_model_metadata(path)


def test_missing_model_file_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="run `cxml train` first"):
        bundle.read_model_metadata(tmp_path / "nope.pt")


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
    from cxml.tracking.runs import redact_uri

    assert redact_uri(uri) == public


def test_release_json_never_holds_tracking_credentials(tmp_path: Path, model_file: Path) -> None:
    from dataclasses import replace

    secret_uri = "https://deploy:s3cr3t-token@mlflow.example.com"
    info = replace(release_info(model_file), tracking_uri=secret_uri)
    saved = bundle.save_bundle(tmp_path / "b", model_file, info)
    text = (saved.directory / "release.json").read_text()
    assert "s3cr3t-token" not in text and "deploy:" not in text
    assert bundle.load_bundle(saved.directory).info.tracking_uri == "https://mlflow.example.com"

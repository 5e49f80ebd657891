"""The memory layout of forward passes: chosen by timing at load, same answers either way."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cxml.ml import models
from cxml.ml.models import ModelMetadata
from cxml.serve import step
from cxml.serve.layout import (
    WIN_MARGIN,
    LayoutChoice,
    can_use_channels_last,
    channels_last_limit,
    choose_layout,
)
from cxml.serve.service import PredictionService
from cxml.serve.settings import ServeSettings


def model_file(path: Path, architecture: str, input_size: tuple[int, int, int]) -> Path:
    torch.manual_seed(0)
    channels = input_size[0]
    network = models.build_model(architecture, 10, channels)
    metadata = ModelMetadata(
        architecture,
        10,
        tuple(str(i) for i in range(10)),
        input_size,
        (0.3,) * channels,
        (0.35,) * channels,
        "0.1.0",
    )
    models.save_model_file(path, network, metadata)
    return path


def service(path: Path, layout: str) -> PredictionService:
    return PredictionService(
        ServeSettings(model_path=path, release=None, device="cpu", layout=layout)
    )


def random_images(count: int, input_size: tuple[int, int, int]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(count)
    return torch.randint(0, 256, (count, *input_size), dtype=torch.uint8, generator=generator)


def test_channels_last_is_kept_up_to_the_first_batch_size_where_it_stops_winning() -> None:
    assert channels_last_limit({1: (6.4, 4.2), 2: (7.1, 12.3), 4: (9.0, 5.0)}) == 1
    assert channels_last_limit({1: (6.4, 4.2), 2: (7.1, 5.0), 4: (9.0, 14.0)}) == 2
    assert channels_last_limit({1: (6.4, 6.4 * WIN_MARGIN * 1.01)}) == 0  # a win within noise
    assert channels_last_limit({}) == 0


def test_the_choice_describes_what_was_measured() -> None:
    chosen = LayoutChoice(1, {1: (6.4, 4.2), 2: (7.1, 12.3)}).describe()
    assert "channels-last for batches up to 1" in chosen
    assert "batch 1: 6.4 vs 4.2 ms" in chosen
    assert "timed slower" in LayoutChoice(0, {1: (0.2, 0.3)}).describe()
    assert "not timed" in LayoutChoice().describe()


def test_only_cpu_image_models_are_timed(tmp_path: Path) -> None:
    path = model_file(tmp_path / "cnn.pt", "small_cnn", (1, 8, 8))
    network, metadata = models.load_model_file(path)
    assert can_use_channels_last(network, metadata.input_size)
    assert choose_layout(network, metadata.input_size, "cuda") == (LayoutChoice(), None)
    tabular = models.build_model("mlp", 2, 30, (16,))
    assert not can_use_channels_last(tabular, (30, 1, 1))
    assert choose_layout(tabular, (30, 1, 1), "cpu") == (LayoutChoice(), None)


@pytest.mark.parametrize(
    ("architecture", "input_size"), [("resnet18", (3, 32, 32)), ("small_cnn", (1, 8, 8))]
)
def test_every_layout_gives_the_standard_answers(
    tmp_path: Path, architecture: str, input_size: tuple[int, int, int]
) -> None:
    path = model_file(tmp_path / "model.pt", architecture, input_size)
    standard = service(path, "standard")
    assert standard.channels_last_model is None
    for layout in ("channels-last", "auto"):
        other = service(path, layout)
        for count in (1, 2, 5):
            images = random_images(count, input_size)
            expected = standard.logits(images)
            assert torch.allclose(other.logits(images), expected, atol=1e-4, rtol=1e-4), (
                layout,
                count,
            )
    forced = service(path, "channels-last")
    assert forced.layout.channels_last_up_to == forced.settings.max_batch
    assert forced.channels_last_model is not None


def test_auto_times_both_layouts_on_the_loaded_model(tmp_path: Path) -> None:
    path = model_file(tmp_path / "resnet.pt", "resnet18", (3, 32, 32))
    chosen = service(path, "auto")
    assert 1 in chosen.layout.timings_ms  # batch 1 is always timed
    assert all(ms > 0 for pair in chosen.layout.timings_ms.values() for ms in pair)
    kept = chosen.layout.channels_last_up_to
    assert (chosen.channels_last_model is not None) == (kept > 0)
    chosen.warm_up()
    assert chosen.ready


def test_layout_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = model_file(tmp_path / "cnn.pt", "small_cnn", (1, 8, 8))
    args = step.parse_args(["--model", str(path), "--layout", "standard"])
    assert step.settings_from_args(args).layout == "standard"
    assert step.settings_from_args(step.parse_args(["--model", str(path)])).layout == "auto"
    with pytest.raises(SystemExit) as stopped:
        step.parse_args(["--model", str(path), "--layout", "sideways"])
    assert stopped.value.code == 2
    assert "--layout" in capsys.readouterr().err

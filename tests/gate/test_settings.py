"""Gate settings checked when params are loaded: rule syntax, metric names, the baseline."""

from __future__ import annotations

import pytest

from cxml.core.config import params_from_mapping
from cxml.core.errors import ConfigError, GateError
from cxml.gate.decide import check_gate_settings


def params_with(**evaluate: object):  # type: ignore[no-untyped-def]
    return params_from_mapping({"evaluate": evaluate})


@pytest.mark.parametrize(
    "rules",
    [
        ["accuracy >= 0.9", "accuracy >= baseline - 0.005"],
        ["latency_p95_ms <= baseline * 1.10", "f1_macro > 0.5", "num_test_images >= 10"],
        ["per_class_accuracy.cat >= 0.5"],
    ],
)
def test_good_rules_pass(rules: list[str]) -> None:
    check_gate_settings(params_with(gate=rules))


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            ["acuracy >= 0.9"],
            "params.yaml: evaluate.gate: gate rule 'acuracy >= 0.9': unknown metric 'acuracy'; known metrics: accuracy,",
        ),
        (["accuracy >= baseline -"], "gate rule 'accuracy >= baseline -'"),
        (["per_class_accuracy. >= 0.5"], "unknown metric 'per_class_accuracy.'"),
        (["val_accuracy >= 0.9"], "unknown metric 'val_accuracy'"),
    ],
)
def test_bad_rules_name_the_rule(rules: list[str], message: str) -> None:
    with pytest.raises(GateError) as caught:
        check_gate_settings(params_with(gate=rules))
    assert str(caught.value).startswith(message) or message in str(caught.value)


@pytest.mark.parametrize(
    ("baseline", "message"),
    [
        ("", "evaluate.baseline: empty"),
        ("git:", "git: needs a ref"),
        ("main branch", "is not a git ref"),
        ("--output=x", "is not a git ref"),
    ],
)
def test_bad_baseline_settings(baseline: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_gate_settings(params_with(baseline=baseline))


def test_cli_rules_and_baseline_are_checked_instead_of_params() -> None:
    params = params_with(gate=["nonsense >= 1"])
    check_gate_settings(params, ["accuracy >= 0.5"], "git:origin/master")
    with pytest.raises(ConfigError, match="--baseline"):
        check_gate_settings(params, ["accuracy >= 0.5"], "git:")

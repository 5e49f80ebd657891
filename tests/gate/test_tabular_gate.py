"""A tabular model at the gate: `roc_auc` rules (two classes only), and noise counted in rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxml.core.config import params_from_mapping
from cxml.core.errors import GateError
from cxml.core.metrics import judge_change
from cxml.gate.decide import check_gate_settings, run_gate
from cxml.gate.rules import decide, gate_table, parse_rules
from cxml.records.gate import BaselineInfo

NO_BASELINE = BaselineInfo(source="none", description="no baseline", metrics=None)


def tabular_metrics(accuracy_rows: int, total: int = 86) -> dict[str, object]:
    return {
        "accuracy": accuracy_rows / total,
        "f1_macro": 0.97,
        "roc_auc": 0.995,
        "num_test_images": total,
        "num_features": 30,
        "per_class_accuracy": {"malignant": 0.96, "benign": 0.99},
    }


def test_a_roc_auc_rule_is_accepted_for_two_class_and_unknown_data() -> None:
    for source in ("breast_cancer", "csv", "imagefolder"):
        data = {"source": source, "path": "t.csv"} if source != "breast_cancer" else {}
        params = params_from_mapping(
            {
                "data": {"source": source, **data},
                "model": {"architecture": "small_cnn" if source == "imagefolder" else "mlp"},
                "evaluate": {"gate": ["roc_auc >= 0.97", "roc_auc >= baseline - 0.01"]},
            }
        )
        check_gate_settings(params)


def test_a_roc_auc_rule_on_the_ten_digits_is_refused_at_load_time() -> None:
    params = params_from_mapping({"evaluate": {"gate": ["accuracy >= 0.9", "roc_auc >= 0.9"]}})
    with pytest.raises(GateError) as caught:
        check_gate_settings(params)
    message = str(caught.value)
    assert message.startswith("params.yaml: evaluate.gate: gate rule 'roc_auc >= 0.9': roc_auc")
    assert "only computed for a model of two classes" in message
    assert "data.source: digits has 10 classes" in message and "remove the rule" in message


def test_a_roc_auc_rule_on_a_many_class_csv_is_refused_at_gate_time(tmp_path: Path) -> None:
    metrics = {
        "accuracy": 0.9,
        "num_test_images": 30,
        "per_class_accuracy": {"a": 1, "b": 1, "c": 1},
    }
    gate_path = tmp_path / "gate.json"
    with pytest.raises(GateError) as caught:
        run_gate(["roc_auc >= 0.9"], metrics, NO_BASELINE, str(gate_path))
    assert "roc_auc is only computed for a model of two classes" in str(caught.value)
    assert "(3 classes in the test data)" in str(caught.value)
    assert not gate_path.exists()  # nothing half-written


def test_a_roc_auc_rule_is_decided_on_a_two_class_model(tmp_path: Path) -> None:
    gate = run_gate(
        ["roc_auc >= 0.97"], tabular_metrics(84), NO_BASELINE, str(tmp_path / "gate.json")
    )
    assert gate.passed and gate.rules[0].value == 0.995


def test_noise_notes_of_a_tabular_model_count_rows() -> None:
    change = judge_change("accuracy", tabular_metrics(83), tabular_metrics(84))  # type: ignore[arg-type]
    assert change is not None and change.verdict == "within noise"
    assert change.noise_note() == "-1 row of 86"
    image_metrics = {"accuracy": 268 / 269, "num_test_images": 269}
    image_change = judge_change("accuracy", image_metrics, {**image_metrics, "accuracy": 1.0})
    assert image_change is not None and image_change.noise_note() == "-1 image of 269"


def test_the_report_says_rows_for_a_tabular_model() -> None:
    from dataclasses import replace

    from cxml.core.metrics import flatten
    from cxml.report.markdown import verdict

    current, baseline = flatten(tabular_metrics(83)), flatten(tabular_metrics(85))
    gate = decide(parse_rules(["accuracy >= baseline"]), current, baseline)
    gate = replace(gate, baseline=BaselineInfo("git:main", "main", baseline, ref="main"))
    assert not gate.passed
    assert "within noise: -2 rows of 86" in verdict(gate, current)
    assert "image" not in verdict(gate, current) + gate_table(gate)

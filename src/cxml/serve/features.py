"""Turning a tabular /predict request into feature rows: `features`, `rows` or `records` JSON.

`{"features": [x1, ..., xF]}` is one row, `{"rows": [[...], ...]}` several, and
`{"records": [{"name": value, ...}, ...]}` rows by feature name. Every bad input is a
RequestError (a 4xx) naming the row and the missing, extra or non-numeric feature.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cxml.serve.requests import RequestError

if TYPE_CHECKING:
    import torch

    from cxml.ml.models import ModelMetadata

FORMS = '{"features": [...]}, {"rows": [[...], ...]} or {"records": [{"name": value, ...}]}'
NAMES_SHOWN = 5


def features_from_json(body: bytes, metadata: ModelMetadata, max_rows: int) -> torch.Tensor:
    """A JSON body -> float32 N,F,1,1 rows in the model's feature order, or a RequestError."""
    import torch

    rows = rows_from_payload(parse_body(body), metadata.feature_names, max_rows)
    return torch.tensor(rows, dtype=torch.float32).view(len(rows), -1, 1, 1)


def parse_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        raise RequestError(400, f"the JSON body is nested too deeply; send {FORMS}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RequestError(400, f"the body is not valid JSON; send {FORMS}") from None
    except ValueError:  # an integer past Python's 4,300-digit limit for turning text into int
        raise RequestError(400, "the JSON body holds a number too long to read") from None


def rows_from_payload(
    payload: Any, feature_names: Sequence[str], max_rows: int
) -> list[list[float]]:
    """The payload's rows as numbers in the order of `feature_names`."""
    forms = {"features", "rows", "records"}
    if not isinstance(payload, dict) or len(forms & payload.keys()) != 1:
        raise RequestError(422, f"a tabular model takes exactly one of {FORMS}")
    if "features" in payload:
        rows: Any = [payload["features"]]
    else:
        rows = payload["rows"] if "rows" in payload else payload["records"]
        if not isinstance(rows, list):
            key = "rows" if "rows" in payload else "records"
            raise RequestError(422, f'"{key}" must be a list of rows; send {FORMS}')
    if not rows:
        raise RequestError(422, "the request holds no rows; send at least one")
    if len(rows) > max_rows:
        raise RequestError(
            413, f"{len(rows)} rows in one request, over the limit of {max_rows}; split the batch"
        )
    if "records" in payload:
        return [record_row(record, i, feature_names) for i, record in enumerate(rows)]
    return [list_row(row, i, feature_names) for i, row in enumerate(rows)]


def list_row(row: Any, index: int, feature_names: Sequence[str]) -> list[float]:
    if not isinstance(row, list):
        raise RequestError(422, f"row {index}: expected a list of {len(feature_names)} numbers")
    if len(row) != len(feature_names):
        if len(row) < len(feature_names):
            missing = feature_names[len(row) :]
            problem = f"missing feature(s) {named(missing)}"
        else:
            problem = f"{len(row) - len(feature_names)} extra value(s) after the last feature"
        raise RequestError(
            422,
            f"row {index}: {len(row)} values, the model takes {len(feature_names)} "
            f"({problem}); send one value per feature, in the order /version lists them",
        )
    return [number(value, index, name) for value, name in zip(row, feature_names, strict=True)]


def record_row(record: Any, index: int, feature_names: Sequence[str]) -> list[float]:
    if not isinstance(record, dict):
        raise RequestError(422, f"record {index}: expected an object of feature name -> number")
    missing = [name for name in feature_names if name not in record]
    if missing:
        raise RequestError(
            422, f"record {index}: missing feature(s) {named(missing)}; /version lists them all"
        )
    known = set(feature_names)
    extra = [str(name) for name in record if name not in known]
    if extra:
        raise RequestError(
            422, f"record {index}: unknown feature(s) {named(extra)}; /version lists the features"
        )
    return [number(record[name], index, name) for name in feature_names]


def number(value: Any, index: int, name: str) -> float:
    """A JSON number that is finite as a float (true/false and strings are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(
            422, f"row {index}, feature {name!r}: {describe(value)} is not a number; send a number"
        )
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise RequestError(
            422, f"row {index}, feature {name!r}: the value is too large for a float; send a number"
        )
    return result


def named(names: Sequence[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:NAMES_SHOWN])
    more = len(names) - NAMES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def describe(value: Any) -> str:
    if value is None:
        return "null"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."

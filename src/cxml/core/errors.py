"""The one exception family cxml raises for problems a person can fix.

Every error carries the exit code of its kind, so a script (or a workflow step) can tell
"change your input" from "the world failed" from "the gate said no"::

    CxmlError                      exit 2 unless a subclass says otherwise
    ├── ConfigError                2  params.yaml, deploy settings or a command-line option is invalid
    ├── DataError                  2  the dataset is missing, empty, corrupt or inconsistent
    ├── RecordError                2  a file one step hands the next (run.json, gate.json,
    │                                 metrics/*.json, release.json) is missing or malformed
    ├── GateError                  2  a gate rule cannot be parsed or names an unknown metric
    ├── TrainingError              3  training cannot go on (the loss became NaN, a lock is held)
    ├── TrackingError              3  the MLflow tracking server or registry failed
    ├── ReportError                3  the report cannot be posted (forge unreachable, refused)
    └── DeployError                3  a release cannot be uploaded, activated or rolled back

Exit code 1 is not an error: it is the gate's "fail" verdict. An error raised with
``exit_code=`` overrides its class's code where the same kind of failure can be either
(a report token that is malformed is the user's to fix: 2; a forge that is down: 3).
"""

from __future__ import annotations

EXIT_GATE_FAILED = 1
EXIT_INPUT = 2
EXIT_RUNTIME = 3


class CxmlError(Exception):
    """A problem with the input or the environment, with a message meant for a person.

    The message names what is wrong and how to fix it, on one line. The CLI prints it as
    ``error: <message>`` (plus a ``::error::`` annotation inside GitHub Actions) and exits
    with ``exit_code``.
    """

    exit_code: int = EXIT_INPUT

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(CxmlError):
    """params.yaml, the deploy settings or a command-line option is invalid."""


class DataError(CxmlError):
    """The dataset is missing, empty, corrupt or inconsistent."""


class RecordError(CxmlError):
    """A file passed between steps (run.json, gate.json, metrics, release.json) is unusable."""


class GateError(CxmlError):
    """A gate rule cannot be parsed or names an unknown metric."""


class TrainingError(CxmlError):
    """Training cannot go on (for example the loss became NaN)."""

    exit_code = EXIT_RUNTIME


class TrackingError(CxmlError):
    """The MLflow tracking server or model registry failed."""

    exit_code = EXIT_RUNTIME


class ReportError(CxmlError):
    """The report cannot be built or posted."""

    exit_code = EXIT_RUNTIME


class DeployError(CxmlError):
    """A release cannot be uploaded, activated or rolled back."""

    exit_code = EXIT_RUNTIME

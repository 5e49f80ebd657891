"""The one exception family cxml raises for problems a person can fix."""

from __future__ import annotations


class CxmlError(Exception):
    """A problem with the input or the environment, with a message meant for a person.

    The message names what is wrong and how to fix it, on one line. The CLI prints it as
    ``error: <message>`` (plus a ``::error::`` annotation inside GitHub Actions) and exits 2.
    """


class ConfigError(CxmlError):
    """params.yaml or a command-line option is invalid."""


class DataError(CxmlError):
    """The dataset is missing, empty, corrupt or inconsistent."""


class TrainingError(CxmlError):
    """Training cannot go on (for example the loss became NaN)."""


class GateError(CxmlError):
    """A gate rule cannot be parsed or names an unknown metric."""


class ReportError(CxmlError):
    """The report cannot be built or posted."""


class DeployError(CxmlError):
    """A release cannot be uploaded, activated or rolled back."""


class RecordError(CxmlError):
    """A file passed between steps (run.json, gate.json, metrics, release.json) is unusable."""

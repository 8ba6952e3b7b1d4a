"""Exceptions a user can act on. The CLI prints them as one clear line and exits non-zero."""

from __future__ import annotations


class CardiotwinError(Exception):
    """Base of all errors caused by input, configuration or a failed stage (not by a bug)."""

    exit_code = 2


class ScanError(CardiotwinError):
    """A scan that cannot be read or is not a usable 3D image. The message names the file."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(CardiotwinError):
    """An invalid configuration value or file."""


class CaseError(CardiotwinError):
    """A case directory that is locked, damaged or missing a required stage output."""


class StageError(CardiotwinError):
    """A stage that ran but could not produce a valid result (e.g. a mesh that fails)."""


class BeatDiverged(StageError):
    """A heartbeat whose mechanics diverged; ``time_ms`` is the simulated time of the step that failed."""

    def __init__(self, message: str, *, time_ms: float) -> None:
        super().__init__(message)
        self.time_ms = time_ms


class FhirError(CardiotwinError):
    """A FHIR resource or bundle that is invalid or unusable. The message names the file and the field."""

    def __init__(self, path: object, field: str, problem: str) -> None:
        self.path = str(path)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.path}: {field}: {problem}")


class InteropError(CardiotwinError):
    """A PACS (DICOMweb) or FHIR server that cannot be reached, refuses us, or lacks what was asked for."""

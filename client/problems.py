"""Problems found in a site's data, each with its location, and the bad-patient policy.

A problem names the file, the patient and the column (where they apply) and the reason.
`error` problems (a bad clinical row, images without a row) exclude the patient (policy `skip`)
or stop the site (policy `fail`); `warning` problems are reported and the patient is kept, among
them an unusable MRI or slide, which drops only that modality (`drop_modality`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Literal

from stsfl.common.console import UserError

log = logging.getLogger("stsfl.site")

Severity = Literal["error", "warning"]


class PatientDataError(Exception):
    """One input of one patient cannot be used; `file` and `column` say where, the message why."""

    def __init__(self, reason: str, file: str | None = None, column: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.file = file
        self.column = column


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the site's data, with its location."""

    reason: str
    file: str | None = None
    patient: str | None = None
    column: str | None = None
    severity: Severity = "error"

    def describe(self) -> str:
        where = ", ".join(f"{k} {v}" for k, v in (("file", self.file), ("patient", self.patient), ("column", self.column)) if v)
        return f"{where}: {self.reason}" if where else self.reason

    def to_dict(self) -> dict:
        return asdict(self)


class BadPatientError(UserError):
    """Raised under bad_patient_policy `fail` at the first patient that cannot be used."""

    def __init__(self, problem: Problem):
        super().__init__(f"bad patient (bad_patient_policy: fail): {problem.describe()}")
        self.problem = problem


class ProblemLog:
    """Collects problems; under policy `fail` an error problem raises BadPatientError at once."""

    def __init__(self, policy: Literal["skip", "fail"] = "skip"):
        self.policy = policy
        self.problems: list[Problem] = []

    def add(self, problem: Problem) -> None:
        self.problems.append(problem)
        log.warning("%s: %s", problem.severity, problem.describe())
        if problem.severity == "error" and self.policy == "fail":
            raise BadPatientError(problem)

    def error(self, reason: str, file=None, patient=None, column=None) -> None:
        self.add(Problem(reason, None if file is None else str(file), patient, column, "error"))

    def warning(self, reason: str, file=None, patient=None, column=None) -> None:
        self.add(Problem(reason, None if file is None else str(file), patient, column, "warning"))

    def excluded_patients(self) -> set[str]:
        """Patients with at least one error problem."""
        return {p.patient for p in self.problems if p.severity == "error" and p.patient}


def drop_modality(problems: ProblemLog, modality: str, err: PatientDataError, patient: str) -> None:
    """Record that one modality ("mri" or "wsi") of a patient is unusable: a warning, not an error,
    because the patient keeps its other modalities and its clinical data (a missing modality is
    data). The reason starts with `<modality> left out: ` (the problems table and the prediction
    pages read it)."""
    problems.warning(f"{modality} left out: {err.reason}", err.file, patient, err.column)


class SiteUnusableError(UserError):
    """The site as a whole cannot be used (e.g. clinical.csv unreadable or missing a required column)."""

    def __init__(self, problems: list[Problem]):
        super().__init__("site cannot be used:\n  " + "\n  ".join(p.describe() for p in problems))
        self.problems = problems

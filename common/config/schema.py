"""The federation-wide clinical schema: variables, their types and category sets, and the endpoints."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field, model_validator

from stsfl.common.config.loader import StrictModel
from stsfl.common.radiomics import RADIOMICS_FEATURES


class ClinicalVariable(StrictModel):
    """One clinical column. `categorical` needs its category set; `binary` is stored as 0/1."""

    name: str
    kind: Literal["continuous", "categorical", "binary"]
    description: str = ""
    unit: str | None = None
    categories: list[str] | None = None
    min: float | None = None
    max: float | None = None
    sarculator: bool = Field(False, description="one of the 4 Sarculator nomogram variables")
    source: Literal["table", "mri"] = Field(
        "table",
        description="table: a column of clinical.csv; mri: computed by the site from the patient's preprocessed "
        "MRI crop (a first-order radiomics feature of stsfl.common.radiomics, missing without a usable MRI)",
    )

    @model_validator(mode="after")
    def _derived_from_mri(self) -> ClinicalVariable:
        if self.source == "mri" and (self.kind != "continuous" or self.name not in RADIOMICS_FEATURES):
            raise ValueError(
                f"variable {self.name!r} with source mri must be a continuous variable named after one of the "
                f"radiomics features the sites compute: {', '.join(RADIOMICS_FEATURES)}"
            )
        return self

    @model_validator(mode="after")
    def _categories_match_kind(self) -> ClinicalVariable:
        if self.kind == "categorical" and not self.categories:
            raise ValueError(f"a categorical variable needs `categories` (variable {self.name!r})")
        if self.kind != "categorical" and self.categories:
            raise ValueError(f"only categorical variables take `categories` (variable {self.name!r})")
        if self.categories and len(set(self.categories)) != len(self.categories):
            raise ValueError(f"duplicate category in variable {self.name!r}")
        return self


class Endpoint(StrictModel):
    """A survival endpoint: a (time in days, event 0/1) column pair, and the endpoints whose events
    compete with it. `competing: [os]` says that death (the os event) ends this endpoint's follow-up:
    a patient whose endpoint is censored on the day of a death had the competing event, not a
    censoring. Its absolute risk is then a crude cumulative incidence (docs/prediction.md)."""

    name: str
    label: str
    time_column: str
    event_column: str
    competing: list[str] = Field(default_factory=list, description="endpoints whose event ends this one's follow-up")


class ClinicalSchema(StrictModel):
    """Clinical variables and endpoints every site's clinical.csv must follow."""

    patient_id_column: str = "patient_id"
    variables: list[ClinicalVariable]
    endpoints: list[Endpoint]

    @model_validator(mode="after")
    def _unique_names(self) -> ClinicalSchema:
        columns = [self.patient_id_column] + [v.name for v in self.variables]
        columns += [c for e in self.endpoints for c in (e.time_column, e.event_column)]
        duplicated = sorted({c for c in columns if columns.count(c) > 1})
        if duplicated:
            raise ValueError(f"column names used twice: {', '.join(duplicated)}")
        if len({e.name for e in self.endpoints}) != len(self.endpoints):
            raise ValueError("endpoint names must be unique")
        names = self.endpoint_names
        for endpoint in self.endpoints:
            unknown = [c for c in endpoint.competing if c not in names or c == endpoint.name]
            if unknown:
                raise ValueError(
                    f"endpoint {endpoint.name!r}: competing {unknown} must name other endpoints of the schema ({names})"
                )
            if len(endpoint.competing) > 1:
                raise ValueError(f"endpoint {endpoint.name!r}: one competing endpoint is supported, got {endpoint.competing}")
        return self

    def variable(self, name: str) -> ClinicalVariable:
        for var in self.variables:
            if var.name == name:
                return var
        raise KeyError(name)

    @property
    def table_variables(self) -> list[ClinicalVariable]:
        """The variables read from clinical.csv (not those the site computes from the MRI)."""
        return [v for v in self.variables if v.source == "table"]

    @property
    def mri_variables(self) -> list[ClinicalVariable]:
        """The variables the site computes from each patient's preprocessed MRI crop."""
        return [v for v in self.variables if v.source == "mri"]

    @property
    def endpoint_names(self) -> list[str]:
        return [e.name for e in self.endpoints]

    def competing_of(self, name: str) -> str | None:
        """The endpoint whose event competes with endpoint `name` (None: it has no competing event)."""
        for endpoint in self.endpoints:
            if endpoint.name == name:
                return endpoint.competing[0] if endpoint.competing else None
        raise KeyError(name)

    def fingerprint(self) -> dict[str, str]:
        """Digest of every column's definition by column name (patient id, variables, endpoint
        columns): what two parties must agree on to read and encode a patient alike - kind,
        categories in order, unit, range, Sarculator flag; not descriptions or labels. Holds no data."""
        parts: dict[str, object] = {self.patient_id_column: "patient id"}
        for var in self.variables:
            # a column of clinical.csv keeps the digest it had before variables could come from the MRI
            parts[var.name] = var.model_dump(
                mode="json", exclude={"name", "description"} | ({"source"} if var.source == "table" else set())
            )
        for endpoint in self.endpoints:
            parts[endpoint.time_column] = {"endpoint": endpoint.name, "role": "time in days"}
            parts[endpoint.event_column] = {"endpoint": endpoint.name, "role": "event 0/1"}
            if endpoint.competing:  # only then, so a schema without competing events keeps its digests
                parts[endpoint.event_column]["competing"] = list(endpoint.competing)
        return {name: _digest(value) for name, value in parts.items()}


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def schema_differences(site: dict[str, str], coordinator: dict[str, str]) -> list[str]:
    """The columns on which two schema fingerprints disagree, each saying how ("grade (defined
    differently)", "tumour_depth (only at the site)"), in column order of the coordinator then the site."""
    differing = [
        f"{name} (defined differently)" if name in site else f"{name} (missing at the site)"
        for name, digest in coordinator.items()
        if site.get(name) != digest
    ]
    return differing + [f"{name} (only at the site)" for name in site if name not in coordinator]

"""The encoded clinical vector [C]: its feature names and size as a function of the schema.

Layout, per schema variable in schema order (the network's input size C is fixed by the schema,
so it is the same at every site whatever its missing values):

- continuous ``x``: ``x`` (z-scored with federation-wide mean/std), ``x__missing``
- binary ``x``:     ``x`` (0/1), ``x__missing``
- categorical ``x`` with categories c1..cn: ``x=c1`` .. ``x=cn`` (one-hot), ``x__missing``

Missing-value rule: a missing continuous value is imputed with the federation mean (0 after
z-scoring), a missing binary value with the federation prevalence, a missing category with an
all-zero one-hot; in every case ``x__missing`` is 1 (else 0), so the network can tell an imputed
value from a measured one.
"""

from __future__ import annotations

from stsfl.common.config.schema import ClinicalSchema, ClinicalVariable

MISSING_SUFFIX = "__missing"


def variable_feature_names(var: ClinicalVariable) -> list[str]:
    """Encoded column names of one variable (value columns, then its missing indicator)."""
    if var.kind == "categorical":
        values = [f"{var.name}={c}" for c in var.categories or []]
    else:
        values = [var.name]
    return values + [var.name + MISSING_SUFFIX]


def clinical_feature_names(schema: ClinicalSchema) -> list[str]:
    """Names of the C encoded clinical features, in vector order."""
    return [name for var in schema.variables for name in variable_feature_names(var)]


def clinical_dim(schema: ClinicalSchema) -> int:
    """C, the size of the encoded clinical vector (the clinical network's input size)."""
    return len(clinical_feature_names(schema))


def feature_sources(schema: ClinicalSchema) -> list[str]:
    """The source of each of the C encoded features: "table" (clinical.csv) or "mri" (radiomics)."""
    return [var.source for var in schema.variables for _ in variable_feature_names(var)]

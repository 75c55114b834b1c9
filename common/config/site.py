"""A site's configuration: where its data lives and how bad patients are handled."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from .loader import StrictModel
from .security import SiteSecurity


class SiteLayout(StrictModel):
    """Paths inside the site folder (relative to `root` unless absolute); defaults follow DESIGN.md."""

    clinical_csv: str = "clinical.csv"
    mri_dir: str = "mri"
    wsi_dir: str = "wsi"


class SiteConfig(StrictModel):
    """One hospital's site YAML."""

    name: str
    root: Path
    layout: SiteLayout = SiteLayout()
    schema_file: Path | None = None
    bad_patient_policy: Literal["skip", "fail"] = "skip"
    cache_dir: Path | None = None
    outputs_dir: Path | None = Field(
        None,
        description="where a federation run leaves this site's own outputs (risk scores, Grad-CAM overlays, "
        "validation report), one folder per federation; default <root>/.stsfl/outputs; relative to this YAML",
    )
    security: SiteSecurity = SiteSecurity()

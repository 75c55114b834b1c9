"""A site's configuration: where its data lives and how bad patients are handled."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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
    security: SiteSecurity = SiteSecurity()

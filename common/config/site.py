"""A site's configuration: where its data lives and how bad patients are handled."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from stsfl.common.config.loader import StrictModel
from stsfl.common.config.security import SiteSecurity


class SiteLayout(StrictModel):
    """Paths inside the site folder (relative to `root` unless absolute); defaults: the site layout of docs/site-operator.md."""

    clinical_csv: str = "clinical.csv"
    mri_dir: str = "mri"
    wsi_dir: str = "wsi"


class PrivacyConfig(StrictModel):
    """DP-SGD at this site (stsfl.client.training.privacy): per-patient clipping, Gaussian noise, a budget."""

    dp: bool = Field(False, description="train with Opacus DP-SGD (needs a federation with model_norm group or instance)")
    epsilon_budget: PositiveFloat | None = Field(
        None,
        description="epsilon this site spends in one federation at most; it stops training when the next training would pass it",
    )
    delta: float = Field(1e-5, gt=0.0, lt=1.0, description="the delta of (epsilon, delta); keep it well below 1 / patients")
    max_grad_norm: PositiveFloat = Field(1.0, description="each patient's gradient contribution is clipped to this norm")
    noise_multiplier: PositiveFloat | None = Field(
        None,
        description="noise std / max_grad_norm; default: the smallest that spends epsilon_budget over the "
        "federation's planned epochs",
    )

    @model_validator(mode="after")
    def _budget_or_noise(self) -> PrivacyConfig:
        if self.dp and self.epsilon_budget is None and self.noise_multiplier is None:
            raise ValueError("privacy.dp needs epsilon_budget (or a fixed noise_multiplier)")
        return self


class SiteConfig(StrictModel):
    """One hospital's site YAML."""

    name: str
    root: Path
    layout: SiteLayout = SiteLayout()
    schema_file: Path | None = None
    bad_patient_policy: Literal["skip", "fail"] = "skip"
    threads: PositiveInt | None = Field(
        None,
        description="CPU threads of this site's training and evaluation (torch intra-op); default: torch's own, one "
        "per core. Give each site its share of the cores when several sites or other jobs share one machine: "
        "threads that outnumber free cores wait on each other and make training many times slower",
    )
    cache_dir: Path | None = None
    outputs_dir: Path | None = Field(
        None,
        description="where a federation run leaves this site's own outputs (risk scores, Grad-CAM overlays, "
        "validation report), one folder per federation; default <root>/.stsfl/outputs; relative to this YAML",
    )
    wsi_features_dir: Path | None = Field(
        None,
        description="pre-extracted slide features, one <patient id>.h5 (CLAM / TRIDENT: features [N, E], coords [N, 2]) "
        "or .pt per patient, used when the preset's encoder is pre_extracted; relative to this YAML",
    )
    wsi_features_extractor: str | None = Field(
        None, description="the name of the model that made wsi_features_dir's features; must be the preset's extractor"
    )
    security: SiteSecurity = SiteSecurity()
    privacy: PrivacyConfig = PrivacyConfig()

    @model_validator(mode="after")
    def _features_named(self) -> SiteConfig:
        if (self.wsi_features_dir is None) != (self.wsi_features_extractor is None):
            raise ValueError("wsi_features_dir and wsi_features_extractor go together (the folder and the model that made it)")
        return self

    def root_dir(self, site_yaml: Path | None) -> Path:
        """The site folder; a relative `root` is relative to the site YAML's folder."""
        root = Path(self.root)
        if not root.is_absolute() and site_yaml is not None:
            root = Path(site_yaml).resolve().parent / root
        return root.resolve()

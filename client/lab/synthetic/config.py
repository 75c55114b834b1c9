"""`SynthConfig`: the size, seed and centre heterogeneity of a synthetic cohort (configs/synth*.yaml)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from stsfl.common.config.loader import StrictModel, bundled_path, load_config

# Bump when the generator's output for a given config changes (invalidates `stsfl demo`'s cache).
GENERATOR_VERSION = "synth-2"  # synth-2: local recurrence (lr) and first_event

Probability = float
Triple = tuple[PositiveFloat, PositiveFloat, PositiveFloat]


def _check_probabilities(name: str, probs: tuple[float, ...]) -> None:
    if any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
        raise ValueError(f"{name} must be non-negative and sum to 1, got {list(probs)}")


class MriGrid(StrictModel):
    """An acquisition grid: matrix size (x, y, z) in voxels and nominal spacing (x, y, z) in mm.

    Like a radiographer, the generator widens the in-plane field of view (the pixel spacing) and
    adds slices (up to 1.5 times as many, then thicker ones) for a tumour that would not fit.
    """

    size: tuple[PositiveInt, PositiveInt, PositiveInt]
    spacing: Triple


class CentreProfile(StrictModel):
    """What distinguishes one hospital: scanner, stain, case mix, follow-up, missing data."""

    t1: MriGrid = MriGrid(size=(160, 160, 24), spacing=(0.8, 0.8, 4.0))
    t2: MriGrid | None = Field(None, description="T2 acquisition grid; None: the T1 grid")
    mask_on: Literal["t1", "t2"] = Field("t1", description="grid the tumour mask is drawn on")
    oblique_deg: float = Field(0.0, ge=-45, le=45, description="in-plane rotation of the slice direction")
    t1_scale: PositiveFloat = Field(1.0, description="scanner intensity scale of T1")
    t2_scale: PositiveFloat = Field(1.0, description="scanner intensity scale of T2")
    bias_strength: float = Field(0.2, ge=0, le=1, description="amplitude of the smooth multiplicative bias field (log)")
    noise: float = Field(0.02, ge=0, le=0.5, description="Rician noise std relative to muscle signal")
    stain_shift_deg: float = Field(0.0, ge=-30, le=30, description="rotation of the H&E stain vectors")
    stain_intensity: PositiveFloat = Field(1.0, description="stain optical density scale")
    age_mean: float = Field(60.0, ge=30, le=80)
    grade_probs: tuple[Probability, Probability, Probability] = (0.2, 0.35, 0.45)
    radiotherapy_probs: tuple[Probability, Probability, Probability] = Field(
        (0.3, 0.45, 0.25), description="none, preoperative, postoperative"
    )
    log_baseline_shift: float = Field(0.0, ge=-3, le=3, description="centre log-hazard offset (both endpoints)")
    follow_up_years: tuple[PositiveFloat, PositiveFloat] = Field(
        (1.0, 8.0), description="administrative follow-up range (uniform accrual)"
    )
    dropout_per_year: float = Field(0.03, ge=0, le=1, description="random loss-to-follow-up hazard")
    missing_wsi: Probability = Field(0.0, ge=0, le=1, description="share of patients without a slide")
    missing_mri: Probability = Field(0.02, ge=0, le=1, description="share of patients without MRI")

    @model_validator(mode="after")
    def _valid(self) -> CentreProfile:
        _check_probabilities("grade_probs", self.grade_probs)
        _check_probabilities("radiotherapy_probs", self.radiotherapy_probs)
        if self.follow_up_years[0] > self.follow_up_years[1]:
            raise ValueError("follow_up_years must be (min, max) with min <= max")
        if self.mask_on == "t2" and self.t2 is None:
            raise ValueError("mask_on: t2 needs a separate t2 grid")
        return self


class WsiSettings(StrictModel):
    """Level-0 size of every slide, its resolution, the TIFF tile size and the pyramid depth."""

    width: PositiveInt = 1536
    height: PositiveInt = 1536
    mpp: PositiveFloat = Field(0.5, description="microns per pixel at level 0")
    tile: PositiveInt = 256
    levels: PositiveInt = Field(4, le=10)

    @model_validator(mode="after")
    def _fits(self) -> WsiSettings:
        if self.tile % 16:
            raise ValueError("tile must be a multiple of 16 (TIFF tiling)")
        if min(self.width, self.height) >> (self.levels - 1) < 16:
            raise ValueError("too many pyramid levels for the slide size")
        return self


# Four hospitals that differ the way a real federation does (docs: README "Synthetic cohort").
DEFAULT_PROFILES: tuple[CentreProfile, ...] = (
    CentreProfile(),
    CentreProfile(
        t1=MriGrid(size=(128, 128, 20), spacing=(1.0, 1.0, 5.0)),
        t1_scale=1.6,
        t2_scale=0.7,
        bias_strength=0.35,
        noise=0.03,
        stain_shift_deg=8,
        stain_intensity=1.15,
        age_mean=66,
        grade_probs=(0.1, 0.3, 0.6),
        radiotherapy_probs=(0.2, 0.2, 0.6),
        log_baseline_shift=0.3,
        follow_up_years=(0.5, 6.0),
        missing_wsi=0.33,
    ),
    CentreProfile(
        t1=MriGrid(size=(192, 192, 28), spacing=(0.7, 0.7, 3.5)),
        t2=MriGrid(size=(128, 128, 22), spacing=(1.0, 1.0, 4.5)),
        mask_on="t2",
        oblique_deg=12,
        t1_scale=0.8,
        t2_scale=1.3,
        bias_strength=0.15,
        stain_shift_deg=-6,
        stain_intensity=0.85,
        age_mean=55,
        grade_probs=(0.3, 0.4, 0.3),
        log_baseline_shift=-0.3,
        follow_up_years=(2.0, 10.0),
    ),
    CentreProfile(
        t1=MriGrid(size=(144, 144, 24), spacing=(0.9, 0.9, 4.0)),
        t1_scale=1.2,
        t2_scale=1.1,
        bias_strength=0.25,
        stain_shift_deg=14,
        stain_intensity=1.05,
        age_mean=62,
        radiotherapy_probs=(0.45, 0.3, 0.25),
        dropout_per_year=0.08,
        missing_mri=0.05,
    ),
)


class SynthConfig(StrictModel):
    """A synthetic cohort of `centers` centres; centre i uses `profiles[i % len(profiles)]`."""

    seed: int = 0
    centers: PositiveInt = Field(4, le=64)
    patients_min: PositiveInt = 60
    patients_max: PositiveInt = 120
    workers: PositiveInt = Field(2, le=64, description="processes; the output does not depend on it")
    tumour_grid: PositiveInt = Field(40, ge=16, le=128, description="resolution of a tumour's internal fields")
    missing_dm: Probability = Field(0.02, ge=0, le=1, description="share of patients with no DM follow-up")
    wsi: WsiSettings = WsiSettings()
    profiles: tuple[CentreProfile, ...] = Field(DEFAULT_PROFILES, min_length=1)

    @model_validator(mode="after")
    def _sizes(self) -> SynthConfig:
        if self.patients_min > self.patients_max:
            raise ValueError(f"patients_min ({self.patients_min}) exceeds patients_max ({self.patients_max})")
        return self

    def profile(self, centre: int) -> CentreProfile:
        return self.profiles[centre % len(self.profiles)]

    def settings_hash(self) -> str:
        """Key of everything that changes the output (not `workers`), for skipping regeneration."""
        text = self.model_dump_json(exclude={"workers"}) + GENERATOR_VERSION
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_synth_config(path: str | Path | None = None, *, tiny: bool = False) -> SynthConfig:
    """`path`, or the bundled configs/synth-tiny.yaml (`tiny`) or configs/synth.yaml."""
    if path is None:
        path = bundled_path("synth-tiny.yaml" if tiny else "synth.yaml")
    return load_config(path, SynthConfig)

"""Typed, validated configuration loaded from YAML (see configs/)."""

from stsfl.common.config.federation import FederationConfig
from stsfl.common.config.loader import ConfigError, StrictModel, bundled_path, load_config, parse_config, read_yaml
from stsfl.common.config.prediction import BaselineGridConfig, PredictionConfig
from stsfl.common.config.preset import ModelPreset, load_preset
from stsfl.common.config.recipe import EffectiveRecipe, resolve_recipe
from stsfl.common.config.schema import ClinicalSchema, ClinicalVariable, Endpoint
from stsfl.common.config.site import SiteConfig
from stsfl.common.config.train import ScheduleWindow, TrainConfig


def load_schema(path=None) -> ClinicalSchema:
    """The clinical schema at `path`, or the bundled configs/schema.yaml."""
    return load_config(path or bundled_path("schema.yaml"), ClinicalSchema)


def without_n4(preset: ModelPreset, name: str | None = None) -> ModelPreset:
    """The preset with N4 bias-field correction off (most of the CPU preprocessing time; the
    benchmarks' and tests' `--no-n4`), optionally renamed."""
    pre = preset.preprocessing
    mri = pre.mri.model_copy(update={"n4": pre.mri.n4.model_copy(update={"enabled": False})})
    update = {"preprocessing": pre.model_copy(update={"mri": mri})}
    return preset.model_copy(update=update if name is None else {**update, "name": name})


__all__ = [
    "BaselineGridConfig",
    "ClinicalSchema",
    "ClinicalVariable",
    "ConfigError",
    "EffectiveRecipe",
    "Endpoint",
    "FederationConfig",
    "ModelPreset",
    "PredictionConfig",
    "ScheduleWindow",
    "SiteConfig",
    "StrictModel",
    "TrainConfig",
    "bundled_path",
    "load_config",
    "load_preset",
    "load_schema",
    "parse_config",
    "read_yaml",
    "resolve_recipe",
    "without_n4",
]

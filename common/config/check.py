"""`check-config`: validate a YAML file as one of the known config kinds."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from stsfl.common.config.federation import FederationConfig
from stsfl.common.config.loader import ConfigError, load_config
from stsfl.common.config.preset import ModelPreset
from stsfl.common.config.schema import ClinicalSchema
from stsfl.common.config.site import SiteConfig

CONFIG_KINDS: dict[str, type[BaseModel]] = {
    "federation": FederationConfig,
    "site": SiteConfig,
    "schema": ClinicalSchema,
    "preset": ModelPreset,
}


def check_config_file(path: str | Path, kind: str) -> BaseModel:
    """Load `path` as config `kind`; raises ConfigError naming file and key on any problem."""
    if kind not in CONFIG_KINDS:
        raise ConfigError(f"unknown config kind {kind!r}; expected one of {', '.join(CONFIG_KINDS)}")
    return load_config(path, CONFIG_KINDS[kind])

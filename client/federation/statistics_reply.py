"""A site's answer to the statistics query: its statistics with its own schema's fingerprint, or
why it cannot serve the run - so the coordinator names the site and the cause instead of waiting
for a site that is connected but refuses.

A multimodal site reads its clinical.csv with the coordinator's schema; before it does, it compares
that schema with its own (the site YAML's `schema_file`, which `sts-client validate` checks the
data against). When they differ it sends only its fingerprint and the coordinator lists the columns
that differ (stsfl.server.federation.sites).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from stsfl.client.data.site_inventory import site_schema
from stsfl.common.config import ClinicalSchema, ConfigError, SiteConfig
from stsfl.common.console import UserError, one_line_cause
from stsfl.common.fed_protocol import STATS_SCHEMA_FINGERPRINT, STATS_UNUSABLE
from stsfl.common.messages import RunConfig


def statistics_reply(site: SiteConfig, site_yaml: Path, run: RunConfig, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`compute()`'s statistics plus this site's schema fingerprint (a task with a clinical schema); only the
    fingerprint when the coordinator's schema differs; {STATS_UNUSABLE: cause} when the site's
    data or configuration cannot be used (the errors a site operator fixes; a tabular site's table
    check raises ValueError naming the file)."""
    try:
        extra: dict[str, Any] = {}
        if run.schema:  # a task with a clinical schema (multimodal)
            own = site_schema(site, site_yaml).fingerprint()
            coordinator = ClinicalSchema.model_validate(run.schema).fingerprint()
            if own != coordinator:  # its data was checked against another schema: do not read it with this one
                return {STATS_SCHEMA_FINGERPRINT: own}
            extra[STATS_SCHEMA_FINGERPRINT] = own
        return {**compute(), **extra}
    except (UserError, ConfigError, ValueError) as err:
        return {STATS_UNUSABLE: one_line_cause(f"{type(err).__name__}: {err}")}

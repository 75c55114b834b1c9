"""Message configs as the coordinator builds them, for tests that drive a site's SiteTask directly."""

from __future__ import annotations

import dataclasses
from typing import Any

from stsfl.common.config import FederationConfig
from stsfl.common.messages import RoundConfig, RunConfig
from stsfl.common.tasks import server_side
from stsfl.server.federation.run_context import round_config as coordinator_round_config
from stsfl.server.federation.run_context import run_config as coordinator_run_config


def run_config(fed: FederationConfig, **changes: Any) -> RunConfig:
    """What every message of `fed`'s run carries (with `changes`)."""
    return dataclasses.replace(coordinator_run_config(fed, server_side(fed)), **changes)


def round_config(fed: FederationConfig, statistics: dict, server_round: int = 1, **changes: Any) -> RoundConfig:
    """The config of round `server_round` of `fed` as the coordinator builds it (with `changes`)."""
    return dataclasses.replace(coordinator_round_config(fed, run_config(fed), statistics, server_round), **changes)

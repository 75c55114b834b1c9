"""Which Flower node is which site: learnt from the sites' own replies, checked against the config.

A SuperNode is started by `sts-client` with node-config `site-name`; our ClientApp puts that
name in every reply. The server asks unknown nodes once (the statistics query, which the
statistics phase needs anyway) and keeps node id -> site name. A node that fails to reply is
forgotten and asked again before its next work: a restarted site may come back under the same node
id (the SuperLink keeps the node id it registered for the site's key) or a new one.

A connected site that cannot serve the run says so in its statistics reply (stsfl.client.
statistics_reply): its data is unusable, or its own clinical schema differs from the coordinator's
(compared here by fingerprint, naming the columns). Such a site is reported by name with its
cause, once, and never as "not connected"; the run is refused as soon as every expected site has
either connected or refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from stsfl.common.config.schema import ClinicalSchema, schema_differences
from stsfl.common.console import one_line_cause
from stsfl.common.fed_protocol import (
    CONFIG,
    MSG_STATS,
    STATS_SCHEMA_FINGERPRINT,
    STATS_UNUSABLE,
    reply_site_name,
)
from stsfl.common.messages import RunConfig, StatsReply

# A message lives this much longer than the coordinator waits for its reply: the push and the
# SuperNode's look for work (every 3 s in flwr 1.41) come on top, and a reply that arrives while the
# coordinator still waits must not be dropped as expired.
TTL_MARGIN_S = 60.0


class MissingSitesError(RuntimeError):
    """Expected sites did not connect in time, or connected and cannot serve the run; the message
    names them (and the cause of each that cannot)."""


def coordinator_fingerprint(run: RunConfig) -> dict[str, str] | None:
    """The fingerprint of the schema the coordinator sends (None for a task without one)."""
    return ClinicalSchema.model_validate(run.schema).fingerprint() if run.schema else None


class SiteDirectory:
    """node id <-> site name for the sites of one federation, plus each site's statistics reply."""

    def __init__(self, grid: Grid, expected: list[str], run: RunConfig, log: Callable[[str], None]):
        self.grid = grid
        self.expected = list(expected)
        self.query_config = run.to_record()  # the statistics query: the run's settings alone
        self.log = log
        self.node_of: dict[str, int] = {}
        self.statistics: dict[str, Any] = {}
        self.cannot_serve: dict[str, str] = {}  # site -> why it cannot serve this run
        self.failing_nodes: dict[int, str] = {}  # node -> the cause of its failed reply (site unknown)
        self._ignored: set[int] = set()
        self._fingerprint = coordinator_fingerprint(run)

    def forget(self, site: str) -> None:
        self.node_of.pop(site, None)

    def refresh(self, timeout: float) -> None:
        """Drop nodes that left; ask nodes we do not know yet who they are."""
        connected = set(self.grid.get_node_ids())
        for site, node in list(self.node_of.items()):
            if node not in connected:
                self.log(f"site {site} (node {node}) left the federation")
                del self.node_of[site]
        unknown = connected - set(self.node_of.values()) - self._ignored
        if not unknown:
            return
        messages = [
            Message(RecordDict({CONFIG: self.query_config}), dst_node_id=node, message_type=MSG_STATS, ttl=timeout + TTL_MARGIN_S)
            for node in sorted(unknown)
        ]
        for reply in self.grid.send_and_receive(messages, timeout=timeout):
            node = reply.metadata.src_node_id
            if reply.has_error():
                self._note_failing_node(node, one_line_cause(reply.error.reason))
                continue
            self.failing_nodes.pop(node, None)
            site = reply_site_name(reply.content)
            if site not in self.expected:
                self.log(f"node {node} is site {site!r}, which is not part of this federation: ignored")
                self._ignored.add(node)
                continue
            stats = StatsReply.from_record(reply.content).statistics
            refusal = self._refusal(stats)
            if refusal:
                if self.cannot_serve.get(site) != refusal:
                    self.log(f"site {site} (node {node}) is connected but cannot serve this run: {refusal}")
                self.cannot_serve[site] = refusal
                continue
            self.cannot_serve.pop(site, None)
            if site in self.node_of and self.node_of[site] != node:
                self.log(f"site {site} reconnected as node {node}")
            self.node_of[site] = node
            stats.pop(STATS_SCHEMA_FINGERPRINT, None)
            self.statistics[site] = stats
            self.log(f"site {site} connected (node {node})")

    def _refusal(self, stats: dict[str, Any]) -> str | None:
        """Why a site's statistics reply cannot serve this run, or None."""
        if STATS_UNUSABLE in stats:
            return str(stats[STATS_UNUSABLE])
        theirs = stats.get(STATS_SCHEMA_FINGERPRINT)
        if self._fingerprint is not None and theirs is not None and theirs != self._fingerprint:
            return (
                "its clinical schema (site YAML schema_file) differs from the coordinator's (federation YAML "
                "schema_file) in: " + ", ".join(schema_differences(theirs, self._fingerprint))
            )
        return None

    def _note_failing_node(self, node: int, cause: str) -> None:
        if self.failing_nodes.get(node) != cause:
            self.log(f"node {node} is connected but failed to say which site it is: {cause}")
        self.failing_nodes[node] = cause

    def missing(self, sites: list[str] | None = None) -> list[str]:
        return [s for s in (sites or self.expected) if s not in self.node_of]

    def wait_for(self, sites: list[str], timeout: float, query_timeout: float, at_least: int | None = None) -> None:
        """Wait until all of `sites` (or `at_least` of them) are connected; raise naming the missing ones."""
        need = len(sites) if at_least is None else at_least
        deadline = time.monotonic() + timeout
        announced: list[str] | None = None
        while True:
            self.refresh(query_timeout)
            missing = self.missing(sites)
            if len(sites) - len(missing) >= need:
                return
            refused = [s for s in missing if s in self.cannot_serve]
            if refused and len(refused) == len(missing):  # everyone answered: waiting changes nothing
                raise MissingSitesError(self._describe_missing(missing, None))
            if missing != announced:
                self.log(f"waiting for {len(missing)} site(s): {', '.join(missing)}")
                announced = missing
            if time.monotonic() > deadline:
                raise MissingSitesError(self._describe_missing(missing, timeout))
            time.sleep(1.0)

    def _describe_missing(self, missing: list[str], timeout: float | None) -> str:
        """Which sites cannot serve the run (and why) and which have not connected (after `timeout` s)."""
        parts = [f"site {s} cannot serve this run: {self.cannot_serve[s]}" for s in missing if s in self.cannot_serve]
        absent = [s for s in missing if s not in self.cannot_serve]
        if absent:
            failing = (
                (
                    f"; {len(self.failing_nodes)} connected node(s) failed to say which site they are "
                    f"({'; '.join(sorted(set(self.failing_nodes.values())))})"
                )
                if self.failing_nodes
                else ""
            )
            parts.append(
                f"after {timeout:.0f} s these sites have not connected: {', '.join(absent)} "
                f"(connected: {', '.join(sorted(self.node_of)) or 'none'}{failing}). Start them with "
                "`sts-client --site <site.yaml> --server <HOST:PORT>`."
            )
        return "\n".join(parts)

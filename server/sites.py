"""Which Flower node is which site: learnt from the sites' own replies, checked against the config.

A SuperNode is started by `sts-client` with node-config `site-name`; our ClientApp puts that
name in every reply. The server asks unknown nodes once (the statistics query, which the
statistics phase needs anyway) and keeps node id -> site name. A node that fails to reply is
forgotten and asked again before its next work: a restarted site may come back under the same node
id (the SuperLink keeps the node id it registered for the site's key) or a new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from stsfl.common.fed_protocol import CONFIG, MSG_STATS, STATS, from_json, reply_site_name


class MissingSitesError(RuntimeError):
    """Expected sites did not connect in time; the message names them."""


class SiteDirectory:
    """node id <-> site name for the sites of one federation, plus each site's statistics reply."""

    def __init__(self, grid: Grid, expected: list[str], query_config: ConfigRecord, log: Callable[[str], None]):
        self.grid = grid
        self.expected = list(expected)
        self.query_config = query_config
        self.log = log
        self.node_of: dict[str, int] = {}
        self.statistics: dict[str, Any] = {}
        self._ignored: set[int] = set()

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
            Message(RecordDict({CONFIG: self.query_config}), dst_node_id=node, message_type=MSG_STATS, ttl=timeout)
            for node in sorted(unknown)
        ]
        for reply in self.grid.send_and_receive(messages, timeout=timeout):
            node = reply.metadata.src_node_id
            if reply.has_error():
                self.log(f"node {node} could not report its site: {reply.error.reason}")
                continue
            site = reply_site_name(reply.content)
            if site not in self.expected:
                self.log(f"node {node} is site {site!r}, which is not part of this federation: ignored")
                self._ignored.add(node)
                continue
            if site in self.node_of and self.node_of[site] != node:
                self.log(f"site {site} reconnected as node {node}")
            self.node_of[site] = node
            self.statistics[site] = from_json(str(reply.content[STATS]["json"]))
            self.log(f"site {site} connected (node {node})")

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
            if missing != announced:
                self.log(f"waiting for {len(missing)} site(s): {', '.join(missing)}")
                announced = missing
            if time.monotonic() > deadline:
                raise MissingSitesError(
                    f"after {timeout:.0f} s these sites have not connected: {', '.join(missing)} "
                    f"(connected: {', '.join(sorted(self.node_of)) or 'none'}). Start them with "
                    "`sts-client --site <site.yaml> --server <HOST:PORT>`."
                )
            time.sleep(1.0)

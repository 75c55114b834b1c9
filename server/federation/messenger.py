"""The coordinator's side of every exchange with the sites: send one message per site, collect the
replies within a timeout, and keep track of which sites are connected (stsfl.server.federation.sites).

A site that fails to answer is forgotten until it answers the who-are-you query again: a killed site
may still be listed by the SuperLink (until its heartbeat expires) and come back under the same node
id, so only its answer tells that it is back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from stsfl.common.config import FederationConfig
from stsfl.common.fed_protocol import CONFIG, reply_site_name
from stsfl.common.messages import ConfigMessage, RunConfig
from stsfl.server.federation.sites import TTL_MARGIN_S, MissingSitesError, SiteDirectory

Records = dict[str, Any] | Callable[[str], dict[str, Any]]


class SiteMessenger:
    """Messages to the federation's sites; `sites` is the directory of which node is which site."""

    def __init__(self, grid: Grid, fed: FederationConfig, run_config: RunConfig, log: Callable[[str], None]):
        self.grid = grid
        self.fed = fed
        self.log = log
        # The first query makes each site prepare its data (preprocessing cache): allow a full round.
        self.query_timeout = fed.round_timeout_s
        self.sites = SiteDirectory(grid, fed.sites, run_config, log)

    def connected(self, sites: list[str]) -> list[str]:
        """Those of `sites` that answer now (after asking the unknown nodes who they are)."""
        self.sites.refresh(self.query_timeout)
        return [s for s in sites if s in self.sites.node_of]

    def wait_for_all(self) -> None:
        """Wait for every site of the federation (wait_for_sites_s); raises naming the missing ones."""
        self.sites.wait_for(self.fed.sites, self.fed.wait_for_sites_s, self.query_timeout)

    def training_sites(self, server_round: int) -> list[str]:
        """The training sites that take this round: waits `rejoin_wait_s` for the ones that dropped
        out, and up to `wait_for_sites_s` while fewer than `min_sites` are connected."""
        training = self.fed.training_sites
        self.sites.refresh(self.query_timeout)
        if self.sites.missing(training) and self.fed.rejoin_wait_s > 0:
            try:
                self.sites.wait_for(training, self.fed.rejoin_wait_s, self.query_timeout)
            except MissingSitesError:
                self.log(f"round {server_round}: goes ahead without {', '.join(self.sites.missing(training))}")
        if len(training) - len(self.sites.missing(training)) < self.fed.min_sites:
            self.sites.wait_for(training, self.fed.wait_for_sites_s, self.query_timeout, at_least=self.fed.min_sites)
        return [s for s in training if s in self.sites.node_of]

    def send(
        self,
        kind: str,
        sites: list[str],
        records: Records,
        cfg: ConfigMessage,
        server_round: int,
        timeout: float | None = None,
    ) -> tuple[dict[str, Message], dict[str, str]]:
        """Send one message per site (`records`, e.g. {ARRAYS: weights}, or site -> its records; plus
        the config) and wait `timeout` (default round_timeout_s); return (site -> reply, site -> failure reason)."""
        timeout = timeout or self.fed.round_timeout_s
        record = cfg.to_record()
        messages = []
        for site in sites:
            content = RecordDict({**(records(site) if callable(records) else records), CONFIG: record})
            messages.append(
                Message(
                    content,
                    dst_node_id=self.sites.node_of[site],
                    message_type=kind,
                    ttl=timeout + TTL_MARGIN_S,
                    group_id=str(server_round),
                )
            )
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        # the SuperLink itself signs an error reply (e.g. node unavailable), and SecAgg+ stage replies carry
        # no site record, so match replies by the message they answer
        site_of_message = {m.metadata.message_id: site for m, site in zip(messages, sites)}
        ok, failed = {}, {}
        for reply in replies:
            site = site_of_message.get(reply.metadata.reply_to_message_id)
            if reply.has_error():
                failed[site or str(reply.metadata.src_node_id)] = reply.error.reason
            else:
                ok[site or reply_site_name(reply.content)] = reply
        for site in sites:
            if site not in ok and site not in failed:
                failed[site] = f"no reply within {timeout:.0f} s"
        # a round waits for a failed site to answer the who-are-you query again (rejoin_wait_s)
        for site, reason in failed.items():
            self.log(f"round {server_round}: site {site} did not {kind.split('.')[0]}: {reason}")
            self.sites.forget(site)
        return ok, failed

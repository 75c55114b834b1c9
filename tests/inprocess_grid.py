"""Our ServerApp's orchestration against our ClientApp in one process, without a SuperLink.

`InProcessGrid` answers the two Grid calls the orchestrator makes (`get_node_ids`,
`send_and_receive`) by calling the real ClientApp (`stsfl.client.federation.app.app`) with the node-config
an `sts-client` would give its SuperNode (an exception in the ClientApp becomes the error reply a
SuperNode sends). Only the transport is left out (tests/integration covers
it), so whole federations - LOCO folds, cross-site validation - run in seconds in unit tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from uuid import uuid4

import pytest
from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.supercore.task_identity import TaskIdentity

from stsfl.client.federation.app import app as client_app
from stsfl.common.config import FederationConfig, load_config
from stsfl.common.fed_protocol import NODE_SITE_CONFIG, NODE_SITE_NAME
from stsfl.common.tasks import server_side
from stsfl.server.orchestrator import Federation


class InProcessGrid:
    """Node ids 1..N, one per site YAML; every message is handled at once by the ClientApp."""

    def __init__(self, site_yamls: dict[str, Path]):
        self.node_config = {
            node: {NODE_SITE_NAME: site, NODE_SITE_CONFIG: str(path)}
            for node, (site, path) in enumerate(sorted(site_yamls.items()), start=1)
        }
        # one Context per node for the whole run, as a SuperNode keeps it (SecAgg+ keeps its keys in its state)
        self.contexts = {
            node: Context(run_id=1, node_id=node, node_config=cfg, state=RecordDict(), run_config={})
            for node, cfg in self.node_config.items()
        }
        self.sent: list[str] = []  # message types, in order
        self.replies: list[Message] = []  # what the sites answered, in order

    def get_node_ids(self) -> list[int]:
        return list(self.node_config)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            msg.metadata.__dict__["_message_id"] = str(uuid4())  # as a Grid does when it pushes a message
            self.sent.append(msg.metadata.message_type)
            try:
                replies.append(client_app(msg, self.contexts[node]))
            except Exception as exc:  # noqa: BLE001 - what a SuperNode makes of a ClientApp that raised
                reason = str(type(exc)) + ":<'" + str(exc) + "'>"
                replies.append(Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg))
        self.replies += replies
        return replies


@pytest.fixture
def server_identity(monkeypatch):
    """Messages created outside a Flower process need the identity a ServerApp process has."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)


def run_in_process(grid: InProcessGrid, config_path: Path, results: Path, resume: bool = False) -> dict:
    """One federation (the ServerApp's `Federation`) over `grid`; returns its summary."""
    fed = load_config(config_path, FederationConfig)
    federation = Federation(grid, fed, config_path, results, server_side(fed), log=print, resume=resume)
    return federation.run()

"""A grid that collects replies as soon as they arrive.

Flower 1.41's SuperLink grid (`flwr.superlink.grid.http_grid`) looks for the replies of
`send_and_receive` every 3 s, so every message the coordinator sends costs up to 3 s (1.5 s on
average) beyond its work; a federation of many short messages (Newton steps, queries, rounds of
a small model) spends much of its time waiting there. `PromptGrid` sends through the same public
`push_messages` / `pull_messages` and looks for replies every `poll_s`; everything else is the
wrapped grid's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

POLL_S = 0.2


class PromptGrid:
    """`grid` with a `send_and_receive` that polls every `poll_s` seconds."""

    def __init__(self, grid: Grid, poll_s: float = POLL_S):
        self._grid = grid
        self.poll_s = poll_s

    def __getattr__(self, name: str):
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push `messages`, then pull their replies until all have come or `timeout` seconds passed
        (None: wait for all) - Flower's semantics."""
        pending = set(self._grid.push_messages(messages))
        end = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending:
            arrived = list(self._grid.pull_messages(pending))
            replies.extend(arrived)
            pending.difference_update(m.metadata.reply_to_message_id for m in arrived)
            if not pending or (end is not None and time.monotonic() >= end):
                break
            time.sleep(self.poll_s if end is None else max(0.0, min(self.poll_s, end - time.monotonic())))
        return replies

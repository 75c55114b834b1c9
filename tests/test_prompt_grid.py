"""The coordinator's grid collects each reply within a poll interval of its arrival (Flower's
SuperLink grid looks every 3 s) and, at the timeout, returns the replies that came."""

from __future__ import annotations

import time
from types import SimpleNamespace

from stsfl.server.federation.prompt_grid import PromptGrid


class TimedReplies:
    """A grid whose reply to message i becomes available `delays[i]` seconds after the push."""

    def __init__(self, delays: list[float]):
        self.delays, self.pushed_at, self.pulls = delays, None, 0

    def push_messages(self, messages):
        self.pushed_at = time.monotonic()
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, ids):
        self.pulls += 1
        age = time.monotonic() - self.pushed_at
        ready = [f"m{i}" for i, d in enumerate(self.delays) if d <= age and f"m{i}" in set(ids)]
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in ready]

    def get_node_ids(self):
        return [1, 2]


def test_replies_are_collected_as_they_arrive():
    inner = TimedReplies([0.3, 0.6])
    grid = PromptGrid(inner, poll_s=0.05)
    t0 = time.monotonic()
    replies = list(grid.send_and_receive(["a", "b"], timeout=10))
    waited = time.monotonic() - t0
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1"]
    assert 0.6 <= waited < 1.5, waited  # not the 3 s of Flower's poll
    assert grid.get_node_ids() == [1, 2]  # everything else is the wrapped grid's


def test_the_timeout_returns_the_replies_that_came():
    grid = PromptGrid(TimedReplies([0.1, 30.0]), poll_s=0.05)
    t0 = time.monotonic()
    replies = list(grid.send_and_receive(["a", "b"], timeout=0.5))
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]
    assert 0.5 <= time.monotonic() - t0 < 1.5

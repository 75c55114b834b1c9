"""Which fields of the coordinator's message configs a site reads: the site's handlers
(stsfl.client.federation.site_app) decode each config into a proxy that notes every field read."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import stsfl.client.federation.site_app as site_app
from stsfl.common.messages import CONFIG_MESSAGES, ConfigMessage


def all_fields() -> set[str]:
    """'<Message>.<field>' for every field of every config message (nested messages by their own name)."""
    return {
        f"{message.__name__}.{f.name}"
        for message in CONFIG_MESSAGES
        for f in dataclasses.fields(message)
        if "key" in f.metadata  # (a nested message's fields count under its own name)
    }


class _Tracked:
    """A decoded config message that notes each field read, nested messages included."""

    def __init__(self, message: ConfigMessage, reads: set[str]):
        object.__setattr__(self, "_message", message)
        object.__setattr__(self, "_reads", reads)

    def __getattr__(self, name: str) -> Any:
        message = object.__getattribute__(self, "_message")
        value = getattr(message, name)
        if name in {f.name for f in dataclasses.fields(message)}:
            if isinstance(value, ConfigMessage):
                return _Tracked(value, object.__getattribute__(self, "_reads"))
            object.__getattribute__(self, "_reads").add(f"{type(message).__name__}.{name}")
        return value


class _TrackingDecoder:
    """Stands in for a config class in the site app: `from_record` returns a tracked message."""

    def __init__(self, message: type[ConfigMessage], reads: set[str]):
        self.message, self.reads = message, reads

    def from_record(self, record: Any) -> _Tracked:
        return _Tracked(self.message.from_record(record), self.reads)


@pytest.fixture
def site_reads(monkeypatch) -> set[str]:
    """The set that fills with '<Message>.<field>' as the site app's handlers read configs."""
    reads: set[str] = set()
    for message in CONFIG_MESSAGES:
        if hasattr(site_app, message.__name__):
            monkeypatch.setattr(site_app, message.__name__, _TrackingDecoder(message, reads))
    return reads

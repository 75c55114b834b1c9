"""What `sts-client` shows on the site operator's screen; its log file keeps every line.

Shown: the site worker's lines (the run that started, each round's local training with epochs,
loss and seconds, the end of the run with the folder of the site's outputs, failures), Flower's
warnings and errors while connected, and one line when the connection to the coordinator is made
or lost. Not shown: Flower's per-message chatter, and the stream of "Connection attempt failed"
retries and SuperNode restarts between runs (the coordinator's SuperLink exists only while a run
lasts), which become one "waiting for the coordinator" line.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

WORKER_MARK = " site worker: "  # stsfl.client.federation.site_worker's lines
CONNECTED_MARK = "SuperNode ID:"  # the SuperLink activated this SuperNode
# A SuperNode that cannot reach the SuperLink (or is not let in yet) logs these before it retries or exits.
LOST_MARKS = (
    "Connection attempt failed",
    "Exit Code: 305",
    "Failed to initialize the connection",
    "Failed to activate SuperNode",
    "could not establish a connection",
    "Giving up reconnection",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class OperatorScreen:
    """Filters the SuperNode's and the worker's output (fed in chunks) for the screen."""

    def __init__(self, server: str, log_path: Path, write: Callable[[str], object] = sys.stderr.write):
        self.server, self.log_path, self.write = server, log_path, write
        self.connected: bool | None = None  # None: not known yet
        self._partial = ""

    def feed(self, chunk: str) -> None:
        *lines, self._partial = (self._partial + chunk).split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line).rstrip())

    def lost(self) -> None:
        """The SuperNode exited or cannot reach the coordinator: one line, until it is connected again."""
        if self.connected is not False:
            self.write(
                f"waiting for the coordinator at {self.server} (it runs a SuperLink while a run lasts); "
                f"every attempt is in {self.log_path}\n"
            )
        self.connected = False

    def _line(self, line: str) -> None:
        if WORKER_MARK in line:
            self.write(line + "\n")
        elif CONNECTED_MARK in line:
            if not self.connected:
                self.write(f"connected to the coordinator at {self.server}\n")
            self.connected = True
        elif any(mark in line for mark in LOST_MARKS):
            self.lost()
        elif self.connected and line.split(":", 1)[0].strip() in ("WARNING", "ERROR"):
            self.write(line + "\n")

"""Busy processes that load the CPUs while a test runs (the robustness runs of issue 20: the
real-process federations must pass on a loaded machine). Each is a Python busy loop started here
and stopped by its PID."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

BUSY_LOOP = "while True: pass"


@contextlib.contextmanager
def cpu_load(processes: int) -> Iterator[list[subprocess.Popen]]:
    """`processes` busy loops for the duration of the block (none for 0)."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(processes)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(10)

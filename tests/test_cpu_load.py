"""The CPU-load helper of the robustness runs starts its busy processes and stops them by PID."""

from __future__ import annotations

import time

from cpu_load import cpu_load


def test_busy_processes_run_inside_the_block_only():
    with cpu_load(2) as procs:
        time.sleep(0.3)
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
    assert all(p.poll() is not None for p in procs)
    with cpu_load(0) as none:
        assert none == []

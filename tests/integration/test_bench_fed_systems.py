"""The systems benchmark stays runnable: `bench_fed_systems.py --smoke` (2 real sites with their
site workers and a SuperLink on loopback, TLS as in production, the no-op floor app and then 2
linear-Cox rounds on the same processes) writes its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fed_systems.py"


def test_smoke_run_measures_the_floor_and_our_rounds(tcga_brca_dir, tmp_path):
    out = tmp_path / "fed_systems.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--data", str(tcga_brca_dir), "--out", str(out), "--work", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    real = json.loads(out.read_text())["real_processes"]
    [result] = real["results"]
    assert result["sites"] == 2 and result["worker"] is True and len(result["rounds"]) == 2
    assert len(result["noop_rounds_s"]) == 2 and all(s > 0 for s in result["noop_rounds_s"])
    assert result["median_train_phase_s"] > 0 and result["ratio_to_floor"] > 0
    first = result["rounds"][0]
    assert first["bytes_down_per_site"] == first["bytes_up_per_site"] == first["float32_bytes"] == 160
    assert "load_avg_1m" in real and "2 sites" in done.stdout

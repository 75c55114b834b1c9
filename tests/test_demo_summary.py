"""The demo's last table: the network's held-out C next to the clinical Cox model's and the oracle's."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from stsfl.client.lab.demo_summary import demo_table

COHORT = {"centres": {"center_2": {"patients": 83, "events": {"os": 24, "dm": 18}, "oracle_c": {"os": 0.743, "dm": 0.794}}}}


def _rendered(summary: dict) -> list[str]:
    console = Console(width=200, record=True)
    console.print(demo_table(summary, COHORT, Path("results/demo")))
    return console.export_text().splitlines()


def test_the_table_shows_each_model_per_endpoint_and_the_report():
    summary = {
        "holdout_sites": ["center_2"],
        "holdout_selected": {"center_2": {"c-harrell-os": 0.712, "c-harrell-dm": 0.724}},
        "holdout_clinical_cox": {"center_2": {"c-harrell-os": 0.642, "c-harrell-dm": 0.603}},
    }
    lines = _rendered(summary)
    header = next(line for line in lines if "model" in line)
    assert header.index("dm (18 events)") < header.index("os (24 events)")
    row = {name: next(line for line in lines if line.startswith(f"│ {name}")) for name in ("federated", "clinical", "oracle")}
    cells = {name: [c.strip() for c in line.split("│")[2:4]] for name, line in row.items()}
    assert cells == {"federated": ["0.724", "0.712"], "clinical": ["0.603", "0.642"], "oracle": ["0.794", "0.743"]}
    assert any("results/demo/report.html" in line for line in lines)


def test_a_model_without_scores_is_shown_as_missing():
    lines = _rendered({"holdout_sites": ["center_2"], "holdout_selected": {"center_2": {"c-harrell-os": 0.7}}})
    clinical = next(line for line in lines if line.startswith("│ clinical"))
    assert clinical.count(" - ") == 2


def test_the_linear_start_with_radiomics_gets_its_own_row_only_when_the_run_scored_it():
    clinical = {"center_2": {"c-harrell-os": 0.642, "c-harrell-dm": 0.603}}
    summary = {
        "holdout_sites": ["center_2"],
        "holdout_selected": {"center_2": {"c-harrell-os": 0.712, "c-harrell-dm": 0.724}},
        "holdout_clinical_cox": clinical,
        "holdout_start": {"center_2": {"c-harrell-os": 0.690, "c-harrell-dm": 0.650}},
    }
    start = next(line for line in _rendered(summary) if line.startswith("│ linear Cox"))
    assert [c.strip() for c in start.split("│")[2:4]] == ["0.650", "0.690"]
    without = _rendered({k: v for k, v in summary.items() if k != "holdout_start"})  # a schema without radiomics
    assert not any(line.startswith("│ linear Cox") for line in without)

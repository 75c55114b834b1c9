"""The site-outputs phase in one process (real ClientApp, real tiny multimodal sites): after the
last round every site writes its own patients' risk scores, Grad-CAM overlays and validation report
on its side; only counts come back to the server."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import yaml
from inprocess_grid import InProcessGrid, run_in_process, server_identity  # noqa: F401 (fixture)
from site_builder import clinical_row, expected_validation, make_site, write_csv

from stsfl.common.fed_protocol import METRICS, MSG_SITE_OUTPUTS, SITE

N = 6
FEDERATION = """name: outputs-test
sites: [a, b, held_out]
holdout: [held_out]
rounds: 1
train: {epochs_per_round: 1}
validation_fraction: 0.34
weighting: patients
prediction: {horizons_years: [1, 3, 5]}
"""


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> dict:
    """Site a keeps its outputs in `outputs_dir: outputs` (relative to its YAML) and has a patient
    without an MRI; b has no slides and a patient with an unreadable age (excluded); held_out writes
    to the default <root>/.stsfl/outputs."""
    yamls = {}
    for i, name in enumerate(("a", "b", "held_out")):
        site_yaml = make_site(tmp_path_factory.mktemp(name), n=N, slides=(name != "b"))
        data = {**yaml.safe_load(site_yaml.read_text()), "name": name}
        if name == "a":
            shutil.rmtree(site_yaml.parent / "mri" / "p2")
            data["outputs_dir"] = "outputs"
        if name == "b":
            rows = [clinical_row(f"p{i}", i) for i in range(N)] + [{**clinical_row("bad", 9), "age": "old"}]
            write_csv(site_yaml.parent / "clinical.csv", rows)
        site_yaml.write_text(yaml.safe_dump(data))
        yamls[name] = site_yaml
    return yamls


def _rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_sites_write_their_outputs_and_send_counts_only(sites, tmp_path, server_identity, capsys):
    config = tmp_path / "federation.yaml"
    config.write_text(FEDERATION)
    grid = InProcessGrid(sites)
    results = tmp_path / "results"
    summary = run_in_process(grid, config, results)
    # the baseline phase combined the training sites' bins of death before dm and before lr (OS log-risk)
    baseline = json.loads((results / "baseline_hazard.json").read_text())
    assert [baseline["endpoints"][e].get("competing", {}).get("cause") for e in ("os", "dm", "lr")] == [None, "os", "os"]
    assert set(baseline["endpoints"]["dm"]["competing"]["per_site_bins"]) == {"a", "b"}  # not the held-out centre
    assert "pooled_incidence" in json.loads((results / "calibration.json").read_text())
    assert grid.sent[-3:] == [MSG_SITE_OUTPUTS] * 3, "one site-outputs query per site, after the prediction phases"

    folders = {
        "a": sites["a"].parent / "outputs" / "outputs-test",
        "b": sites["b"].parent / ".stsfl" / "outputs" / "outputs-test",
        "held_out": sites["held_out"].parent / ".stsfl" / "outputs" / "outputs-test",
    }
    with_mri = {
        "a": {f"p{i}" for i in range(N)} - {"p2"},
        "b": {f"p{i}" for i in range(N)},
        "held_out": {f"p{i}" for i in range(N)},
    }
    for site, folder in folders.items():
        rows = _rows(folder / "risk_scores.csv")
        assert sorted(r["pid"] for r in rows) == [f"p{i}" for i in range(N)], "one row per usable patient"
        validating = expected_validation(sites[site].parent / "clinical.csv", [r["pid"] for r in rows], 0, 0.34)
        for r in rows:
            if site == "held_out":
                assert r["split"] == "external"
            else:
                assert r["split"] == ("validation" if r["pid"] in validating else "train")
            assert r["modalities"] == "+".join(
                (["mri"] if r["pid"] in with_mri[site] else []) + (["wsi"] if site != "b" else []) + ["clinical"]
            )
            for endpoint in ("os", "dm"):
                assert np.isfinite(float(r[f"{endpoint}_log_risk"]))
                risks = [float(r[f"{endpoint}_risk_{y}y"]) for y in (1, 3, 5)]
                assert all(0.0 <= v <= 1.0 for v in risks) and risks == sorted(risks), "risk grows with the horizon"
                for y in (1, 3, 5):
                    low, mid, high = (float(r[f"{endpoint}_risk_{y}y{s}"]) for s in ("_low", "", "_high"))
                    assert low <= mid + 1e-9 and mid <= high + 1e-9
            # death competes with dm and lr: their crude cumulative incidence never exceeds 1 - S
            assert ("os_cif_5y" in r) is False
            for endpoint in ("dm", "lr"):
                for y in (1, 3, 5):
                    low, mid, high = (float(r[f"{endpoint}_cif_{y}y{s}"]) for s in ("_low", "", "_high"))
                    assert 0.0 <= low <= mid + 1e-9 <= high + 2e-9 and mid <= float(r[f"{endpoint}_risk_{y}y"]) + 1e-9
        assert {p.name for p in (folder / "gradcam").iterdir()} == {f"{pid}_gradcam.png" for pid in with_mri[site]}
        assert "usable patients" in (folder / "validation_report.html").read_text(encoding="utf-8")
        assert "the site can train" in (folder / "validation_report.txt").read_text(encoding="utf-8")
        problems = _rows(folder / "problems.csv")
        assert [(p["patient"], p["column"]) for p in problems] == ([("bad", "age")] if site == "b" else [])
    assert "bad" in (folders["b"] / "validation_report.txt").read_text(encoding="utf-8")

    # Only counts came back, and the server recorded them.
    replies = [r for r in grid.replies if r.metadata.message_type == MSG_SITE_OUTPUTS]
    assert len(replies) == 3
    for reply in replies:
        assert set(reply.content.keys()) == {SITE, METRICS}
        assert set(reply.content[METRICS]) <= {"patients", "gradcams", "attention_maps", "problems"}
        assert all(isinstance(v, int) for v in reply.content[METRICS].values())
    counts = summary["site_outputs"]["sites"]
    assert counts["a"] == {"patients": N, "gradcams": N - 1, "attention_maps": N, "problems": 0}
    assert counts["b"] == {"patients": N, "gradcams": N, "attention_maps": 0, "problems": 1}  # b has no slides
    assert len(list((folders["a"] / "attention").glob("*.png"))) == N
    assert counts["held_out"]["gradcams"] == N
    assert summary["site_outputs"]["failed"] == {}
    assert f"a wrote {N} risk scores, {N - 1} Grad-CAM overlays" in capsys.readouterr().out
    # Nothing of it on the server's side.
    assert not [p for p in results.rglob("*") if "risk_scores" in p.name or "gradcam" in p.name]

"""`stsfl baselines` end to end on two tiny real-format sites (NIfTI + tiled TIFF), and the split."""

from __future__ import annotations

import json

import pytest
import yaml
from site_builder import make_site

from stsfl.client.lab.baselines import split_patients
from stsfl.client.lab.cli import main


def test_split_is_seeded_stratified_and_disjoint():
    pids = [f"p{i}" for i in range(40)]
    events = [i % 4 == 0 for i in range(40)]  # 10 events
    split = split_patients(pids, events, seed=3)
    assert split == split_patients(pids, events, seed=3) and split != split_patients(pids, events, seed=4)
    assert sorted(sum(split.values(), [])) == sorted(pids)
    assert [len(split[s]) for s in ("train", "val", "test")] == [28, 6, 6]
    assert sum(events[pids.index(p)] for p in split["train"]) == 6


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    for name, slides in (("centre_a", True), ("centre_b", False)):
        site_yaml = make_site(root / name, n=10, slides=slides)
        config = yaml.safe_load(site_yaml.read_text())
        site_yaml.write_text(yaml.safe_dump({**config, "name": name}))
    return root


def test_baselines_command_pooled(two_sites, tmp_path, capsys):
    out = tmp_path / "report.json"
    with pytest.raises(SystemExit) as done:
        main(
            [
                "baselines",
                str(two_sites),
                "--models",
                "cox_sarculator",
                "cox_clinical",
                "rsf_clinical",
                "mmnn_unblended",
                "mmnn_blended",
                "--epochs",
                "1",
                "--n-boot",
                "10",
                "--quiet",
                "--out",
                str(out),
            ]
        )
    assert done.value.code == 0
    report = json.loads(out.read_text())
    assert report["endpoints"] == ["os", "dm", "lr"] and report["n_test"] >= 2
    assert set(report["models"]) == {"cox_sarculator", "cox_clinical", "rsf_clinical", "mmnn_unblended", "mmnn_blended"}
    assert set(report["blended_minus"]) == {"cox_clinical", "mmnn_unblended"}
    for model in report["models"].values():
        assert model["os"]["n"] == report["n_test"]
    assert "test C-index" in capsys.readouterr().out


def test_baselines_local_mode_and_bad_model(two_sites, tmp_path):
    out = tmp_path / "local.json"
    with pytest.raises(SystemExit) as done:
        main(
            [
                "baselines",
                str(two_sites),
                "--mode",
                "local",
                "--site",
                "centre_b",
                "--models",
                "cox_clinical",
                "--n-boot",
                "5",
                "--quiet",
                "--out",
                str(out),
            ]
        )
    assert done.value.code == 0
    assert json.loads(out.read_text())["n_test"] <= 4  # one centre's 15 %
    with pytest.raises(SystemExit) as done:
        main(["baselines", str(two_sites), "--models", "magic", "--quiet", "--out", str(out)])
    assert done.value.code == 2

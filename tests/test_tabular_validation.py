"""`sts-client validate` for a tabular site: a real TCGA-BRCA region passes with its counts; a
broken copy is refused with every reason, each naming the file and column."""

from __future__ import annotations

import pandas as pd
from rich.console import Console

from stsfl.client.data.tabular_validation import check_tabular_site, print_tabular_report
from stsfl.client.lab.tcga_brca import write_region_sites
from stsfl.common.config import SiteConfig, load_config


def test_a_tcga_region_can_train_and_its_counts_are_reported(tcga_brca_dir, tmp_path):
    site_yaml = write_region_sites(tcga_brca_dir, tmp_path, regions=[1])[0]
    summary = check_tabular_site(load_config(site_yaml, SiteConfig), site_yaml)
    frame = pd.read_csv(tmp_path / "region_1" / "clinical.csv")
    assert summary.blockers == []
    assert summary.rows == {"train": int((frame.fold == "train").sum()), "test": int((frame.fold == "test").sum())}
    assert summary.events["train"] == int(frame.loc[frame.fold == "train", "E"].sum()) > 0
    assert len(summary.features) == 39
    out = Console(record=True, width=200)
    print_tabular_report(out, summary)
    assert "the site can train (task linear-cox)" in out.export_text()


def test_a_broken_table_is_refused_naming_file_and_columns(tcga_brca_dir, tmp_path):
    site_yaml = write_region_sites(tcga_brca_dir, tmp_path, regions=[1])[0]
    csv_path = tmp_path / "region_1" / "clinical.csv"
    frame = pd.read_csv(csv_path)
    frame.loc[0, "fold"] = "validation"
    frame.iloc[1, 0] = frame.iloc[2, 0]
    frame.loc[3, "age_at_index"] = None
    frame.to_csv(csv_path, index=False)
    blockers = check_tabular_site(load_config(site_yaml, SiteConfig), site_yaml).blockers
    assert [b.split(": ", 1)[0] for b in blockers] == [str(csv_path)] * 3
    assert "column fold holds 'validation'" in blockers[0]
    assert f"patient id {frame.iloc[2, 0]!r} (column 'pid') appears more than once" in blockers[1]
    assert "empty feature cells in age_at_index" in blockers[2]
    frame.drop(columns="E").to_csv(csv_path, index=False)
    assert check_tabular_site(load_config(site_yaml, SiteConfig), site_yaml).blockers == [
        f"{csv_path}: missing column 'E' (expected patient id, features, E, T[, fold])"
    ]


def test_sts_client_validate_checks_a_tabular_site(tcga_brca_dir, tmp_path):
    """The command itself: a TCGA region is recognised as tabular and passes; a broken one exits 1."""
    import subprocess
    import sys

    site_yaml = write_region_sites(tcga_brca_dir, tmp_path / "regions", regions=[0])[0]
    ok = subprocess.run(
        [sys.executable, "-m", "stsfl.client.cli", "validate", "--site", str(site_yaml)],
        capture_output=True,
        encoding="utf-8",  # whatever the locale: rich draws its tables in UTF-8
        errors="replace",
        timeout=300,
    )
    assert ok.returncode == 0 and "can train (task linear-cox)" in ok.stdout + ok.stderr
    csv_path = site_yaml.parent / site_yaml.stem / "clinical.csv"
    csv_path.write_text(csv_path.read_text().replace(",1,", ",x,", 1))
    bad = subprocess.run(
        [sys.executable, "-m", "stsfl.client.cli", "validate", "--site", str(site_yaml)],
        capture_output=True,
        encoding="utf-8",  # whatever the locale: rich draws its tables in UTF-8
        errors="replace",
        timeout=300,
    )
    assert bad.returncode == 1 and "cannot train" in bad.stdout + bad.stderr

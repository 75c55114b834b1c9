"""TCGA-BRCA (FLamby's preprocessed clinical table) as six clinical-only sites, one per region.

Reads `<src>/brca.csv` and `<src>/train_test_split.csv` (its `fold2` column `train_K` / `test_K`
gives region K and the fixed split; the 8 patients of brca.csv the split does not name are left out,
as in FLamby) and writes, for each region K,
`<out>/region_K/clinical.csv` (pid, 39 features, E, T, fold) and `<out>/region_K.yaml`, the
site YAML that `sts-client` and the `linear-cox` task read.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

N_REGIONS = 6


def load_regions(src: Path) -> pd.DataFrame:
    """brca.csv joined with the split: columns pid, features..., E, T, fold, region."""
    table = pd.read_csv(Path(src) / "brca.csv")
    split = pd.read_csv(Path(src) / "train_test_split.csv")
    # The split names 1,088 of the 1,096 patients (FLamby leaves 8 out); every split entry must exist.
    merged = table.merge(split, on="pid", how="inner", validate="one_to_one")
    if len(merged) != len(split):
        raise ValueError(f"{src}: {len(split) - len(merged)} patients of train_test_split.csv are not in brca.csv")
    merged["region"] = merged["fold2"].str.rsplit("_", n=1).str[1].astype(int)
    return merged.drop(columns=["fold2"])


def write_region_sites(src: Path, out: Path, regions: list[int] | None = None) -> list[Path]:
    """Write one site folder + site YAML per region; returns the YAML paths."""
    merged = load_regions(src)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for region in regions if regions is not None else range(N_REGIONS):
        name = f"region_{region}"
        (out / name).mkdir(exist_ok=True)
        merged[merged["region"] == region].drop(columns=["region"]).to_csv(out / name / "clinical.csv", index=False)
        yaml_path = out / f"{name}.yaml"
        yaml_path.write_text(f"name: {name}\nroot: {name}\n", encoding="utf-8")
        paths.append(yaml_path)
    return paths

"""Pre-extracted slide features (CLAM / TRIDENT HDF5 and .pt) read into the same bag cache; the
width and the extractor name are checked per file at the site and per site against the
federation's preset before round 1."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import yaml
from site_builder import make_site

from stsfl.client.data.site_dataset import SiteDataset
from stsfl.client.data.site_prepare import prepare_site
from stsfl.common.config import ConfigError, SiteConfig, load_config, load_preset, load_schema
from stsfl.common.console import UserError
from stsfl.common.wsi_encoder import check_site_encoders, encoder_mismatches
from stsfl.tasks.multimodal.site import MultimodalSite

WIDTH = 24
BASE = load_preset("cpu-small")
PRESET = BASE.model_copy(
    update={
        "wsi": BASE.wsi.model_copy(update={"embed_dim": WIDTH}),
        "preprocessing": BASE.preprocessing.model_copy(
            update={
                "wsi": BASE.preprocessing.wsi.model_copy(
                    update={
                        "max_tiles": 8,
                        "encoder": BASE.preprocessing.wsi.encoder.model_copy(
                            update={"arch": "pre_extracted", "extractor": "uni_v1"}
                        ),
                    }
                )
            }
        ),
    }
)


def _h5(path, features, coords=None, extractor=None):
    with h5py.File(path, "w") as handle:
        handle.create_dataset("features", data=features)
        if coords is not None:
            handle.create_dataset("coords", data=coords)
        if extractor is not None:
            handle.attrs["extractor"] = extractor


def build_site(root, extractor="uni_v1"):
    """p0 CLAM HDF5 (20 rows: capped to 8), p1 TRIDENT-style [1, N, E] with coords, p2 a .pt dict,
    p3 a bare .pt tensor, p4 features of another width, p5 another extractor's file, p6 a truncated HDF5."""
    site_yaml = make_site(root, n=7, slides=False)
    folder = root / "features"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = np.repeat(np.arange(20, dtype=np.float32)[:, None], WIDTH, axis=1)  # row k holds k
    _h5(folder / "p0.h5", rows, np.stack([np.arange(20) * 512, np.zeros(20)], axis=1).astype(np.int64))
    _h5(folder / "p1.h5", rng.normal(size=(1, 5, WIDTH)).astype(np.float32), np.zeros((5, 2), np.int64))
    torch.save({"features": torch.randn(6, WIDTH), "coords": torch.zeros(6, 2, dtype=torch.long)}, folder / "p2.pt")
    torch.save(torch.randn(3, WIDTH), folder / "p3.pt")
    _h5(folder / "p4.h5", rng.normal(size=(4, 1024)).astype(np.float32))
    _h5(folder / "p5.h5", rng.normal(size=(4, WIDTH)).astype(np.float32), extractor="conch_v1")
    _h5(folder / "p6.h5", rng.normal(size=(50, WIDTH)).astype(np.float32))
    data = (folder / "p6.h5").read_bytes()
    (folder / "p6.h5").write_bytes(data[: len(data) // 2])
    config = yaml.safe_load(site_yaml.read_text()) | {"wsi_features_dir": "features", "wsi_features_extractor": extractor}
    site_yaml.write_text(yaml.safe_dump(config))
    return site_yaml


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    site_yaml = build_site(tmp_path_factory.mktemp("features"))
    return prepare_site(load_config(site_yaml, SiteConfig), site_yaml, PRESET, progress=False)


def test_hdf5_and_pt_features_become_bags(prepared):
    with_wsi = {p.pid: p for p in prepared.patients if p.wsi_key is not None}
    assert set(with_wsi) == {"p0", "p1", "p2", "p3"}
    assert len(prepared.patients) == 7  # the others keep MRI and clinical data
    sizes = {pid: SiteDataset(prepared, pids=[pid])[0].wsi.shape for pid in with_wsi}
    assert sizes == {"p0": (8, WIDTH), "p1": (5, WIDTH), "p2": (6, WIDTH), "p3": (3, WIDTH)}
    entry = prepared.cache.load("wsi", with_wsi["p0"].wsi_key)
    assert int(entry["n_tissue_tiles"]) == 20 and len(np.unique(entry["bag"][:, 0])) == 8
    assert np.array_equal(entry["coords"][:, 0], entry["bag"][:, 0] * 512)  # a kept row keeps its own corner
    assert (prepared.cache.load("wsi", with_wsi["p3"].wsi_key)["coords"] == -1).all()  # a bare tensor has none


@pytest.mark.parametrize(
    ("pid", "reason"),
    [
        ("p4", "features of dimension 1024, the federation's wsi.embed_dim is 24"),
        ("p5", "features made by 'conch_v1', the site's wsi_features_extractor is 'uni_v1'"),
        ("p6", "cannot read the features file"),
    ],
)
def test_bad_features_file_drops_the_slide_with_its_reason(prepared, pid, reason):
    (problem,) = [p for p in prepared.problems if p.patient == pid]
    assert problem.severity == "warning" and problem.reason.startswith("wsi left out: ") and reason in problem.reason
    assert problem.file.endswith(f"features/{pid}.h5")


def test_cached_run_reads_no_file_again_and_agrees(prepared, tmp_path):
    site_yaml = next(prepared.cache.root.parent.glob("site.yaml"))
    again = prepare_site(load_config(site_yaml, SiteConfig), site_yaml, PRESET, progress=False)
    assert again.computed == {} and [p.wsi_key for p in again.patients] == [p.wsi_key for p in prepared.patients]
    assert again.wsi_feature_dims == [WIDTH, 1024]


def test_federation_names_each_site_whose_features_differ(prepared, tmp_path):
    other_yaml = build_site(tmp_path / "other", extractor="conch_v1")
    other = prepare_site(load_config(other_yaml, SiteConfig), other_yaml, PRESET, progress=False)
    sites = {"a": prepared, "b": other}
    per_site = {
        name: {"wsi_encoder": {"name": p.encoder_name, "fingerprint": p.encoder_fingerprint, "feature_dims": p.wsi_feature_dims}}
        for name, p in sites.items()
    }
    lines = encoder_mismatches(per_site, PRESET)
    assert lines == [
        "site a: slide features of dimension 1024, the federation's wsi.embed_dim is 24",
        "site b: slide embeddings from 'conch_v1', the federation's encoder is 'uni_v1'",
    ]
    with pytest.raises(UserError, match="site b: slide embeddings from 'conch_v1'"):
        check_site_encoders(per_site, PRESET)
    # sites without slides, and sites that agree, pass
    assert encoder_mismatches({"c": {"wsi_encoder": {"name": None}}, "d": {}}, PRESET) == []


def test_morphometry_sites_agree_and_report_it_in_their_statistics(tmp_path):
    sites = {}
    for name in ("a", "b"):
        site_yaml = make_site(tmp_path / name, n=2)
        sites[name] = MultimodalSite(load_config(site_yaml, SiteConfig), site_yaml, "cpu-small", load_schema(), 0, 0.0)
    per_site = {name: site.statistics() for name, site in sites.items()}
    assert per_site["a"]["wsi_encoder"] == {
        "name": "morphometry-v1",
        "fingerprint": sites["a"].prepared.encoder_fingerprint,
        "feature_dims": [16],
    }
    check_site_encoders(per_site, BASE)
    per_site["b"]["wsi_encoder"]["fingerprint"] = "0" * 16
    assert "sites disagree on the slide encoder's fingerprint" in encoder_mismatches(per_site, BASE)[0]


def test_pre_extracted_preset_needs_the_features_folder(tmp_path):
    site_yaml = make_site(tmp_path, n=1)
    with pytest.raises(ConfigError, match="site test_site: the preset's slide encoder is pre_extracted .*wsi_features_dir"):
        prepare_site(load_config(site_yaml, SiteConfig), site_yaml, PRESET, progress=False)

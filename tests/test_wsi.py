"""Slides through OpenSlide: tissue detection, tiling by microns per pixel, deterministic cap,
stain normalisation, the patch encoder (default morphometry; a frozen MONAI network), and bad slides named with their file."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
import torch
from site_builder import write_slide

from stsfl.client.problems import PatientDataError
from stsfl.client.slides.patch_encoder import PatchEncoder
from stsfl.client.slides.stain import REFERENCE_LAB_MEAN, lab_statistics, lab_to_rgb, reinhard, rgb_to_lab
from stsfl.client.slides.wsi_bag import slide_bag
from stsfl.client.slides.wsi_tiles import TileReader, open_slide, sample_tiles, tissue_map, tissue_tiles
from stsfl.common.config import load_preset

PRESET = load_preset("cpu-small")
CFG = PRESET.preprocessing.wsi.model_copy(update={"mpp": 1.0, "tile_size": 32, "max_tiles": 1000})


@pytest.fixture(scope="module")
def encoder():
    return PatchEncoder(CFG, PRESET.wsi.embed_dim)


def test_tiles_lie_on_tissue_only(tmp_path):
    write_slide(tmp_path / "s.tiff", size=(768, 1024))  # tissue: rows 192-576, cols 256-768 (level 0)
    slide = open_slide(tmp_path / "s.tiff")
    tile0 = CFG.tile_size * CFG.mpp / 0.5  # 64 level-0 px
    coords = tissue_tiles(tissue_map(slide, tile0, CFG), slide.dimensions, tile0, CFG.tissue_threshold)
    assert len(coords) == (384 // 64) * (512 // 64)
    assert coords[:, 0].min() >= 256 and coords[:, 0].max() + 64 <= 768
    assert coords[:, 1].min() >= 192 and coords[:, 1].max() + 64 <= 576


def test_tiling_follows_microns_per_pixel_not_levels(tmp_path, encoder):
    # the same physical specimen scanned at 0.5 and 0.25 um/px: same tiles, same physical size
    write_slide(tmp_path / "x20.tiff", mpp=0.5, size=(512, 768))
    write_slide(tmp_path / "x40.tiff", mpp=0.25, size=(1024, 1536))
    a = slide_bag(tmp_path / "x20.tiff", CFG, encoder)
    b = slide_bag(tmp_path / "x40.tiff", CFG, encoder)
    assert len(a.bag) == len(b.bag) > 0
    assert np.array_equal(b.coords, a.coords * 2)
    reader = TileReader.for_slide(openslide.OpenSlide(str(tmp_path / "x40.tiff")), tmp_path / "x40.tiff", CFG)
    assert reader.level == 2 and reader.read(tuple(b.coords[0])).shape == (32, 32, 3)


def test_bag_has_embed_dim_and_cap_is_deterministic(tmp_path, encoder):
    write_slide(tmp_path / "s.tiff")
    capped = CFG.model_copy(update={"max_tiles": 5})
    first = slide_bag(tmp_path / "s.tiff", capped, encoder)
    again = slide_bag(tmp_path / "s.tiff", capped, encoder)
    assert first.bag.shape == (5, PRESET.wsi.embed_dim) and first.bag.dtype == np.float32
    assert first.n_tissue_tiles > 5
    assert np.array_equal(first.coords, again.coords) and np.array_equal(first.bag, again.bag)
    coords = np.arange(40).reshape(20, 2)
    assert not np.array_equal(sample_tiles(coords, 5, 0), sample_tiles(coords, 5, 1))


def _cnn(**update):
    return CFG.model_copy(update={"encoder": CFG.encoder.model_copy(update={"arch": "resnet10", **update})})


def test_encoder_weights_are_the_same_at_every_site_and_frozen(tmp_path):
    a = PatchEncoder(_cnn(), 32)
    b = PatchEncoder(_cnn(), 32)
    c = PatchEncoder(_cnn(seed=1), 32)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    tiles = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    assert np.array_equal(a.encode(tiles), b.encode(tiles))
    assert not any(p.requires_grad for p in a.net.parameters())
    # a local checkpoint replaces the seeded weights
    torch.save(c.net.state_dict(), tmp_path / "enc.pt")
    d = PatchEncoder(_cnn(checkpoint=str(tmp_path / "enc.pt")), 32)
    assert d.fingerprint == c.fingerprint


def test_reinhard_maps_slide_colours_to_the_reference():
    rng = np.random.default_rng(0)
    tiles = (rng.normal(0, 10, (4, 16, 16, 3)) + [150, 60, 140]).clip(0, 255).astype(np.uint8)
    assert np.abs(lab_to_rgb(rgb_to_lab(tiles)).astype(int) - tiles).max() <= 1
    normalised = reinhard(tiles, *lab_statistics(tiles))
    mean, _ = lab_statistics(normalised)
    assert mean == pytest.approx(REFERENCE_LAB_MEAN, abs=2.0)


def test_file_openslide_cannot_open_is_named(tmp_path, encoder):
    bad = tmp_path / "p1.svs"
    bad.write_bytes(b"this is a scanner log, not a slide\n" * 100)
    with pytest.raises(PatientDataError, match="OpenSlide cannot open") as err:
        slide_bag(bad, CFG, encoder)
    assert err.value.file == str(bad)


def test_truncated_slide_is_named(tmp_path, encoder):
    write_slide(tmp_path / "s.tiff")
    data = (tmp_path / "s.tiff").read_bytes()
    (tmp_path / "s.tiff").write_bytes(data[: len(data) // 3])
    with pytest.raises(PatientDataError) as err:
        slide_bag(tmp_path / "s.tiff", CFG, encoder)
    assert err.value.file == str(tmp_path / "s.tiff")


def test_slide_without_tissue_is_named(tmp_path, encoder):
    write_slide(tmp_path / "blank.tiff", tissue=False)
    with pytest.raises(PatientDataError, match="no tissue") as err:
        slide_bag(tmp_path / "blank.tiff", CFG, encoder)
    assert err.value.file == str(tmp_path / "blank.tiff")


def test_slide_scanned_coarser_than_asked_is_refused(tmp_path, encoder):
    write_slide(tmp_path / "x5.tiff", mpp=2.0)
    with pytest.raises(PatientDataError, match="coarser than the configured"):
        slide_bag(tmp_path / "x5.tiff", CFG, encoder)

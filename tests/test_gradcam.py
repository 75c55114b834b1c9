"""Grad-CAM of the MRI sub-network on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_fixtures import N_CLINICAL, N_ENDPOINTS, make_batch, tiny_preset

from stsfl.client.outputs.gradcam import largest_tumour_slice, mri_gradcam, save_batch_gradcams
from stsfl.tasks.multimodal.model import MultimodalCoxNet


def test_gradcam_maps_and_overlays(tmp_path):
    # A seed whose untrained fused head has a positive Grad-CAM somewhere (with seed 0 and a 16-wide
    # WSI input the ReLU of the weighted activations is 0 everywhere: no map to check).
    torch.manual_seed(1)
    preset = tiny_preset()
    model = MultimodalCoxNet(preset, N_CLINICAL, N_ENDPOINTS).train()
    batch = make_batch(3, preset, mri_every=2)  # p001 has no MRI
    maps = mri_gradcam(model, batch, endpoint=1)
    assert maps.shape == (3, 16, 16, 16) and maps.min() >= 0 and maps.max() <= 1 and maps[0].max() > 0
    assert model.training  # the mode is restored
    mask = np.zeros((16, 16, 16), bool)
    mask[9, 4:12, 4:12] = True
    mask[3, 6:8, 6:8] = True
    assert largest_tumour_slice(mask) == 9
    overlays = save_batch_gradcams(model, batch, tmp_path, endpoint=1, masks={"p000": mask})
    assert [o.path.name for o in overlays] == ["p000_gradcam.png", "p002_gradcam.png"]
    assert all(o.path.read_bytes()[:4] == b"\x89PNG" for o in overlays)
    assert [(o.slice_index, o.from_mask) for o in overlays] == [(9, True), (8, False)]  # p002: no mask -> middle


def test_gradcam_needs_an_mri_branch():
    preset = tiny_preset()
    with pytest.raises(ValueError, match="MRI"):
        mri_gradcam(MultimodalCoxNet(preset, N_CLINICAL, 1, modalities=("clinical",)), make_batch(1, preset))


def _cone_mask(shape=(16, 20, 20)) -> np.ndarray:
    """A tumour that widens along z (slices 4..12): its largest slice (12) is far from the middle."""
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    radius = np.where((z >= 4) & (z <= 12), 1.0 + (z - 4) * 0.6, -1.0)
    return ((y - 10) ** 2 + (x - 10) ** 2 <= radius**2).astype(np.uint8)


def _prepared_site(tmp_path):
    import SimpleITK as sitk
    from site_builder import make_site, to_image

    from stsfl.client.data.site_prepare import prepare_site
    from stsfl.common.config import SiteConfig, load_config, without_n4

    site_yaml = make_site(tmp_path / "site", n=2, slides=False)
    sitk.WriteImage(to_image(_cone_mask()), str(tmp_path / "site" / "mri" / "p0" / "mask.nii.gz"))
    preset = without_n4(tiny_preset())
    return prepare_site(load_config(site_yaml, SiteConfig), site_yaml, preset, progress=False)


def test_site_overlays_use_the_cached_mask_slice_of_largest_area(tmp_path, caplog):
    from stsfl.client.outputs.gradcam import site_gradcams
    from stsfl.common.clinical_features import clinical_dim
    from stsfl.common.clinical_stats import combine_clinical_sums

    prepared = _prepared_site(tmp_path)
    stats = combine_clinical_sums([prepared.clinical_sums()], prepared.schema)
    torch.manual_seed(0)
    model = MultimodalCoxNet(prepared.preset, clinical_dim(prepared.schema), len(prepared.schema.endpoints))
    key = next(p.mri_key for p in prepared.patients if p.pid == "p0")
    cached = prepared.cache.load("mri", key)
    assert cached["mask"].shape == (16, 16, 16) and cached["mask"].dtype == np.uint8
    largest = largest_tumour_slice(cached["mask"])
    assert largest >= 12  # the cone's wide end, resampled onto the model grid (crop = whole z range)

    overlays = {o.pid: o for o in site_gradcams(model, prepared, stats, ["p0", "p1"], tmp_path / "cams")}
    assert overlays["p0"].from_mask and overlays["p0"].slice_index == largest != 16 // 2
    assert overlays["p0"].path.read_bytes()[:4] == b"\x89PNG"

    # A cache entry from before masks were stored: middle slice, and the reason is logged.
    np.savez(prepared.cache.entry_path("mri", key), volume=cached["volume"])
    with caplog.at_level("WARNING", logger="stsfl.site"):
        again = {o.pid: o for o in site_gradcams(model, prepared, stats, ["p0"], tmp_path / "cams_old")}
    assert not again["p0"].from_mask and again["p0"].slice_index == 16 // 2
    assert "before tumour masks were cached" in caplog.text and key in caplog.text

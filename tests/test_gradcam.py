"""Grad-CAM of the MRI sub-network on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_fixtures import N_CLINICAL, N_ENDPOINTS, make_batch, tiny_preset
from stsfl.client.gradcam import largest_tumour_slice, mri_gradcam, save_batch_gradcams
from stsfl.common.multimodal import MultimodalCoxNet


def test_gradcam_maps_and_overlays(tmp_path):
    torch.manual_seed(0)
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
    paths = save_batch_gradcams(model, batch, tmp_path, endpoint=1, masks={"p000": mask})
    assert [p.name for p in paths] == ["p000_gradcam.png", "p002_gradcam.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_gradcam_needs_an_mri_branch():
    preset = tiny_preset()
    with pytest.raises(ValueError, match="MRI"):
        mri_gradcam(MultimodalCoxNet(preset, N_CLINICAL, 1, modalities=("clinical",)), make_batch(1, preset))

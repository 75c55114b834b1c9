"""The attention map per patient: the trained WSI encoder's weights over the cached tiles, as a PNG
with the tile positions and the top tiles read again from the slide."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from site_builder import make_site

from stsfl.client.data.site_prepare import prepare_site
from stsfl.client.outputs.wsi_attention import tile_attention, write_attention_maps
from stsfl.common.clinical_features import clinical_dim
from stsfl.common.config import SiteConfig, load_config, load_preset
from stsfl.tasks.multimodal.model import MultimodalCoxNet

PRESET = load_preset("cpu-small")


def test_attention_weights_and_one_picture_per_patient_with_a_slide(tmp_path):
    site_yaml = make_site(tmp_path, n=3)
    (tmp_path / "wsi" / "p2.tiff").unlink()
    prepared = prepare_site(load_config(site_yaml, SiteConfig), site_yaml, PRESET, progress=False, workers=1)
    torch.manual_seed(0)
    model = MultimodalCoxNet(PRESET, clinical_dim(prepared.schema), 2).train()
    bag = prepared.cache.load("wsi", prepared.patients[0].wsi_key, ["bag"])["bag"]
    weights = tile_attention(model, bag)
    assert weights.shape == (len(bag),) and np.isclose(weights.sum(), 1.0) and (weights > 0).all()
    assert model.encoders["wsi"].training  # the caller's mode is left as it was
    written = write_attention_maps(model, prepared, tmp_path / "attention", top_k=4)
    assert [p.name for p in written] == ["p0.png", "p1.png"]
    shown = min(4, len(bag))  # the top tiles, beside the positions panel
    with Image.open(written[0]) as picture:
        assert picture.format == "PNG" and picture.width == round((3 + 1.6 * shown) * 110)
    assert prepared.patients[0].slide == tmp_path / "wsi" / "p0.tiff" and prepared.patients[2].slide is None

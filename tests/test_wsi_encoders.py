"""Tile encoders: the morphometry default sees what the synthetic hazard puts on the slide (the
density of mitosis-like figures); ViT-S/16 checkpoints in timm's layout load from .pth and
.safetensors, agree across sites by fingerprint, and wrong or truncated files are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from stsfl.client.lab.synthetic.config import SynthConfig, WsiSettings
from stsfl.client.lab.synthetic.wsi import render_slide
from stsfl.client.slides.patch_encoder import PatchEncoder
from stsfl.client.slides.wsi_morphometry import FEATURE_NAMES, MORPHOMETRY_FEATURES, morphometry
from stsfl.client.slides.wsi_vit import VisionTransformer
from stsfl.common.config import ConfigError, load_preset
from stsfl.common.config.preset import PatchEncoderConfig

PRESET = load_preset("cpu-small")
WSI = PRESET.preprocessing.wsi


def _tiles(mitoses_per_mm2: float, seed: int) -> np.ndarray:
    """Tissue tiles [n, 128, 128, 3] of a synthetic slide, read at 1 um/px (2x2 means of level 0)."""
    rgb, _ = render_slide(
        np.random.default_rng(seed), WsiSettings(width=768, height=768), SynthConfig().profiles[0], mitoses_per_mm2
    )
    half = rgb.reshape(384, 2, 384, 2, 3).mean(axis=(1, 3)).astype(np.uint8)
    tiles = np.stack([half[y : y + 128, x : x + 128] for y in range(0, 384, 128) for x in range(0, 384, 128)])
    return tiles[morphometry(tiles, 1.0)[:, 0] > 0.5]


def test_morphometry_counts_more_dark_figures_where_the_slide_has_more_mitoses():
    column = {name: j for j, name in enumerate(FEATURE_NAMES)}
    low, high = (morphometry(_tiles(m, seed=3), 1.0).mean(axis=0) for m in (40.0, 600.0))
    assert high[column["log_dark_figures_per_mm2"]] > low[column["log_dark_figures_per_mm2"]] + 1.0
    assert high[column["dark_area_fraction"]] > 3 * low[column["dark_area_fraction"]]
    # nuclei themselves (thousands per mm^2) are found at both densities
    assert min(low[column["log_nuclei_per_mm2"]], high[column["log_nuclei_per_mm2"]]) > np.log(1000)


def test_morphometry_of_glass_is_empty_and_the_encoder_is_deterministic():
    glass = np.full((2, 128, 128, 3), 240, np.uint8)
    assert np.array_equal(morphometry(glass, 1.0), np.zeros((2, MORPHOMETRY_FEATURES), np.float32))
    a, b = PatchEncoder(WSI, PRESET.wsi.embed_dim), PatchEncoder(WSI, PRESET.wsi.embed_dim)
    tiles = _tiles(150.0, seed=1)
    assert a.fingerprint == b.fingerprint and np.array_equal(a.encode(tiles), b.encode(tiles))
    assert a.encode(tiles).shape == (len(tiles), MORPHOMETRY_FEATURES)
    # densities are per mm^2: another magnification is another encoder
    assert PatchEncoder(WSI.model_copy(update={"mpp": 0.5}), PRESET.wsi.embed_dim).fingerprint != a.fingerprint


def test_morphometry_needs_its_own_width():
    with pytest.raises(ConfigError, match="set it to 16"):
        PatchEncoder(WSI, 32)


def _vit_cfg(**update):
    encoder = WSI.encoder.model_copy(update={"arch": "vit_small_patch16", "input_size": 32, **update})
    return WSI.model_copy(update={"encoder": encoder, "tile_size": 64})


@pytest.fixture(scope="module")
def vit_checkpoints(tmp_path_factory):
    """A ViT-S/16 (layer scale, as UNI) saved as a timm checkpoint would be: .pth with a classifier
    head (which the encoder drops), the same as .safetensors, a truncated copy, a ResNet's weights."""
    folder = tmp_path_factory.mktemp("vit")
    torch.manual_seed(7)
    net = VisionTransformer("vit_small_patch16", 32, layer_scale=True)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    torch.save(state | {"head.weight": torch.zeros(2, 384), "head.bias": torch.zeros(2)}, folder / "vit.pth")
    save_file(state, str(folder / "vit.safetensors"))
    data = (folder / "vit.pth").read_bytes()
    (folder / "truncated.pth").write_bytes(data[: len(data) // 2])
    cnn = WSI.model_copy(update={"encoder": WSI.encoder.model_copy(update={"arch": "resnet10"})})
    torch.save(PatchEncoder(cnn, 16).net.state_dict(), folder / "resnet.pt")
    return folder, net


def test_vit_checkpoint_loads_from_pth_and_safetensors_and_sites_agree(vit_checkpoints):
    folder, reference = vit_checkpoints
    site_a = PatchEncoder(_vit_cfg(checkpoint=str(folder / "vit.pth")), 384)
    site_b = PatchEncoder(_vit_cfg(checkpoint=str(folder / "vit.safetensors")), 384)
    seeded = PatchEncoder(_vit_cfg(), 384)
    assert site_a.fingerprint == site_b.fingerprint != seeded.fingerprint
    tiles = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    got = site_a.encode(tiles)
    assert got.shape == (3, 384) and np.array_equal(got, site_b.encode(tiles))
    # the checkpoint's own forward pass, on the resized and normalised tiles
    x = torch.nn.functional.interpolate(
        torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255,
        size=(32, 32),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    mean, std = torch.tensor(WSI.encoder.mean).view(1, 3, 1, 1), torch.tensor(WSI.encoder.std).view(1, 3, 1, 1)
    with torch.no_grad():
        np.testing.assert_allclose(got, reference.eval()((x - mean) / std).numpy(), rtol=1e-5, atol=1e-5)
    with_morph = PatchEncoder(_vit_cfg(checkpoint=str(folder / "vit.pth"), add_morphometry=True), 384 + 16)
    assert with_morph.name == "vit_small_patch16+morphometry-v1" and with_morph.encode(tiles).shape == (3, 400)


@pytest.mark.parametrize(
    ("file", "reason"),
    [
        ("truncated.pth", "cannot read .*truncated.pth"),
        ("resnet.pt", "does not fit arch vit_small_patch16 .*missing: "),
        ("absent.pth", "absent.pth does not exist"),
    ],
)
def test_wrong_or_truncated_checkpoint_is_refused(vit_checkpoints, file, reason):
    folder, _ = vit_checkpoints
    with pytest.raises(ConfigError, match=rf"preprocessing\.wsi\.encoder\.checkpoint: .*{reason}"):
        PatchEncoder(_vit_cfg(checkpoint=str(folder / file)), 384)


def test_vit_width_and_input_size_are_checked():
    with pytest.raises(ConfigError, match="embeds a tile in 384 numbers"):
        PatchEncoder(_vit_cfg(), 64)
    with pytest.raises(ConfigError, match="input_size: input_size 40 is not a multiple"):
        PatchEncoder(_vit_cfg(input_size=40), 384)


def test_preset_refuses_encoder_settings_that_cannot_apply():
    with pytest.raises(ValidationError, match="arch pre_extracted needs `extractor`"):
        PatchEncoderConfig(arch="pre_extracted")
    with pytest.raises(ValidationError, match="arch morphometry has no network"):
        PatchEncoderConfig(arch="morphometry", checkpoint="weights.pt")
    assert PatchEncoderConfig(arch="pre_extracted", extractor="uni_v1").extractor == "uni_v1"

"""The multimodal Cox network: heads and shapes, absent modalities, MIL masking, norms, checkpoints."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import N_CLINICAL, N_ENDPOINTS, make_batch, tiny_preset
from monai.networks.nets import DenseNet

from stsfl.common.mri_net import MriEncoder, load_mri_checkpoint
from stsfl.common.wsi_net import GatedAttentionMil
from stsfl.tasks.multimodal.model import MultimodalCoxNet


@pytest.mark.parametrize("norm", ["batch", "instance", "group"])
def test_heads_and_shapes(norm):
    torch.manual_seed(0)
    preset = tiny_preset(norm)
    net = MultimodalCoxNet(preset, N_CLINICAL, N_ENDPOINTS)
    out = net(make_batch(4, preset))
    assert set(out) == {"fused", "mri", "wsi", "clinical"} == set(net.head_names)
    assert all(v.shape == (4, N_ENDPOINTS) and torch.isfinite(v).all() for v in out.values())
    out["fused"].sum().backward()
    assert net.encoders["mri"].features.conv0.weight.grad.abs().sum() > 0


def test_norm_layers_follow_the_preset():
    kinds = {
        norm: {type(m).__name__ for m in MultimodalCoxNet(tiny_preset(norm), N_CLINICAL, 1).modules()}
        for norm in ("batch", "instance", "group")
    }
    assert "BatchNorm3d" in kinds["batch"] and "InstanceNorm3d" in kinds["instance"] and "GroupNorm" in kinds["group"]
    assert not {"BatchNorm3d"} & (kinds["instance"] | kinds["group"])


def test_group_and_instance_norm_pass_opacus_validation():
    from opacus.validators import ModuleValidator

    assert ModuleValidator.validate(MultimodalCoxNet(tiny_preset("batch"), N_CLINICAL, 1), strict=False)
    for norm in ("instance", "group"):
        assert ModuleValidator.validate(MultimodalCoxNet(tiny_preset(norm), N_CLINICAL, 1), strict=False) == []


def test_absent_modality_input_does_not_matter():
    torch.manual_seed(0)
    preset = tiny_preset("group")  # no batch statistics: patients do not influence each other
    net = MultimodalCoxNet(preset, N_CLINICAL, N_ENDPOINTS).eval()
    batch = make_batch(4, preset, mri_every=2, wsi_every=3)  # p001, p003 lack MRI; p001, p002 lack WSI
    assert batch.modality_present.tolist() == [[1, 1, 1], [0, 0, 1], [1, 0, 1], [0, 1, 1]]
    before = net(batch)["fused"]
    batch.mri[1] = torch.randn_like(batch.mri[1]) * 10
    batch.wsi[2] = torch.randn_like(batch.wsi[2]) * 10
    after = net(batch)["fused"]
    torch.testing.assert_close(before, after)
    # ... while a present modality's input does change the fused risk.
    batch.mri[0] = torch.randn_like(batch.mri[0])
    assert not torch.allclose(net(batch)["fused"][0], after[0])


def test_mil_ignores_padding_and_tile_order():
    torch.manual_seed(0)
    mil = GatedAttentionMil(tiny_preset().wsi).eval()
    bag = torch.randn(1, 5, tiny_preset().wsi.embed_dim)
    mask = torch.tensor([[True, True, True, False, False]])
    ref = mil(bag, mask)
    padded = bag.clone()
    padded[0, 3:] = 100.0
    torch.testing.assert_close(mil(padded, mask), ref)
    order = torch.tensor([2, 0, 1, 3, 4])
    torch.testing.assert_close(mil(bag[:, order], mask), ref)
    weights, _ = mil.attention(bag, mask)
    assert weights[0, 3:].sum() == 0 and weights.sum().item() == pytest.approx(1.0)
    empty = mil(bag, torch.zeros_like(mask))
    assert torch.isfinite(empty).all()


def test_restricted_modalities_make_the_unimodal_networks():
    preset = tiny_preset()
    mri_only = MultimodalCoxNet(preset, N_CLINICAL, N_ENDPOINTS, modalities=("mri",))
    clinical_only = MultimodalCoxNet(preset, N_CLINICAL, N_ENDPOINTS, modalities=["clinical"])
    assert mri_only.head_names == ("fused", "mri") and clinical_only.head_names == ("fused", "clinical")
    assert set(mri_only.encoders) == {"mri"}
    assert clinical_only(make_batch(3, preset))["fused"].shape == (3, N_ENDPOINTS)
    with pytest.raises(ValueError, match="modalities"):
        MultimodalCoxNet(preset, N_CLINICAL, N_ENDPOINTS, modalities=("ct",))


def test_too_small_volume_is_a_named_error():
    preset = tiny_preset()
    small = preset.mri.model_copy(update={"input_size": (8, 8, 8)})
    with pytest.raises(ValueError, match="mri.input_size"):
        MriEncoder(small)


def test_load_single_channel_pretrained_checkpoint(tmp_path):
    cfg = tiny_preset().mri
    torch.manual_seed(1)
    pretrained = DenseNet(3, 1, 10, cfg.init_features, cfg.growth_rate, cfg.block_config, cfg.bn_size)
    path = tmp_path / "bhb.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in pretrained.state_dict().items()}}, path)
    encoder = MriEncoder(cfg)
    left = load_mri_checkpoint(encoder, path)
    assert left == ["class_layers.out.bias", "class_layers.out.weight"]  # 10 outputs there, ours differ
    torch.testing.assert_close(
        encoder.features.denseblock1.denselayer1.layers.conv1.weight,
        pretrained.features.denseblock1.denselayer1.layers.conv1.weight,
    )
    # Identical T1 and T2 give the pretrained 1-channel stem's response.
    x = torch.randn(1, 1, *cfg.input_size)
    torch.testing.assert_close(encoder.features.conv0(x.repeat(1, 2, 1, 1, 1)), pretrained.features.conv0(x))
    with pytest.raises(FileNotFoundError):
        load_mri_checkpoint(encoder, tmp_path / "missing.pt")


def test_a_pretrained_frozen_mri_trunk_starts_the_federation_and_is_not_trained(tmp_path):
    """preset mri.checkpoint: the coordinator's file becomes round 1's global trunk (the sites get it
    as weights); mri.freeze: the trunk's parameters take no gradient, its output layer does."""
    import numpy as np
    import yaml

    from stsfl.common.config import FederationConfig, load_preset
    from stsfl.common.tasks import server_side

    preset = load_preset("cpu-small")
    torch.manual_seed(3)
    donor = MriEncoder(preset.mri, preset.norm)
    checkpoint = tmp_path / "mri.pt"
    torch.save({"state_dict": donor.state_dict()}, checkpoint)
    mri = preset.mri.model_copy(update={"checkpoint": str(checkpoint), "freeze": True})
    preset_yaml = tmp_path / "pretrained.yaml"
    preset_yaml.write_text(yaml.safe_dump(preset.model_copy(update={"name": "pretrained", "mri": mri}).model_dump(mode="json")))
    arrays = server_side(FederationConfig(sites=["a", "b"], preset=str(preset_yaml))).initial_arrays({}, seed=0)
    for key, value in donor.features.state_dict().items():
        np.testing.assert_array_equal(arrays[f"encoders.mri.features.{key}"], value.numpy(), err_msg=key)
    plain = server_side(FederationConfig(sites=["a", "b"])).initial_arrays({}, seed=0)
    assert not np.array_equal(plain["encoders.mri.features.conv0.weight"], arrays["encoders.mri.features.conv0.weight"])
    model = MultimodalCoxNet(load_preset(str(preset_yaml)), N_CLINICAL, N_ENDPOINTS)
    assert not any(p.requires_grad for p in model.encoders["mri"].features.parameters())
    assert all(p.requires_grad for p in model.encoders["mri"].class_layers.parameters())
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, checkpoint)
    with pytest.raises(ValueError, match="mri.pt: no DenseNet trunk weights"):
        server_side(FederationConfig(sites=["a", "b"], preset=str(preset_yaml))).initial_arrays({}, seed=0)

"""MRI sub-network: a MONAI 3D DenseNet over the 2-channel (T1, T2) tumour crop, to a feature vector."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from monai.networks.nets import DenseNet
from torch import nn

from stsfl.common.config.preset import MriNetConfig, Norm


def densenet_channel_counts(cfg: MriNetConfig) -> list[int]:
    """Every channel count a normalisation layer of the DenseNet sees (to choose a group count)."""
    counts = [cfg.init_features, cfg.bn_size * cfg.growth_rate]
    channels = cfg.init_features
    for i, layers in enumerate(cfg.block_config):
        counts += [channels + j * cfg.growth_rate for j in range(layers + 1)]
        channels += layers * cfg.growth_rate
        if i < len(cfg.block_config) - 1:
            channels //= 2
            counts.append(channels)
    return counts


def norm_and_activation(norm: Norm, channel_counts: list[int], max_groups: int = 8) -> tuple[tuple, tuple]:
    """MONAI (norm, act) arguments. Instance / group norm come with a non-inplace ReLU because
    Opacus' per-sample gradients need the activations it hooks to stay intact; the group count is
    the largest divisor of every channel count that is at most `max_groups`."""
    if norm == "batch":
        return ("batch", {}), ("relu", {"inplace": True})
    act = ("relu", {"inplace": False})
    if norm == "instance":
        return ("instance", {"affine": True}), act
    common = math.gcd(*channel_counts)
    groups = max(g for g in range(1, max_groups + 1) if common % g == 0)
    return ("group", {"num_groups": groups}), act


def final_spatial_size(cfg: MriNetConfig) -> tuple[int, ...]:
    """Spatial size after the DenseNet's stem (conv stride 2, max-pool stride 2) and its transitions."""
    size = [(s - 1) // 2 + 1 for s in cfg.input_size]  # conv0: kernel 7, stride 2, padding 3
    size = [(s - 1) // 2 + 1 for s in size]  # pool0: kernel 3, stride 2, padding 1
    for _ in cfg.block_config[:-1]:
        size = [s // 2 for s in size]
    return tuple(size)


class MriEncoder(nn.Module):
    """[B, 2, D, H, W] -> [B, out_features]. `features` is the DenseNet's convolutional trunk
    (Grad-CAM hooks its last block, `features.norm5`)."""

    def __init__(self, cfg: MriNetConfig, norm: Norm = "batch", in_channels: int = 2) -> None:
        super().__init__()
        final = final_spatial_size(cfg)
        if math.prod(final) < 2:
            # Batch norm on one patient and instance norm always need more than one value per channel.
            raise ValueError(
                f"mri.input_size {tuple(cfg.input_size)} leaves {final} voxels after the last transition "
                f"of mri.block_config {tuple(cfg.block_config)}: use a larger input or fewer blocks"
            )
        norm_arg, act_arg = norm_and_activation(norm, densenet_channel_counts(cfg))
        net = DenseNet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=cfg.out_features,
            init_features=cfg.init_features,
            growth_rate=cfg.growth_rate,
            block_config=cfg.block_config,
            bn_size=cfg.bn_size,
            act=act_arg,
            norm=norm_arg,
            dropout_prob=cfg.dropout,
        )
        self.features = net.features
        self.class_layers = net.class_layers
        self.out_features = cfg.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.class_layers(self.features(x))


def load_mri_checkpoint(encoder: MriEncoder, path: str | Path) -> list[str]:
    """Load pretrained DenseNet weights from a local file (never downloads).

    Accepts a state dict (or {"state_dict": ...} / {"model": ...}) with optional "module." /
    "densenet." prefixes, as MONAI DenseNet or MriEncoder keys. A 1-channel first convolution
    (e.g. the BHB-10k self-supervised DenseNet) is replicated over our 2 channels and halved, so
    the response to identical T1 and T2 inputs is unchanged. The output layer is kept only if its
    shape matches. Returns the encoder keys left at their initial values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained MRI checkpoint not found: {path}")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
    state = {}
    for key, value in raw.items():
        for prefix in ("module.", "densenet.", "encoder."):
            key = key.removeprefix(prefix)
        state[key] = value
    own = encoder.state_dict()
    conv0 = "features.conv0.weight"
    if conv0 in state and state[conv0].shape[1] == 1 and own[conv0].shape[1] > 1:
        state[conv0] = state[conv0].repeat(1, own[conv0].shape[1], 1, 1, 1) / own[conv0].shape[1]
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("features.") for k in usable):
        raise ValueError(f"{path}: no DenseNet trunk weights match this preset (keys or shapes differ)")
    encoder.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))

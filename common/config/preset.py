"""Model presets: network sizes and the preprocessing that fixes the network's input."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from .loader import StrictModel

Norm = Literal["batch", "instance", "group"]


class MriNetConfig(StrictModel):
    """3D DenseNet over the 2-channel (T1, T2) tumour crop of shape input_size (D, H, W)."""

    input_size: tuple[PositiveInt, PositiveInt, PositiveInt] = (64, 64, 64)
    init_features: PositiveInt = 64
    growth_rate: PositiveInt = 32
    block_config: tuple[PositiveInt, ...] = (6, 12, 24, 16)
    bn_size: PositiveInt = 4
    out_features: PositiveInt = 12
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class WsiNetConfig(StrictModel):
    """Gated-attention MIL pooling over a bag of tile embeddings of size embed_dim."""

    embed_dim: PositiveInt = 64
    attention_dim: PositiveInt = 64
    out_features: PositiveInt = 12
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class ClinicalNetConfig(StrictModel):
    """MLP over the encoded clinical vector."""

    hidden: tuple[PositiveInt, ...] = (64, 32)
    out_features: PositiveInt = 12
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class ModelPreset(StrictModel):
    """A named model size. `paper` follows the MMNN paper; `cpu-small` keeps the structure, not the width."""

    name: str
    norm: Norm = "batch"
    mri: MriNetConfig = MriNetConfig()
    wsi: WsiNetConfig = WsiNetConfig()
    clinical: ClinicalNetConfig = ClinicalNetConfig()

"""Model presets: network sizes and the preprocessing that fixes the network's input."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from stsfl.common.config.loader import StrictModel, bundled_path, load_config
from stsfl.common.config.train import TrainConfig

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
    checkpoint: str | None = Field(
        None,
        description="local file of pretrained DenseNet weights (MONAI DenseNet keys; 1-channel first convolutions "
        "are spread over T1 and T2): the coordinator's copy initialises the federation's global model",
    )
    freeze: bool = Field(False, description="keep the DenseNet trunk fixed: only its output layer and the heads train")


class WsiNetConfig(StrictModel):
    """Gated-attention MIL pooling over a bag of tile embeddings of size embed_dim."""

    embed_dim: PositiveInt = 64
    attention_dim: PositiveInt = 64
    out_features: PositiveInt = 12
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class ClinicalNetConfig(StrictModel):
    """MLP over the encoded clinical vector. linear_skip: the fused log-risk also gets a linear term
    of the encoded clinical vector (the schema's variables, MRI radiomics included), set (not trained)
    from a federated ridge Cox fit before round 1 (stsfl.server.phases.clinical_init_phase), so the
    network begins where that linear Cox model ends."""

    hidden: tuple[PositiveInt, ...] = (64, 32)
    out_features: PositiveInt = 12
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    linear_skip: bool = True


class N4Config(StrictModel):
    """N4 bias-field correction, fitted on an image shrunk by `shrink_factor` (speed), applied at full resolution."""

    enabled: bool = True
    shrink_factor: PositiveInt = 4
    iterations: tuple[PositiveInt, ...] = (50, 50, 30)


class MriPreprocessingConfig(StrictModel):
    """T1 grid -> N4 -> crop to mask bounding box + `margin_mm` -> resize to mri.input_size -> z-score."""

    margin_mm: float = Field(10.0, ge=0.0, description="peritumoral margin around the mask's bounding box")
    n4: N4Config = N4Config()
    interpolation: Literal["linear", "bspline"] = "linear"
    min_t2_coverage: float = Field(0.5, gt=0.0, le=1.0, description="least share of the crop T2 must cover")


EncoderArch = Literal[
    "morphometry",
    "resnet10",
    "resnet18",
    "densenet121",
    "vit_small_patch16",
    "vit_base_patch16",
    "vit_large_patch16",
    "pre_extracted",
]


class PatchEncoderConfig(StrictModel):
    """What turns an RGB tile into an embedding of size wsi.embed_dim; identical at every site.

    `morphometry`: per-tile nuclear morphometry (16 numbers, no weights). The networks (MONAI
    ResNet / DenseNet, ViT-S/B/L/16 with timm's state-dict keys) are frozen; their weights come
    from `checkpoint` (a local .pt / .pth / .bin / .safetensors state dict) or, when it is null,
    from a fixed `seed`, so every site computes the same embedding for the same tile. A network's
    tiles are resized to `input_size` and scaled by `mean` / `std` (the checkpoint's own, e.g.
    ImageNet's). `add_morphometry` appends the morphometry to a network's embedding.
    `pre_extracted`: the site brings features made by `extractor` (site YAML `wsi_features_dir`)."""

    arch: EncoderArch = "resnet10"
    seed: int = 0
    checkpoint: str | None = None
    batch_size: PositiveInt = 32
    add_morphometry: bool = False
    input_size: PositiveInt | None = Field(None, description="the network's input in px (tiles are resized); default tile_size")
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat] = (0.229, 0.224, 0.225)
    extractor: str | None = Field(None, description="pre_extracted: the name of the feature extractor every site used")

    @model_validator(mode="after")
    def _consistent(self) -> PatchEncoderConfig:
        if self.arch == "pre_extracted" and not self.extractor:
            raise ValueError("arch pre_extracted needs `extractor` (the name of the model the sites' features come from)")
        if self.arch in ("morphometry", "pre_extracted") and (self.add_morphometry or self.checkpoint):
            raise ValueError(f"arch {self.arch} has no network: add_morphometry and checkpoint apply to networks only")
        return self


class WsiPreprocessingConfig(StrictModel):
    """Tissue (Otsu on saturation) -> tiles of `tile_size` px at `mpp` microns/px -> encoder -> bag."""

    mpp: float = Field(1.0, gt=0.0, description="tile magnification in microns per pixel (0.5 ~ 20x)")
    tile_size: PositiveInt = 224
    max_tiles: PositiveInt = 256
    tissue_threshold: float = Field(0.5, gt=0.0, le=1.0, description="least tissue share of a kept tile")
    min_saturation: float = Field(0.07, ge=0.0, lt=1.0, description="saturation floor of tissue, so blank slides stay blank")
    stain_normalisation: Literal["none", "reinhard"] = "none"
    sampling_seed: int = 0
    encoder: PatchEncoderConfig = PatchEncoderConfig()


class AugmentationConfig(StrictModel):
    """Training-only augmentation of the 2-channel MRI crop (as in MMNN_STS: flip, rotate, zoom)."""

    flip_prob: float = Field(0.5, ge=0.0, le=1.0)
    rotate_deg: float = Field(15.0, ge=0.0, le=180.0)
    rotate_prob: float = Field(0.5, ge=0.0, le=1.0)
    zoom_range: tuple[float, float] = (0.9, 1.1)
    zoom_prob: float = Field(0.5, ge=0.0, le=1.0)


class PreprocessingConfig(StrictModel):
    """Preprocessing that must be identical at every site; part of the preset so the federation fixes it."""

    mri: MriPreprocessingConfig = MriPreprocessingConfig()
    wsi: WsiPreprocessingConfig = WsiPreprocessingConfig()
    augmentation: AugmentationConfig = AugmentationConfig()


class ModelPreset(StrictModel):
    """A named model size. `paper` follows the MMNN paper; `cpu-small` keeps the structure, not the width."""

    name: str
    norm: Norm = "batch"
    mri: MriNetConfig = MriNetConfig()
    wsi: WsiNetConfig = WsiNetConfig()
    clinical: ClinicalNetConfig = ClinicalNetConfig()
    preprocessing: PreprocessingConfig = PreprocessingConfig()
    train: TrainConfig = TrainConfig()


def load_preset(name_or_path: str, norm: str | None = None) -> ModelPreset:
    """A model preset by bundled name (`paper`, `cpu-small`) or by YAML path; `norm` overrides its
    normalisation layers (the federation's `model_norm`)."""
    if name_or_path.endswith((".yaml", ".yml")):
        preset = load_config(name_or_path, ModelPreset)
    else:
        preset = load_config(bundled_path(f"presets/{name_or_path}.yaml"), ModelPreset)
    return preset if norm is None else preset.model_copy(update={"norm": norm})

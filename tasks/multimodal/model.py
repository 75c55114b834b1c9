"""The multimodal Cox network: one sub-network per modality, late fusion, one log-risk per endpoint.

Heads: "fused" (concatenated features of the present modalities, absent -> zeros, plus the
presence flags -> linear -> K log-risks, plus a linear term of the clinical vector when the preset's
clinical.linear_skip is on) and one auxiliary head per modality (its features ->
linear -> K log-risks), used only for gradient blending. The unimodal MRI network and the
clinical-only network are this class with `modalities` restricted.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stsfl.common.batch import MODALITIES, SurvivalBatch
from stsfl.common.blending import FUSED_HEAD
from stsfl.common.clinical_net import clinical_mlp
from stsfl.common.config.preset import ModelPreset
from stsfl.common.mri_net import MriEncoder
from stsfl.common.wsi_net import GatedAttentionMil

FUSED = FUSED_HEAD


class MultimodalCoxNet(nn.Module):
    """forward(batch) -> {head: log-risk [B, K]} for heads ("fused", *modalities)."""

    def __init__(
        self,
        preset: ModelPreset,
        n_clinical: int,
        n_endpoints: int,
        modalities: Sequence[str] = MODALITIES,
    ) -> None:
        super().__init__()
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown or not modalities or len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities must be distinct names from {MODALITIES}, got {tuple(modalities)}")
        # Keep the canonical order whatever order the caller gave.
        self.modalities = tuple(m for m in MODALITIES if m in modalities)
        self.n_endpoints = n_endpoints
        encoders: dict[str, nn.Module] = {}
        widths: dict[str, int] = {}
        if "mri" in self.modalities:
            encoders["mri"] = MriEncoder(preset.mri, preset.norm)
            if preset.mri.freeze:  # a pretrained trunk as a fixed feature extractor (its norm statistics still adapt)
                encoders["mri"].features.requires_grad_(False)
            widths["mri"] = preset.mri.out_features
        if "wsi" in self.modalities:
            encoders["wsi"] = GatedAttentionMil(preset.wsi)
            widths["wsi"] = preset.wsi.out_features
        if "clinical" in self.modalities:
            encoders["clinical"] = clinical_mlp(n_clinical, preset.clinical)
            widths["clinical"] = preset.clinical.out_features
        self.encoders = nn.ModuleDict(encoders)
        self.aux_heads = nn.ModuleDict({m: nn.Linear(widths[m], n_endpoints) for m in self.modalities})
        self.fused_head = nn.Linear(sum(widths.values()) + len(self.modalities), n_endpoints)
        self.clinical_linear = None
        if "clinical" in self.modalities and preset.clinical.linear_skip:
            # Set from a federated ridge Cox fit (stsfl.server.phases.clinical_init_phase), never by SGD: the
            # network learns what the images and the MLP add to that model, and cannot overfit the
            # clinical model's own coefficients on a few dozen events. Zero (nothing) until it is set.
            self.clinical_linear = nn.Linear(n_clinical, n_endpoints, bias=False)
            nn.init.zeros_(self.clinical_linear.weight)
            self.clinical_linear.weight.requires_grad_(False)

    @property
    def head_names(self) -> tuple[str, ...]:
        return (FUSED, *self.modalities)

    def encode(self, batch: SurvivalBatch) -> dict[str, torch.Tensor]:
        """{modality: features [B, F_m]}, zeroed for patients who lack the modality."""
        features = {}
        for m in self.modalities:
            if m == "mri":
                f = self.encoders[m](batch.mri)
            elif m == "wsi":
                f = self.encoders[m](batch.wsi, batch.wsi_mask)
            else:
                f = self.encoders[m](batch.clinical)
            present = batch.modality_present[:, MODALITIES.index(m)].unsqueeze(1).to(f.dtype)
            features[m] = f * present
        return features

    def heads(self, features: dict[str, torch.Tensor], modality_present: torch.Tensor) -> dict[str, torch.Tensor]:
        """{head: log-risk [B, K]} from `encode`'s features and the presence flags [B, 3]."""
        flags = modality_present[:, [MODALITIES.index(m) for m in self.modalities]]
        fused_in = torch.cat([features[m] for m in self.modalities] + [flags.to(features[self.modalities[0]].dtype)], 1)
        out = {FUSED: self.fused_head(fused_in)}
        out.update({m: self.aux_heads[m](features[m]) for m in self.modalities})
        return out

    def forward(self, batch: SurvivalBatch) -> dict[str, torch.Tensor]:
        out = self.heads(self.encode(batch), batch.modality_present)
        if self.clinical_linear is not None:
            out[FUSED] = out[FUSED] + self.clinical_linear(batch.clinical)
        return out

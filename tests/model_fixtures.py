"""Small in-memory batches and models for the model tests (no site data needed)."""

from __future__ import annotations

import torch

from stsfl.common.batch import PatientSample, SurvivalBatch, collate_patients
from stsfl.common.config import ModelPreset, load_preset

N_CLINICAL = 5
N_ENDPOINTS = 2


def tiny_preset(norm: str = "batch") -> ModelPreset:
    """cpu-small with its own norm choice (16^3 volumes keep 2^3 voxels after the last transition)."""
    base = load_preset("cpu-small")
    return base.model_copy(update={"norm": norm, "mri": base.mri.model_copy(update={"input_size": (16, 16, 16)})})


def make_samples(n: int, preset: ModelPreset, seed: int = 0, mri_every: int = 1, wsi_every: int = 1) -> list[PatientSample]:
    """n patients with random inputs and times; patient i lacks MRI unless i % mri_every == 0 (same for WSI)."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        samples.append(
            PatientSample(
                pid=f"p{i:03d}",
                clinical=torch.randn(N_CLINICAL, generator=g),
                time=torch.randint(30, 3000, (N_ENDPOINTS,), generator=g).float(),
                event=(torch.rand(N_ENDPOINTS, generator=g) < 0.6).float(),
                endpoint_observed=torch.ones(N_ENDPOINTS, dtype=torch.bool),
                mri=torch.randn(2, *preset.mri.input_size, generator=g) if i % mri_every == 0 else None,
                wsi=torch.randn(3 + i % 4, preset.wsi.embed_dim, generator=g) if i % wsi_every == 0 else None,
            )
        )
    return samples


def make_batch(n: int, preset: ModelPreset, **kwargs) -> SurvivalBatch:
    return collate_patients(make_samples(n, preset, **kwargs), tuple(preset.mri.input_size), preset.wsi.embed_dim)

"""The per-patient sample and the batch that the site dataset yields and the network consumes.

Modality order is fixed: MODALITIES = ("mri", "wsi", "clinical"). A patient may lack a modality
or an endpoint; that is data: absent inputs are zeros and the masks say what is present.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

MODALITIES: tuple[str, ...] = ("mri", "wsi", "clinical")


@dataclass
class PatientSample:
    """One patient. Shapes: mri [2, D, H, W] or None; wsi [N_tiles, E] or None; clinical [C];
    time, event [K] (K endpoints; float days, float 0/1); endpoint_observed [K] bool."""

    pid: str
    clinical: torch.Tensor
    time: torch.Tensor
    event: torch.Tensor
    endpoint_observed: torch.Tensor
    mri: torch.Tensor | None = None
    wsi: torch.Tensor | None = None


@dataclass
class SurvivalBatch:
    """B patients. mri [B, 2, D, H, W]; wsi [B, N, E] padded with wsi_mask [B, N] (True = real tile);
    clinical [B, C]; time, event [B, K]; endpoint_observed [B, K]; modality_present [B, 3] in MODALITIES order."""

    pids: list[str]
    mri: torch.Tensor
    wsi: torch.Tensor
    wsi_mask: torch.Tensor
    clinical: torch.Tensor
    time: torch.Tensor
    event: torch.Tensor
    endpoint_observed: torch.Tensor
    modality_present: torch.Tensor
    extras: dict = field(default_factory=dict)

    def to(self, device: torch.device | str) -> SurvivalBatch:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return SurvivalBatch(**moved)

    def __len__(self) -> int:
        return len(self.pids)


def collate_patients(
    samples: list[PatientSample],
    mri_shape: tuple[int, int, int],
    wsi_dim: int,
) -> SurvivalBatch:
    """Stack samples; absent MRI -> zeros [2, *mri_shape]; bags padded to the longest (min 1 tile)."""
    n = len(samples)
    mri = torch.zeros((n, 2, *mri_shape), dtype=torch.float32)
    max_tiles = max([s.wsi.shape[0] for s in samples if s.wsi is not None] + [1])
    wsi = torch.zeros((n, max_tiles, wsi_dim), dtype=torch.float32)
    wsi_mask = torch.zeros((n, max_tiles), dtype=torch.bool)
    present = torch.zeros((n, len(MODALITIES)), dtype=torch.bool)
    for i, s in enumerate(samples):
        if s.mri is not None:
            mri[i] = s.mri
            present[i, 0] = True
        if s.wsi is not None and s.wsi.shape[0] > 0:
            wsi[i, : s.wsi.shape[0]] = s.wsi
            wsi_mask[i, : s.wsi.shape[0]] = True
            present[i, 1] = True
        present[i, 2] = True
    return SurvivalBatch(
        pids=[s.pid for s in samples],
        mri=mri,
        wsi=wsi,
        wsi_mask=wsi_mask,
        clinical=torch.stack([s.clinical.float() for s in samples]),
        time=torch.stack([s.time.float() for s in samples]),
        event=torch.stack([s.event.float() for s in samples]),
        endpoint_observed=torch.stack([s.endpoint_observed.bool() for s in samples]),
        modality_present=present,
    )

"""Grad-CAM heat maps of the MRI sub-network (MONAI's GradCAM on its final convolutional block),
saved at the site as PNG overlays on the T2 slice with the largest tumour area.

The tumour mask comes from the preprocessing cache, where it is stored cropped and resized onto the
model's grid beside the volume (`mri_preprocess`). A cache entry written before masks were stored
has none: that patient's overlay uses the middle slice, and the reason is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.visualize import GradCAM
from torch import nn

from stsfl.client.data.site_dataset import SiteDataset, site_collate
from stsfl.client.data.site_prepare import PreparedSite
from stsfl.client.training.trainer import make_loader
from stsfl.common.batch import SurvivalBatch
from stsfl.common.clinical_stats import GlobalClinicalStats
from stsfl.common.figures import pyplot, save_png
from stsfl.tasks.multimodal.model import FUSED, MultimodalCoxNet

log = logging.getLogger("stsfl.site")

# The DenseNet's last block after its final norm and ReLU: the feature maps the pooled features come from.
TARGET_LAYER = "model.encoders.mri.class_layers.relu"


class _MriToLogRisk(nn.Module):
    """mri [B, 2, D, H, W] -> log-risk [B, K] of `head`, the patients' other inputs held fixed."""

    def __init__(self, model: MultimodalCoxNet, batch: SurvivalBatch, head: str) -> None:
        super().__init__()
        self.model, self.batch, self.head = model, batch, head

    def forward(self, mri: torch.Tensor) -> torch.Tensor:
        batch = SurvivalBatch(**{**self.batch.__dict__, "mri": mri})
        return self.model(batch)[self.head]


def mri_gradcam(model: MultimodalCoxNet, batch: SurvivalBatch, endpoint: int = 0, head: str = FUSED) -> np.ndarray:
    """Grad-CAM of endpoint `endpoint`'s log-risk from `head` w.r.t. the MRI trunk's last block,
    upsampled to the input grid and scaled to [0, 1] per patient: [B, D, H, W]."""
    if "mri" not in model.modalities:
        raise ValueError("the model has no MRI sub-network")
    was_training = model.training
    model.eval()
    try:
        cam = GradCAM(nn_module=_MriToLogRisk(model, batch, head), target_layers=TARGET_LAYER)
        maps = cam(batch.mri.detach().clone(), class_idx=endpoint)
    finally:
        model.train(was_training)
    return maps[:, 0].detach().cpu().numpy()


def largest_tumour_slice(mask: np.ndarray) -> int:
    """Index along the first (axial, D) axis of the slice with the most mask voxels."""
    return int(np.argmax(mask.reshape(mask.shape[0], -1).sum(1)))


@dataclass(frozen=True)
class GradcamOverlay:
    """One saved overlay: the patient, the PNG, the slice shown and whether the mask chose it."""

    pid: str
    path: Path
    slice_index: int
    from_mask: bool


def cached_tumour_masks(prepared: PreparedSite, pids: Sequence[str]) -> dict[str, np.ndarray]:
    """{pid: tumour mask on the model grid [D, H, W]} from the preprocessing cache, for the patients
    with an MRI whose cache entry holds one (older entries do not: logged, left out)."""
    by_pid = {p.pid: p for p in prepared.patients}
    masks = {}
    for pid in pids:
        key = by_pid[pid].mri_key
        if key is None:
            continue
        entry = prepared.cache.load("mri", key) or {}
        if "mask" in entry:
            masks[pid] = entry["mask"]
        else:
            log.warning(
                "site %s, patient %s: cache entry %s was written before tumour masks were cached; its "
                "Grad-CAM overlay shows the middle slice (delete the entry to rebuild it with the mask)",
                prepared.name,
                pid,
                prepared.cache.entry_path("mri", key),
            )
    return masks


def save_overlay(t2: np.ndarray, cam: np.ndarray, mask: np.ndarray | None, path: str | Path, title: str) -> tuple[Path, int]:
    """PNG: the T2 slice of largest tumour area (the volume's middle slice when no mask is given),
    its heat map, and the overlay with the mask outline. t2, cam, mask: [D, H, W]. -> (path, slice)."""
    z = largest_tumour_slice(mask) if mask is not None and mask.any() else t2.shape[0] // 2
    fig, axes = pyplot().subplots(1, 3, figsize=(9, 3.4))
    axes[0].imshow(t2[z], cmap="gray")
    axes[0].set_title("T2")
    axes[1].imshow(cam[z], cmap="jet", vmin=0, vmax=1)
    axes[1].set_title("Grad-CAM")
    axes[2].imshow(t2[z], cmap="gray")
    axes[2].imshow(cam[z], cmap="jet", alpha=0.4, vmin=0, vmax=1)
    if mask is not None and mask[z].any():
        axes[2].contour(mask[z].astype(float), levels=[0.5], colors="white", linewidths=0.8)
    axes[2].set_title("overlay")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"{title} (slice {z})")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.8, wspace=0.05)
    return save_png(fig, path, tight=False), z


def save_batch_gradcams(
    model: MultimodalCoxNet,
    batch: SurvivalBatch,
    out_dir: str | Path,
    endpoint: int = 0,
    endpoint_name: str = "endpoint 0",
    masks: dict[str, np.ndarray] | None = None,
) -> list[GradcamOverlay]:
    """One overlay PNG per patient with an MRI, `<out_dir>/<pid>_gradcam.png` (stays at the site).
    masks: tumour masks on the crop grid [D, H, W] by patient id, where available (the batch's
    volumes must be unaugmented, so that they line up)."""
    maps = mri_gradcam(model, batch, endpoint)
    present = batch.modality_present[:, 0].bool().tolist()
    overlays = []
    for i, pid in enumerate(batch.pids):
        if not present[i]:
            continue
        t2 = batch.mri[i, 1].detach().cpu().numpy()
        mask = (masks or {}).get(pid)
        if mask is not None and mask.shape != t2.shape:
            raise ValueError(f"patient {pid}: mask {mask.shape} is not on the volume's grid {t2.shape}")
        path, z = save_overlay(t2, maps[i], mask, Path(out_dir) / f"{pid}_gradcam.png", f"{pid}: {endpoint_name}")
        overlays.append(GradcamOverlay(pid, path, z, mask is not None and bool(mask.any())))
    return overlays


def site_gradcams(
    model: MultimodalCoxNet,
    prepared: PreparedSite,
    clinical_stats: GlobalClinicalStats,
    pids: Sequence[str],
    out_dir: str | Path,
    endpoint: int = 0,
    batch_size: int = 4,
) -> list[GradcamOverlay]:
    """Grad-CAM overlays for the site's patients `pids` (unaugmented volumes from the cache, each on
    the T2 slice of largest cached tumour area)."""
    dataset = SiteDataset(prepared, clinical_stats, train=False, pids=pids)
    masks = cached_tumour_masks(prepared, pids)
    name = prepared.schema.endpoint_names[endpoint]
    overlays = []
    for batch in make_loader(dataset, batch_size, site_collate(prepared.preset), shuffle=False):
        overlays += save_batch_gradcams(model, batch, out_dir, endpoint, name, masks)
    return overlays

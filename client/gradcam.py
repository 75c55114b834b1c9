"""Grad-CAM heat maps of the MRI sub-network (MONAI's GradCAM on its final convolutional block),
saved at the site as PNG overlays on the T2 slice with the largest tumour area."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.visualize import GradCAM
from torch import nn

from stsfl.common.batch import SurvivalBatch
from stsfl.common.figures import pyplot, save_png
from stsfl.common.multimodal import FUSED, MultimodalCoxNet

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


def save_overlay(t2: np.ndarray, cam: np.ndarray, mask: np.ndarray | None, path: str | Path, title: str) -> Path:
    """PNG: the T2 slice of largest tumour area (the volume's middle slice when no mask is given),
    its heat map, and the overlay with the mask outline. t2, cam, mask: [D, H, W]."""
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
    return save_png(fig, path)


def save_batch_gradcams(
    model: MultimodalCoxNet,
    batch: SurvivalBatch,
    out_dir: str | Path,
    endpoint: int = 0,
    endpoint_name: str = "endpoint 0",
    masks: dict[str, np.ndarray] | None = None,
) -> list[Path]:
    """One overlay PNG per patient with an MRI, `<out_dir>/<pid>_gradcam.png` (stays at the site).
    masks: tumour masks on the crop grid [D, H, W] by patient id, where available."""
    maps = mri_gradcam(model, batch, endpoint)
    present = batch.modality_present[:, 0].bool().tolist()
    paths = []
    for i, pid in enumerate(batch.pids):
        if not present[i]:
            continue
        t2 = batch.mri[i, 1].detach().cpu().numpy()
        mask = (masks or {}).get(pid)
        paths.append(save_overlay(t2, maps[i], mask, Path(out_dir) / f"{pid}_gradcam.png", f"{pid}: {endpoint_name}"))
    return paths

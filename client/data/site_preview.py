"""A PNG of preprocessed MRI crops (middle axial slice of T1 and T2 per patient), so a site can
see that crops hold the tumour and that T1 and T2 are aligned."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from stsfl.client.data.site_prepare import PreparedSite  # noqa: E402


def write_crop_preview(prepared: PreparedSite, path: Path, max_patients: int = 12) -> int:
    """Write the PNG; returns how many patients it shows (those with MRI, in site order)."""
    chosen = [p for p in prepared.patients if p.mri_key is not None][:max_patients]
    if not chosen:
        return 0
    fig, axes = plt.subplots(2, len(chosen), figsize=(1.6 * len(chosen), 3.6), squeeze=False)
    for col, patient in enumerate(chosen):
        volume = prepared.cache.load("mri", patient.mri_key, ["volume"])["volume"]
        middle = volume.shape[1] // 2
        for row, name in enumerate(("T1", "T2")):
            ax = axes[row, col]
            ax.imshow(volume[row, middle], cmap="gray", vmin=-2.5, vmax=2.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(patient.pid, fontsize=7)
            if col == 0:
                ax.set_ylabel(name)
    fig.suptitle(f"site {prepared.name}: preprocessed tumour crops (z-scored, middle slice)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return len(chosen)

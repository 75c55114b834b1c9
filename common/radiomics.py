"""First-order MRI radiomics of the tumour crop: the schema's `source: mri` variables.

A site computes them from each patient's preprocessed crop (stsfl.client.mri.mri_preprocess: T1
and T2 of the tumour and its margin, each z-scored inside the crop) and treats them as clinical
variables: federation-wide z-scoring, a missing indicator for patients without a usable MRI, the
linear Cox term the network starts from (stsfl.server.phases.clinical_init_phase) and the clinical
MLP. Because each channel is z-scored per crop, mean and spread carry nothing; what the crop's
intensity histogram still holds is its shape (tails and skewness: how much of the crop is, for
instance, T2-bright fluid, necrosis or peritumoural oedema) and how T1 and T2 vary together.
Fusing such radiomics with the deep features is what the MRI recurrence models do (Yin et al.,
deep transfer learning + radiomics on T2 MRI for post-surgical recurrence of soft-tissue sarcoma).
"""

from __future__ import annotations

import numpy as np

CHANNELS = ("t1", "t2")


def _channel_features(values: np.ndarray) -> dict[str, float]:
    centred = values - values.mean()
    spread = float(np.sqrt(np.mean(centred**2)))
    skewness = float(np.mean(centred**3) / spread**3) if spread > 1e-12 else 0.0
    p10, p90 = np.percentile(values, [10.0, 90.0])
    return {"p10": float(p10), "p90": float(p90), "skewness": skewness}


RADIOMICS_FEATURES = (
    *(f"mri_{c}_{f}" for c in CHANNELS for f in ("p10", "p90", "skewness")),
    "mri_t1_t2_correlation",
)


def first_order_radiomics(volume: np.ndarray) -> dict[str, float]:
    """{name: value} of RADIOMICS_FEATURES for one crop `volume` [2, D, H, W] (T1, T2): per channel
    the 10th and 90th percentiles and the skewness (third standardised moment) of its voxels, and
    the voxel-wise Pearson correlation of T1 and T2 (0 when a channel is constant)."""
    if volume.ndim != 4 or volume.shape[0] != len(CHANNELS):
        raise ValueError(f"expected a [2, D, H, W] T1/T2 crop, got shape {tuple(volume.shape)}")
    flat = volume.reshape(len(CHANNELS), -1).astype(np.float64)
    out = {f"mri_{c}_{k}": v for c, x in zip(CHANNELS, flat) for k, v in _channel_features(x).items()}
    t1, t2 = flat - flat.mean(axis=1, keepdims=True)
    norm = float(np.sqrt(np.sum(t1**2) * np.sum(t2**2)))
    out["mri_t1_t2_correlation"] = float(np.sum(t1 * t2) / norm) if norm > 1e-12 else 0.0
    return out


def radiomics_vector(volume: np.ndarray) -> np.ndarray:
    """first_order_radiomics of `volume` as [len(RADIOMICS_FEATURES)] float64, in that order (the
    preprocessing cache stores it beside the crop, so a warm site reads 7 numbers, not the crop)."""
    features = first_order_radiomics(volume)
    return np.array([features[name] for name in RADIOMICS_FEATURES])

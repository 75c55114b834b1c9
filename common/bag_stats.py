"""Federation-wide standardisation of slide-bag features, from per-site sums (as the clinical ones).

A site sends `BagSums` over the tiles of its usable patients' bags: the tile count and, per
feature, the sum and the sum of squares (aggregates only, never a tile). The server pools them
(`combine_bag_sums`) and writes the mean and std into the WSI sub-network's buffers
(`set_bag_standardisation`), so every site, and the exported model, standardises tiles alike:
features of very different scales (a density per mm^2 next to an area fraction) become
comparable inputs for the attention pooling.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from stsfl.common.wsi_net import GatedAttentionMil


@dataclass
class BagSums:
    """One site's aggregates over n_tiles tiles: total [E] and total_sq [E] as lists (JSON)."""

    n_tiles: int
    total: list[float]
    total_sq: list[float]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BagSums:
        return cls(**data)


def site_bag_sums(bags: Iterable[np.ndarray], embed_dim: int) -> BagSums:
    """Sums over every tile of bags [N_i, E] (float64 accumulation)."""
    total, total_sq, n = np.zeros(embed_dim), np.zeros(embed_dim), 0
    for bag in bags:
        tiles = np.asarray(bag, dtype=np.float64)
        total += tiles.sum(axis=0)
        total_sq += (tiles * tiles).sum(axis=0)
        n += len(tiles)
    return BagSums(n, total.tolist(), total_sq.tolist())


def combine_bag_sums(per_site: Sequence[BagSums], embed_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean [E], std [E]) of the pooled tiles; no tile anywhere: (0, 1), the identity; a constant
    feature gets std 1 so standardising never divides by zero."""
    n = sum(s.n_tiles for s in per_site)
    if n == 0:
        return np.zeros(embed_dim), np.ones(embed_dim)
    mean = sum(np.asarray(s.total) for s in per_site) / n
    var = sum(np.asarray(s.total_sq) for s in per_site) / n - mean**2
    std = np.sqrt(np.maximum(var, 0.0))
    return mean, np.where(std > 1e-8 * np.maximum(np.abs(mean), 1.0), std, 1.0)


def set_bag_standardisation(model: torch.nn.Module, mean: np.ndarray, std: np.ndarray) -> None:
    """Write mean / std into every GatedAttentionMil of the model (none: nothing to do)."""
    for module in model.modules():
        if isinstance(module, GatedAttentionMil):
            module.bag_mean.copy_(torch.as_tensor(mean, dtype=module.bag_mean.dtype))
            module.bag_std.copy_(torch.as_tensor(std, dtype=module.bag_std.dtype))

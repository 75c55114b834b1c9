"""Where the WSI sub-network looks: per patient, its attention over the tiles of the slide, saved
at the site as a PNG (tile positions coloured by weight; the top tiles read again from the slide).

The weights are the gated-attention softmax of the model's WSI encoder on the cached bag (eval
mode, the federation's standardisation applied), so they are what the trained model pooled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stsfl.client.data.site_prepare import PreparedSite
from stsfl.client.slides.wsi_tiles import TileReader, open_slide
from stsfl.common.figures import pyplot, save_png
from stsfl.tasks.multimodal.model import MultimodalCoxNet

ATTENTION_DIR = "attention"


def tile_attention(model: MultimodalCoxNet, bag: np.ndarray) -> np.ndarray:
    """bag [N, E] -> attention weights [N] (sum 1) of the model's WSI encoder."""
    mil = model.encoders["wsi"]
    was_training = mil.training
    mil.eval()
    with torch.no_grad():
        weights, _ = mil.attention(torch.from_numpy(bag)[None], torch.ones(1, len(bag), dtype=torch.bool))
    mil.train(was_training)
    return weights[0].numpy()


def _top_tiles(slide_path: Path, coords: np.ndarray, prepared: PreparedSite) -> list[np.ndarray]:
    slide = open_slide(slide_path)
    try:
        reader = TileReader.for_slide(slide, slide_path, prepared.preset.preprocessing.wsi)
        return [reader.read(tuple(xy)) for xy in coords]
    finally:
        slide.close()


def write_attention_maps(model: MultimodalCoxNet, prepared: PreparedSite, folder: Path, top_k: int = 6) -> list[Path]:
    """<folder>/<pid>.png for every usable patient with a slide bag; the top_k tiles are shown when
    the bag came from a slide (pre-extracted features: the positions only, when the file had them)."""
    folder.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    written = []
    for patient in prepared.patients:
        if patient.wsi_key is None:
            continue
        entry = prepared.cache.load("wsi", patient.wsi_key, ["bag", "coords"])
        weights = tile_attention(model, entry["bag"])
        order = np.argsort(-weights, kind="stable")[:top_k]
        tiles = _top_tiles(patient.slide, entry["coords"][order], prepared) if patient.slide is not None else []
        fig = plt.figure(figsize=(3 + 1.6 * max(len(tiles), 1), 3.2))
        grid = fig.add_gridspec(1, 1 + max(len(tiles), 1), width_ratios=[2] + [1] * max(len(tiles), 1))
        ax = fig.add_subplot(grid[0, 0])
        if (entry["coords"] >= 0).all():
            points = ax.scatter(entry["coords"][:, 0], entry["coords"][:, 1], c=weights, marker="s", cmap="magma")
            ax.invert_yaxis()
            bar = fig.colorbar(points, ax=ax, fraction=0.05)
            bar.set_label("attention", fontsize=7)
            bar.ax.tick_params(labelsize=6)
        ax.set_title(f"{patient.pid}: {len(weights)} tiles", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
        for i, tile in enumerate(tiles):
            tile_ax = fig.add_subplot(grid[0, 1 + i])
            tile_ax.imshow(tile)
            tile_ax.set_title(f"#{i + 1}  {weights[order[i]]:.2f}", fontsize=7)
            tile_ax.axis("off")
        fig.subplots_adjust(left=0.03, right=0.98, bottom=0.04, top=0.88, wspace=0.7)
        written.append(save_png(fig, folder / f"{patient.pid}.png", tight=False))
    return written

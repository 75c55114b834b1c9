"""One slide -> its bag of tile embeddings [N, E] (N <= max_tiles), with the tile corners."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stsfl.client.problems import PatientDataError
from stsfl.client.slides.patch_encoder import PatchEncoder
from stsfl.client.slides.stain import lab_statistics, reinhard
from stsfl.client.slides.wsi_tiles import TileReader, open_slide, sample_tiles, slide_mpp, tissue_map, tissue_tiles
from stsfl.common.config.preset import WsiPreprocessingConfig


@dataclass
class WsiResult:
    """bag [N, E] float32; coords [N, 2] level-0 (x, y) tile corners; n_tissue_tiles before the cap."""

    bag: np.ndarray
    coords: np.ndarray
    n_tissue_tiles: int
    seconds: dict[str, float] = field(default_factory=dict)


def slide_bag(path: Path, cfg: WsiPreprocessingConfig, encoder: PatchEncoder) -> WsiResult:
    """Tissue -> tiles at cfg.mpp -> (stain normalisation) -> frozen encoder."""
    start = time.perf_counter()
    slide = open_slide(path)
    try:
        reader = TileReader.for_slide(slide, path, cfg)
        tile_level0_px = cfg.tile_size * cfg.mpp / slide_mpp(slide, path)
        tmap = tissue_map(slide, tile_level0_px, cfg)
        if not tmap.tissue.any():
            raise PatientDataError("no tissue found on the slide (saturation never above background)", str(path))
        coords = tissue_tiles(tmap, slide.dimensions, tile_level0_px, cfg.tissue_threshold)
        if len(coords) == 0:
            raise PatientDataError(f"no tile with at least {cfg.tissue_threshold:.0%} tissue", str(path))
        chosen = sample_tiles(coords, cfg.max_tiles, cfg.sampling_seed)
        stain = lab_statistics(tmap.rgb[tmap.tissue]) if cfg.stain_normalisation == "reinhard" else None
        tissue_s = time.perf_counter() - start
        encode_s = 0.0
        bags = []
        for tiles in reader.batches(chosen, encoder.cfg.batch_size):
            t0 = time.perf_counter()
            if stain is not None:
                tiles = reinhard(tiles, *stain)
            bags.append(encoder.encode(tiles))
            encode_s += time.perf_counter() - t0
        read_s = time.perf_counter() - start - tissue_s - encode_s
    finally:
        slide.close()
    bag = np.concatenate(bags).astype(np.float32)
    return WsiResult(bag, chosen, len(coords), {"tissue": tissue_s, "read": read_s, "encode": encode_s})

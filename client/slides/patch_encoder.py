"""The patch encoder: RGB tiles -> embeddings of size wsi.embed_dim, identical at every site.

Either per-tile nuclear morphometry (no weights; stsfl.client.slides.wsi_morphometry), a frozen network
(stsfl.client.slides.wsi_networks: MONAI CNN or timm-layout ViT, from a local checkpoint or a fixed
seed), or a network with the morphometry appended. `fingerprint` hashes what determines the
embedding (the architecture, the weights, the morphometry version and its microns per pixel): it
is part of the embedding cache key, `sts-client validate` prints it and the server checks that
the sites agree on it before round 1.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from stsfl.client.slides.wsi_morphometry import MORPHOMETRY_FEATURES, morphometry
from stsfl.client.slides.wsi_networks import build_tile_network
from stsfl.common.config import ConfigError
from stsfl.common.config.preset import WsiPreprocessingConfig
from stsfl.common.wsi_encoder import encoder_name


class PatchEncoder:
    """encode(tiles [n, T, T, 3] uint8) -> embeddings [n, E] float32 (network part first, then
    the morphometry); frozen and deterministic."""

    def __init__(self, cfg: WsiPreprocessingConfig, embed_dim: int):
        enc = cfg.encoder
        if enc.arch == "pre_extracted":
            raise ConfigError("preprocessing.wsi.encoder.arch pre_extracted: the site brings its features (wsi_features_dir)")
        self.cfg = enc
        self.mpp = cfg.mpp
        self.embed_dim = embed_dim
        self.with_morphometry = enc.arch == "morphometry" or enc.add_morphometry
        net_dim = embed_dim - (MORPHOMETRY_FEATURES if self.with_morphometry else 0)
        if net_dim < 0 or (enc.arch == "morphometry" and net_dim != 0):
            raise ConfigError(
                f"preprocessing.wsi.encoder: morphometry gives {MORPHOMETRY_FEATURES} numbers per tile; "
                f"wsi.embed_dim is {embed_dim} (set it to {MORPHOMETRY_FEATURES} for arch morphometry)"
            )
        self.input_size = enc.input_size or cfg.tile_size
        self.net = build_tile_network(enc, net_dim, self.input_size) if enc.arch != "morphometry" else None
        self._mean = torch.tensor(enc.mean).view(1, 3, 1, 1)
        self._std = torch.tensor(enc.std).view(1, 3, 1, 1)
        self.name = encoder_name(enc)
        self.fingerprint = self._fingerprint()

    def _fingerprint(self) -> str:
        digest = hashlib.sha256(f"{self.name}:{self.embed_dim}".encode())
        if self.with_morphometry:
            digest.update(f"mpp={self.mpp}".encode())  # the densities and areas are in microns
        if self.net is not None:
            digest.update(f"in={self.input_size}:mean={self.cfg.mean}:std={self.cfg.std}".encode())
            for name, tensor in sorted(self.net.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    @torch.inference_mode()
    def _network(self, tiles: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float().div_(255.0)
        out = []
        for chunk in x.split(self.cfg.batch_size):
            if chunk.shape[-1] != self.input_size:
                chunk = F.interpolate(
                    chunk, size=(self.input_size, self.input_size), mode="bilinear", antialias=True, align_corners=False
                )
            out.append(self.net((chunk - self._mean) / self._std))
        return torch.cat(out).numpy().astype(np.float32)

    def encode(self, tiles: np.ndarray) -> np.ndarray:
        parts = [] if self.net is None else [self._network(tiles)]
        if self.with_morphometry:
            parts.append(morphometry(tiles, self.mpp))
        return np.concatenate(parts, axis=1).astype(np.float32)

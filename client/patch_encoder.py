"""The frozen patch encoder: a MONAI 2D network mapping RGB tiles to embeddings of size E.

Every site must compute the same embedding for the same tile, so weights are either loaded from
a local checkpoint (`encoder.checkpoint`, a state_dict file) or initialised from a fixed seed
(nothing is downloaded). `fingerprint` hashes the weights: it is part of the embedding cache key
and `sts-client validate` prints it, so sites can check they agree.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from monai.networks import nets

from stsfl.common.config import ConfigError
from stsfl.common.config.preset import PatchEncoderConfig

# ImageNet channel statistics: the usual input scaling of tile encoders (and of checkpoints).
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _build(arch: str, embed_dim: int) -> torch.nn.Module:
    if arch == "densenet121":
        return nets.DenseNet121(spatial_dims=2, in_channels=3, out_channels=embed_dim)
    factory = {"resnet10": nets.resnet10, "resnet18": nets.resnet18}[arch]
    return factory(spatial_dims=2, n_input_channels=3, num_classes=embed_dim, conv1_t_stride=2)


class PatchEncoder:
    """encode(tiles [n, T, T, 3] uint8) -> embeddings [n, E] float32; weights frozen."""

    def __init__(self, cfg: PatchEncoderConfig, embed_dim: int):
        self.cfg = cfg
        self.embed_dim = embed_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            net = _build(cfg.arch, embed_dim)
        if cfg.checkpoint:
            net.load_state_dict(self._load_checkpoint(Path(cfg.checkpoint)))
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net
        self.fingerprint = self._fingerprint()

    @staticmethod
    def _load_checkpoint(path: Path) -> dict:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as err:
            raise ConfigError(f"preprocessing.wsi.encoder.checkpoint: cannot load {path} ({err})") from None
        return state.get("state_dict", state) if isinstance(state, dict) else state

    def _fingerprint(self) -> str:
        digest = hashlib.sha256(f"{self.cfg.arch}:{self.embed_dim}".encode())
        for name, tensor in sorted(self.net.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    @torch.inference_mode()
    def encode(self, tiles: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float().div_(255.0)
        out = [self.net((chunk - _MEAN) / _STD) for chunk in x.split(self.cfg.batch_size)]
        return torch.cat(out).numpy().astype(np.float32)

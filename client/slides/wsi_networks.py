"""The frozen tile networks of the patch encoder and their local checkpoints.

MONAI 2D ResNet / DenseNet (their classifier maps to the embedding size) and ViT-S/B/L/16 in
timm's key layout (the class token is the embedding; a checkpoint's classifier `head.*` is not
used). Weights come from a local state-dict file (.pt / .pth / .bin: torch; .safetensors) or a
fixed seed; nothing is downloaded. A file that cannot be read, or whose keys or shapes do not
fit the network, is refused with a ConfigError naming the file and the first offending keys.
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.networks import nets

from stsfl.client.slides.wsi_vit import VIT_SIZES, VisionTransformer
from stsfl.common.config import ConfigError
from stsfl.common.config.preset import PatchEncoderConfig

_KEY = "preprocessing.wsi.encoder"


def _cnn(arch: str, out_dim: int) -> torch.nn.Module:
    if arch == "densenet121":
        return nets.DenseNet121(spatial_dims=2, in_channels=3, out_channels=out_dim)
    factory = {"resnet10": nets.resnet10, "resnet18": nets.resnet18}[arch]
    return factory(spatial_dims=2, n_input_channels=3, num_classes=out_dim, conv1_t_stride=2)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a local file (unwrapping a {"state_dict" | "model": ...} wrapper)."""
    if not path.is_file():
        raise ConfigError(f"{_KEY}.checkpoint: {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, bad safetensors header: all mean "not a checkpoint"
        raise ConfigError(f"{_KEY}.checkpoint: cannot read {path} as a state dict ({type(err).__name__}: {err})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{_KEY}.checkpoint: {path} holds no state dict of tensors")
    return state


def _load(net: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        said = [
            f"{what}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
            for what, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in wrong]),
            )
            if keys
        ]
        raise ConfigError(f"{_KEY}.checkpoint: {path} does not fit arch {arch} ({'; '.join(said)})")
    net.load_state_dict(state)


def build_tile_network(cfg: PatchEncoderConfig, out_dim: int, input_size: int) -> torch.nn.Module:
    """The frozen network in eval mode: images [n, 3, input_size, input_size] -> [n, out_dim].
    Seeded initialisation (cfg.seed), then the checkpoint's weights when cfg.checkpoint is set."""
    state = read_state_dict(Path(cfg.checkpoint)) if cfg.checkpoint else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if cfg.arch in VIT_SIZES:
            width = VIT_SIZES[cfg.arch][0]
            if out_dim != width:
                raise ConfigError(
                    f"{_KEY}: {cfg.arch} embeds a tile in {width} numbers, the preset wants {out_dim} "
                    f"(set wsi.embed_dim to {width}, plus 16 with add_morphometry)"
                )
            if state is not None:
                state = {k: v for k, v in state.items() if not k.startswith("head.")}
            try:
                net = VisionTransformer(cfg.arch, input_size, layer_scale=state is not None and "blocks.0.ls1.gamma" in state)
            except ValueError as err:
                raise ConfigError(f"{_KEY}.input_size: {err}") from None
        else:
            net = _cnn(cfg.arch, out_dim)
    if state is not None:
        _load(net, state, Path(cfg.checkpoint), cfg.arch)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net

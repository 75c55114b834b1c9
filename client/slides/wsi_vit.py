"""A Vision Transformer whose state-dict keys are timm's, so pathology foundation-model checkpoints
published in the timm layout (ViT-S/B/L/16, class token, optional LayerScale) load without timm.

timm itself would bring torchvision (a CUDA-built wheel beside the CPU torch pin) and a model hub
client; the tile encoder needs neither: the forward pass below is timm's `VisionTransformer` with
global_pool="token" (the class token after the final LayerNorm), LayerNorm eps 1e-6, MLP ratio 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# arch -> (width, depth, heads), as timm's vit_{small,base,large}_patch16_*.
VIT_SIZES = {"vit_small_patch16": (384, 12, 6), "vit_base_patch16": (768, 12, 12), "vit_large_patch16": (1024, 24, 16)}
PATCH = 16


class _LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, layer_scale: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.ls1 = _LayerScale(dim) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim)
        self.ls2 = _LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, PATCH, stride=PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """images [B, 3, S, S] (S a multiple of 16, scaled by the checkpoint's mean / std) -> class-token
    embeddings [B, width]. layer_scale: the blocks carry timm's ls1 / ls2 gammas (UNI-style)."""

    def __init__(self, arch: str, input_size: int, layer_scale: bool = False):
        super().__init__()
        if input_size % PATCH:
            raise ValueError(f"input_size {input_size} is not a multiple of the patch size {PATCH}")
        dim, depth, heads = VIT_SIZES[arch]
        self.width = dim
        self.patch_embed = _PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + (input_size // PATCH) ** 2, dim) * 0.02)
        self.blocks = nn.Sequential(*(_Block(dim, heads, layer_scale) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        for name, p in self.named_parameters():
            if p.dim() > 1 and name != "pos_embed":
                nn.init.trunc_normal_(p, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1) + self.pos_embed
        return self.norm(self.blocks(tokens))[:, 0]

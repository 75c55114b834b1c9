"""WSI sub-network: gated-attention multiple-instance pooling (Ilse et al. 2018) over cached tile embeddings."""

from __future__ import annotations

import torch
from torch import nn

from stsfl.common.config.preset import WsiNetConfig


class GatedAttentionMil(nn.Module):
    """Bag [B, N, E] with tile mask [B, N] (True = real tile) -> features [B, out_features].

    Tiles are first standardised with the federation's feature mean / std (buffers bag_mean,
    bag_std [E]: 0 and 1 until stsfl.common.bag_stats sets them), projected to attention_dim,
    scored by w^T (tanh(V h) * sigmoid(U h)), softmax-ed over the real tiles, and the
    attention-weighted mean is mapped to out_features. A bag without tiles gets uniform weights
    over its padding (zeros); the fusion zeroes it through the presence flag.
    """

    def __init__(self, cfg: WsiNetConfig) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(cfg.embed_dim, cfg.attention_dim), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.attention_v = nn.Linear(cfg.attention_dim, cfg.attention_dim)
        self.attention_u = nn.Linear(cfg.attention_dim, cfg.attention_dim)
        self.attention_w = nn.Linear(cfg.attention_dim, 1)
        self.out = nn.Linear(cfg.attention_dim, cfg.out_features)
        self.out_features = cfg.out_features
        self.register_buffer("bag_mean", torch.zeros(cfg.embed_dim))
        self.register_buffer("bag_std", torch.ones(cfg.embed_dim))

    def attention(self, bag: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(tile weights [B, N] summing to 1 over real tiles, projected tiles [B, N, A])."""
        h = self.project((bag - self.bag_mean) / self.bag_std)
        logits = self.attention_w(torch.tanh(self.attention_v(h)) * torch.sigmoid(self.attention_u(h))).squeeze(-1)
        empty = ~mask.any(dim=1, keepdim=True)
        logits = logits.masked_fill(~(mask | empty), float("-inf"))
        return torch.softmax(logits, dim=1), h

    def forward(self, bag: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights, h = self.attention(bag, mask)
        return self.out(torch.einsum("bn,bna->ba", weights, h))

"""Local training settings (the optimiser, the Cox risk set, gradient blending, FedProx)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt

from .loader import StrictModel

BlendMode = Literal["wang", "softmax", "off"]


class TrainConfig(StrictModel):
    """SGD with Nesterov momentum under a OneCycle schedule (as the MMNN paper).

    batch_size: patients per forward pass. risk_set: the patients one Cox partial likelihood (and
    one optimiser step) is computed over: "batch" (the forward batch, as MMNN_STS), an integer R
    (chunks of R patients, exact gradient by two passes of micro-batches), or "site" (the whole
    training set: one step per epoch). blend_mode: "wang" (w ~ G/O^2 normalised by the sum,
    Wang et al. 2020), "softmax" (softmax over G/O^2, as the MMNN_STS code), "off" (uniform).
    """

    epochs: PositiveInt = 200
    batch_size: PositiveInt = 8
    lr: PositiveFloat = Field(0.01, description="OneCycle peak learning rate")
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: NonNegativeFloat = 1e-4
    grad_clip: NonNegativeFloat = Field(1.0, description="max global gradient norm; 0 disables clipping")
    ties: Literal["efron", "breslow"] = "efron"
    risk_set: Literal["batch", "site"] | PositiveInt = "batch"
    blend_mode: BlendMode = "wang"
    blend_interval: PositiveInt = Field(5, description="epochs between gradient-blending weight updates")
    blend_overfit_floor: NonNegativeFloat = Field(
        1.0, description="floor on |O_k| as a multiple of the heads' mean |O| (stsfl.common.blending); 0 = Wang's raw G/O^2"
    )
    prox_mu: NonNegativeFloat = Field(0.0, description="FedProx proximal weight mu; 0 = plain local SGD")
    amp: bool = Field(True, description="mixed precision on CUDA (ignored on CPU)")
    seed: int = 0

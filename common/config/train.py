"""The training recipe: optimiser, learning-rate schedule, epochs, risk set, FedProx, blending, seed.

One recipe serves pooled training (`train.epochs` epochs under one schedule) and a federation
(`rounds` x `train.epochs_per_round` local epochs under the SAME one schedule, spread over the
rounds: round r's sites continue the curve where round r - 1 ended instead of restarting it). A
model preset's `train:` block gives the defaults; a federation YAML's `train:` block overrides any
of them by the same name (stsfl.common.config.recipe says where each value came from).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from stsfl.common.config.loader import StrictModel

BlendMode = Literal["wang", "softmax", "off"]
Optimizer = Literal["sgd", "adam"]
Schedule = Literal["onecycle", "warmup_cosine", "constant"]

# OneCycle's start and end rates as fractions of the peak (torch.optim.lr_scheduler.OneCycleLR's
# div_factor 25 and final_div_factor 1e4, as the MMNN paper's code uses it).
ONECYCLE_START = 1.0 / 25.0
ONECYCLE_END = ONECYCLE_START / 1e4


class TrainConfig(StrictModel):
    """The recipe of local (or pooled) training.

    optimizer: "sgd" (Nesterov momentum when momentum > 0, as the MMNN paper) or "adam" (momentum
    is its beta_1; weight_decay is Adam's L2 term). schedule of the rate over the whole training (see
    `learning_rate_at`): "onecycle" (cosine warm-up from lr/25 to lr over warmup_fraction of the
    steps, cosine decay to lr/25e4), "warmup_cosine" (linear warm-up from 0, cosine decay to
    final_lr_fraction x lr) or "constant". batch_size: patients per forward pass. risk_set: the
    patients one Cox partial likelihood (and one optimiser step) is computed over: "batch" (the
    forward batch, as MMNN_STS), an integer R (chunks of R patients, exact gradient by two passes of
    micro-batches), or "site" (the whole training set: one step per epoch). blend_mode: "wang"
    (w ~ G/O^2 normalised by the sum, Wang et al. 2020), "softmax" (softmax over G/O^2, as the
    MMNN_STS code), "off" (uniform).
    """

    optimizer: Optimizer = "sgd"
    lr: PositiveFloat = Field(0.01, description="peak learning rate of the schedule")
    schedule: Schedule = "onecycle"
    warmup_fraction: float = Field(0.3, ge=0.0, lt=1.0, description="share of all steps spent warming up")
    final_lr_fraction: float = Field(0.01, ge=0.0, le=1.0, description="warmup_cosine: the last step's rate / lr")
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: NonNegativeFloat = 1e-4
    grad_clip: NonNegativeFloat = Field(1.0, description="max global gradient norm; 0 disables clipping")
    epochs: PositiveInt = Field(200, description="pooled training: epochs of one run")
    epochs_per_round: PositiveInt = Field(1, description="federation: local epochs of each site in each round")
    min_steps_per_round: NonNegativeInt = Field(
        32,
        description="federation: a site whose epochs_per_round make fewer optimiser steps trains more epochs "
        "(a site of 30 patients takes 4 steps an epoch; DP-SGD sites keep epochs_per_round)",
    )
    batch_size: PositiveInt = 8
    ties: Literal["efron", "breslow"] = "efron"
    risk_set: Literal["batch", "site"] | PositiveInt = "batch"
    blend_mode: BlendMode = "wang"
    blend_interval: PositiveInt = Field(5, description="epochs between gradient-blending weight updates")
    blend_overfit_floor: NonNegativeFloat = Field(
        1.0, description="floor on |O_k| as a multiple of the heads' mean |O| (stsfl.common.blending); 0 = Wang's raw G/O^2"
    )
    blend_smoothing: float = Field(
        0.5, ge=0.0, lt=1.0, description="exponential smoothing of the per-head losses between blend updates (0 = none)"
    )
    blend_max_change: float = Field(0.25, gt=0.0, le=1.0, description="most a head's blend weight moves in one update")
    blend_min_weight: float = Field(0.02, ge=0.0, lt=0.25, description="least blend weight of a head, so it can come back")
    blend_fused_min_weight: float = Field(
        0.25, ge=0.0, lt=1.0, description="least blend weight of the fused head, the one the model predicts with"
    )
    prox_mu: NonNegativeFloat = Field(0.0, description="FedProx proximal weight mu; 0 = plain local SGD")
    amp: bool = Field(True, description="mixed precision on CUDA (ignored on CPU)")
    seed: int = 0

    def learning_rate_at(self, step: float, total_steps: float) -> float:
        """The rate of step `step` (0-based) of a training of `total_steps` steps in all ("onecycle"
        as torch's OneCycleLR with pct_start = warmup_fraction, step for step)."""
        if self.schedule == "constant":
            return self.lr
        last = max(total_steps - 1, 1)
        if self.schedule == "onecycle":
            peak = self.warmup_fraction * total_steps - 1
            if peak > 0 and step <= peak:
                return _cosine(ONECYCLE_START * self.lr, self.lr, step / peak)
            peak = max(peak, 0.0)
            return _cosine(self.lr, ONECYCLE_END * self.lr, (step - peak) / max(last - peak, 1e-12))
        p, w = min(step / last, 1.0), self.warmup_fraction
        if w > 0 and p < w:
            return self.lr * p / w
        return _cosine(self.lr, self.final_lr_fraction * self.lr, (p - w) / (1.0 - w))


def _cosine(start: float, end: float, t: float) -> float:
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


class ScheduleWindow(StrictModel):
    """Where a call of local training sits on the schedule: it covers schedule epochs [start_epoch,
    start_epoch + span_epochs) of `total_epochs` (pooled training: 0, its epochs, its epochs; round r
    of a federation: (r - 1) x epochs_per_round, rounds x epochs_per_round, epochs_per_round). A
    site that runs more epochs than the span (min_steps_per_round) spreads the span over its steps."""

    start_epoch: int = Field(0, ge=0)
    total_epochs: PositiveInt = 1
    span_epochs: PositiveInt = Field(1, description="schedule epochs the call covers, however many epochs it runs")

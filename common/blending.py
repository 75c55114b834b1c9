"""Gradient blending (Wang et al. 2020, "What makes training multi-modal classification networks hard?").

Every `blend_interval` epochs, from per-head training and validation losses at the previous
checkpoint N and the current one N+n (both measured on the checkpoint's model):

    G_k = L_val_k(N) - L_val_k(N+n)                         (generalisation: validation loss decrease)
    O_k = [L_val_k(N+n) - L_train_k(N+n)] - [L_val_k(N) - L_train_k(N)]   (increase of the overfitting gap)
    w_k = (G_k / O_k^2) / sum_j (G_j / O_j^2)               (mode "wang")

O is the gap's increase (Wang's Delta O), not the gap itself, as in Wang et al. and MMNN_STS; the
fused head is one of the blended heads (Wang's multi-modal head; MMNN_STS's head 0).

The fused head is the one the network predicts with, and blending decides how hard the other heads'
losses pull on their own branches: the fused head keeps at least `fused_min_weight` (0.25 by default,
its share without blending), so blending never trains the prediction less than no blending would.

Guards: a head whose validation loss did not fall (G_k <= 0) gets weight 0; when no head generalised
the previous weights stay. |O_k| is floored at `overfit_floor` x (the heads' mean |O|), and at
`min_overfit` in any case. Why the relative floor: O_k is a difference of four losses, each
estimated on a few dozen validation events, so a head's |O_k| comes out near 0 by chance at almost
every update, and 1/O_k^2 then hands it nearly all the weight (on the default synthetic cohort the
raw rule gave 0.98 to a head whose validation loss rose in the next interval, and 0.56 to a head
that had not learnt at all: G = O = 0 up to rounding). With the floor, gap changes smaller than the
heads' typical one count as equal, so those heads are ranked by G, and a head that overfits more
than the others is still pushed down by 1/O^2. It is scale-free like Wang's rule (multiplying all
losses by c leaves the weights unchanged); overfit_floor = 0 gives the raw rule.

The MMNN_STS code (losses/GradientBlender.py) instead normalises with a softmax over the raw
G/O^2 (mode "softmax", no floor). The difference matters: the softmax depends on the scale of
G/O^2, not only on the ratios between heads (ratios 0.02 and 0.01 blend ~50/50, ratios 200 and 100
are one-hot), never gives zero weight to a head whose validation loss rose (negative G only shrinks
it), and is undefined when some O_k is exactly 0. "wang" is scale-free: w is unchanged when all
G/O^2 are multiplied by a constant.

Everything here is pure and works on aggregated statistics, so a federation server can compute
the weights from site-pooled per-head loss sums and event counts (`HeadLossStats.merge`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from stsfl.common.config.train import BlendMode, TrainConfig


@dataclass(frozen=True)
class HeadLossStats:
    """Per-head Cox loss statistics of one data split, poolable across batches and sites.

    loss_sums[head][k]: negative log partial likelihood of endpoint k summed over events (each
    risk set is one site's); events[head][k]: the number of those events.
    """

    loss_sums: Mapping[str, tuple[float, ...]]
    events: Mapping[str, tuple[int, ...]]

    def mean_losses(self) -> dict[str, float]:
        """{head: sum over endpoints of the per-endpoint mean loss} (endpoints without events add 0)."""
        return {head: sum(s / n for s, n in zip(sums, self.events[head]) if n > 0) for head, sums in self.loss_sums.items()}

    @staticmethod
    def merge(parts: Iterable[HeadLossStats]) -> HeadLossStats:
        """Pool statistics of several batches or sites: sums and event counts add up."""
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to merge")
        heads = parts[0].loss_sums.keys()
        return HeadLossStats(
            loss_sums={h: tuple(map(sum, zip(*(p.loss_sums[h] for p in parts)))) for h in heads},
            events={h: tuple(map(sum, zip(*(p.events[h] for p in parts)))) for h in heads},
        )

    def to_dict(self) -> dict:
        return {
            "loss_sums": {h: list(v) for h, v in self.loss_sums.items()},
            "events": {h: list(v) for h, v in self.events.items()},
        }

    @staticmethod
    def from_dict(data: Mapping) -> HeadLossStats:
        return HeadLossStats(
            loss_sums={h: tuple(float(x) for x in v) for h, v in data["loss_sums"].items()},
            events={h: tuple(int(x) for x in v) for h, v in data["events"].items()},
        )


@dataclass(frozen=True)
class Checkpoint:
    """Per-head mean training and validation losses at one blending checkpoint."""

    train: Mapping[str, float]
    val: Mapping[str, float]


def generalisation_and_overfitting(previous: Checkpoint, current: Checkpoint) -> dict[str, tuple[float, float]]:
    """{head: (G_k, O_k)} between two checkpoints (see the module docstring)."""
    out = {}
    for head in current.val:
        gap_before = previous.val[head] - previous.train[head]
        gap_now = current.val[head] - current.train[head]
        out[head] = (previous.val[head] - current.val[head], gap_now - gap_before)
    return out


def uniform_weights(heads: Iterable[str]) -> dict[str, float]:
    heads = list(heads)
    return {h: 1.0 / len(heads) for h in heads}


DEFAULT_OVERFIT_FLOOR = 1.0
FUSED_HEAD = "fused"  # the head the network predicts with (stsfl.tasks.multimodal.model.FUSED)


def wang_weights(
    stats: Mapping[str, tuple[float, float]],
    previous: Mapping[str, float] | None = None,
    min_overfit: float = 1e-3,
    overfit_floor: float = DEFAULT_OVERFIT_FLOOR,
) -> dict[str, float]:
    """w_k = max(G_k, 0) / max(|O_k|, overfit_floor * mean_j |O_j|, min_overfit)^2, normalised to
    sum 1; the previous weights (uniform when None) if no head has G_k > 0."""
    floor = max(overfit_floor * sum(abs(o) for _, o in stats.values()) / max(len(stats), 1), min_overfit)
    ratios = {h: max(g, 0.0) / max(abs(o), floor) ** 2 for h, (g, o) in stats.items()}
    total = sum(ratios.values())
    if total <= 0.0:
        return dict(previous) if previous is not None else uniform_weights(stats)
    return {h: r / total for h, r in ratios.items()}


def softmax_weights(stats: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """The MMNN_STS normalisation: softmax over the raw G_k / O_k^2 (no guards: O_k = 0 is an error)."""
    ratios = {}
    for head, (g, o) in stats.items():
        if o == 0.0:
            raise ZeroDivisionError(f"head {head!r}: O = 0, G/O^2 undefined (the softmax variant has no guard)")
        ratios[head] = g / o**2
    top = max(ratios.values())
    exps = {h: math.exp(r - top) for h, r in ratios.items()}
    total = sum(exps.values())
    return {h: e / total for h, e in exps.items()}


def blend_weights(
    previous: Checkpoint,
    current: Checkpoint,
    mode: BlendMode,
    previous_weights: Mapping[str, float] | None = None,
    min_overfit: float = 1e-3,
    overfit_floor: float = DEFAULT_OVERFIT_FLOOR,
) -> dict[str, float]:
    """New head weights from two checkpoints: "wang", "softmax" (MMNN_STS) or "off" (uniform)."""
    if mode == "off":
        return uniform_weights(current.val)
    stats = generalisation_and_overfitting(previous, current)
    if mode == "softmax":
        return softmax_weights(stats)
    if mode == "wang":
        return wang_weights(stats, previous_weights, min_overfit, overfit_floor)
    raise ValueError(f"unknown blend mode {mode!r}")


@dataclass
class BlendState:
    """The blend weights, the last checkpoint, the history of (epoch, weights) and of the
    (epoch, {head: (G, O)}) they were computed from.

    `update(epoch, checkpoint)` is called every blend_interval epochs (and, by the local trainer,
    at epoch 0 with the initial model): the first call only stores the checkpoint (weights stay
    uniform), later calls compute new weights.
    """

    heads: tuple[str, ...]
    mode: BlendMode = "wang"
    min_overfit: float = 1e-3
    overfit_floor: float = DEFAULT_OVERFIT_FLOOR
    smoothing: float = 0.0
    max_change: float = 1.0
    min_weight: float = 0.0
    fused_min_weight: float = 0.0
    weights: dict[str, float] = field(default_factory=dict)
    raw_weights: dict[str, float] = field(default_factory=dict)
    last: Checkpoint | None = None
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    stats_history: list[tuple[int, dict[str, tuple[float, float]]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0.0 <= self.smoothing < 1.0 or not 0.0 < self.max_change <= 1.0:
            raise ValueError(
                f"blend smoothing must be in [0, 1) and max_change in (0, 1], got {self.smoothing}, {self.max_change}"
            )
        if not 0.0 <= self.min_weight * len(self.heads) < 1.0:
            raise ValueError(f"blend min_weight {self.min_weight} x {len(self.heads)} heads must stay below 1")
        if not 0.0 <= self.fused_min_weight + self.min_weight * (len(self.heads) - 1) < 1.0:
            raise ValueError(
                f"blend fused_min_weight {self.fused_min_weight} + min_weight {self.min_weight} x the other "
                f"{len(self.heads) - 1} heads must stay below 1"
            )
        if not self.weights:
            self.weights = uniform_weights(self.heads)
        if not self.raw_weights:
            self.raw_weights = dict(self.weights)
        if not self.history:
            self.history.append((0, dict(self.weights)))

    @staticmethod
    def for_recipe(heads: Iterable[str], recipe: TrainConfig) -> BlendState:
        """A fresh state with the recipe's blend settings."""
        return BlendState(
            heads=tuple(heads),
            mode=recipe.blend_mode,
            overfit_floor=recipe.blend_overfit_floor,
            smoothing=recipe.blend_smoothing,
            max_change=recipe.blend_max_change,
            min_weight=recipe.blend_min_weight,
            fused_min_weight=recipe.blend_fused_min_weight,
        )

    def update(self, epoch: int, checkpoint: Checkpoint) -> dict[str, float]:
        """Take the checkpoint (exponentially smoothed with the previous ones by `smoothing`: G and O
        of a few dozen validation events jump from one update to the next) and, from the second
        call on, move the weights towards the rule's target by at most `max_change` per head; each
        head keeps at least `min_weight`, so a head whose weight fell can still learn and come back,
        and the fused head (FUSED_HEAD, the one the model predicts with) at least `fused_min_weight`."""
        if self.last is not None and self.smoothing > 0:
            checkpoint = _smoothed(self.last, checkpoint, self.smoothing)
        if self.last is not None:
            target = blend_weights(self.last, checkpoint, self.mode, self.raw_weights, self.min_overfit, self.overfit_floor)
            self.raw_weights = _bounded_step(self.raw_weights, target, self.max_change)
            spare = 1.0 - self.min_weight * len(self.heads)
            self.weights = _fused_floor(
                {h: self.min_weight + spare * w for h, w in self.raw_weights.items()}, self.fused_min_weight, self.min_weight
            )
            self.history.append((epoch, dict(self.weights)))
            if self.mode != "off":
                self.stats_history.append((epoch, generalisation_and_overfitting(self.last, checkpoint)))
        self.last = checkpoint
        return self.weights

    def to_dict(self) -> dict:
        """JSON-able state (for checkpoints and for the round config of a federation)."""
        return {
            "heads": list(self.heads),
            "mode": self.mode,
            "min_overfit": self.min_overfit,
            "overfit_floor": self.overfit_floor,
            "smoothing": self.smoothing,
            "max_change": self.max_change,
            "min_weight": self.min_weight,
            "fused_min_weight": self.fused_min_weight,
            "weights": self.weights,
            "raw_weights": self.raw_weights,
            "last": None if self.last is None else {"train": dict(self.last.train), "val": dict(self.last.val)},
            "history": [[e, w] for e, w in self.history],
            "stats_history": [[e, {h: list(go) for h, go in s.items()}] for e, s in self.stats_history],
        }

    @staticmethod
    def from_dict(data: Mapping) -> BlendState:
        """Inverse of to_dict; a state saved before `overfit_floor` (smoothing, bounded steps) existed
        resumes with the rule it was started with (floor 0, no smoothing, unbounded)."""
        last = data.get("last")
        weights = {h: float(w) for h, w in data["weights"].items()}
        return BlendState(
            heads=tuple(data["heads"]),
            mode=data["mode"],
            min_overfit=float(data["min_overfit"]),
            overfit_floor=float(data.get("overfit_floor", 0.0)),
            smoothing=float(data.get("smoothing", 0.0)),
            max_change=float(data.get("max_change", 1.0)),
            min_weight=float(data.get("min_weight", 0.0)),
            fused_min_weight=float(data.get("fused_min_weight", 0.0)),
            weights=weights,
            raw_weights={h: float(w) for h, w in data.get("raw_weights", weights).items()},
            last=None if last is None else Checkpoint(train=last["train"], val=last["val"]),
            history=[(int(e), {h: float(x) for h, x in w.items()}) for e, w in data["history"]],
            stats_history=[
                (int(e), {h: (float(g), float(o)) for h, (g, o) in s.items()}) for e, s in data.get("stats_history", [])
            ],
        )


def _fused_floor(weights: dict[str, float], floor: float, min_weight: float) -> dict[str, float]:
    """`weights` with the fused head raised to `floor`, the other heads' shares above `min_weight`
    scaled down so the weights still sum to 1 (unchanged when the fused head is above it or absent)."""
    if FUSED_HEAD not in weights or weights[FUSED_HEAD] >= floor:
        return weights
    others = [h for h in weights if h != FUSED_HEAD]
    above = sum(weights[h] - min_weight for h in others)
    scale = (1.0 - floor - min_weight * len(others)) / above if above > 0 else 0.0
    return {h: floor if h == FUSED_HEAD else min_weight + scale * (weights[h] - min_weight) for h in weights}


def _smoothed(previous: Checkpoint, current: Checkpoint, smoothing: float) -> Checkpoint:
    """Exponential moving average of the per-head losses: smoothing x previous + (1 - smoothing) x current."""
    mix = lambda a, b: {h: smoothing * a[h] + (1.0 - smoothing) * b[h] for h in b}  # noqa: E731
    return Checkpoint(train=mix(previous.train, current.train), val=mix(previous.val, current.val))


def _bounded_step(previous: Mapping[str, float], target: Mapping[str, float], max_change: float) -> dict[str, float]:
    """The point on the segment previous -> target where no head moved more than max_change (both
    sum to 1, so the result does too)."""
    largest = max(abs(target[h] - previous[h]) for h in target)
    step = 1.0 if largest <= max_change else max_change / largest
    return {h: previous[h] + step * (target[h] - previous[h]) for h in target}

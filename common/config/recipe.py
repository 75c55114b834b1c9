"""The effective training recipe of a federation, and where each of its values came from.

Layers, each overriding the one before by the same key name:
1. `TrainConfig`'s own defaults;
2. the task's defaults (`TASK_RECIPES`: the linear Cox model trains by full-batch gradient
   descent, not like the network);
3. the model preset's `train:` block (task `multimodal`);
4. the federation YAML's `train:` block.
`sts-server check-config` prints the result with the layer of every value.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .loader import describe_error, key_path
from .train import TrainConfig

# Full-batch gradient descent on the convex stratified Cox objective: FedAvg of one step per site is
# one step of pooled gradient descent (README "task linear-cox"; tests/test_fed_equivalence.py).
TASK_RECIPES: dict[str, dict[str, Any]] = {
    "multimodal": {},
    "linear-cox": {
        "optimizer": "sgd",
        "momentum": 0.0,
        "lr": 0.2,
        "schedule": "constant",
        "epochs_per_round": 1,
        "weight_decay": 0.0,
        "grad_clip": 0.0,
        "blend_mode": "off",
    },
}


# Recipe keys a task's training does not read: a federation YAML that sets one is refused.
TASK_UNUSED: dict[str, frozenset[str]] = {
    "multimodal": frozenset(),
    # full-batch steps over the whole training split: no batches, risk-set chunks, blending or AMP
    "linear-cox": frozenset(
        {
            "batch_size",
            "risk_set",
            "ties",
            "blend_mode",
            "blend_overfit_floor",
            "blend_smoothing",
            "blend_max_change",
            "blend_min_weight",
            "min_steps_per_round",
            "amp",
        }
    ),
}


@dataclass(frozen=True)
class EffectiveRecipe:
    """The recipe the sites run, with the layer each value came from ({key: source})."""

    train: TrainConfig
    sources: dict[str, str]

    def table(self, skip: Collection[str] = ()) -> list[tuple[str, Any, str]]:
        """(key, value, source) for every key of the recipe but `skip`, in TrainConfig's order."""
        return [(key, getattr(self.train, key), self.sources[key]) for key in TrainConfig.model_fields if key not in skip]


def resolve_recipe(
    task: str, preset_name: str | None, preset_train: TrainConfig | None, overrides: dict[str, Any]
) -> EffectiveRecipe:
    """Merge the layers (see the module docstring). `preset_train` is the preset's validated `train`
    block (its explicitly set keys count), `overrides` the federation YAML's `train:` mapping.
    Raises ValueError naming each bad key as `train.<key>`."""
    values: dict[str, Any] = {}
    sources = {key: "default" for key in TrainConfig.model_fields}
    layers = [(f"task {task}", TASK_RECIPES.get(task, {}))]
    if preset_train is not None:
        layers.append((f"preset {preset_name}", {k: getattr(preset_train, k) for k in preset_train.model_fields_set}))
    layers.append(("federation YAML", dict(overrides)))
    for layer, settings in layers:
        for key, value in settings.items():
            values[key] = value
            sources[key] = layer
    try:
        train = TrainConfig.model_validate(values)
    except ValidationError as err:
        raise ValueError("; ".join(f"train.{key_path(e['loc'])}: {describe_error(e)}" for e in err.errors())) from None
    return EffectiveRecipe(train, sources)

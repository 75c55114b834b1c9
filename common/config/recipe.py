"""The effective training recipe of a federation, and where each of its values came from.

Layers, each overriding the one before by the same key name:
1. `TrainConfig`'s own defaults;
2. the task's defaults (its `TaskSpec.recipe_defaults`, stsfl.common.tasks: the linear Cox model
   trains by full-batch gradient descent, not like the network);
3. the model preset's `train:` block (task `multimodal`);
4. the federation YAML's `train:` block.
`sts-server check-config` prints the result with the layer of every value.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from stsfl.common.config.loader import describe_error, key_path
from stsfl.common.config.train import TrainConfig
from stsfl.common.tasks import task_spec


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
    layers = [(f"task {task}", dict(task_spec(task).recipe_defaults))]
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

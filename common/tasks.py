"""Tasks as plug-ins: what a task is (two Protocols), which tasks there are (the registry).

A task is one folder of stsfl.tasks (the shape FLamby gives each data set): its model, its site
side (`SiteModel`: the data a site trains on and what it does with the global model) and its
server side (`ServerModel`: the schema, global statistics, initial weights and blending the
coordinator needs). The registry names each side by its import path, so the coordinator never
imports a site side (nor the client's data pipelines behind it), and the config validates the
task's name and its recipe defaults without importing either.

A task declares what it can do beyond training and evaluation (`abilities`): the site refuses a
message asking for more (e.g. DP-SGD at a site whose task has no per-sample gradients).
Adding a task: its folder, and one `register(TaskSpec(...))` line in `register_builtin_tasks`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# what a task can do beyond training and evaluation
DP_SGD = "dp-sgd"  # per-sample gradients: a site may train with privacy.dp
CLINICAL_INIT = "clinical-init"  # the clinical Cox query: the network's clinical term starts from a federated Cox fit
BLENDING = "blending"  # several heads: the coordinator's gradient-blending weights
SITE_DOCUMENTS = "site-documents"  # Grad-CAM overlays, attention maps and a validation report at the site
RIDGE_CV = "ridge-cv"  # the ridge penalty chosen by federated cross-validation (`l2_penalty: cv`)


@runtime_checkable
class SiteModel(Protocol):
    """A task's site side, built once per site and run settings (stsfl.client.federation.site_task)."""

    recipe: Any  # the TrainConfig it trains with

    def statistics(self) -> dict[str, Any]:
        """Aggregates for the statistics phase: {"counts": {"patients", "events": {endpoint: n}}, ...}."""

    def build_model(self, statistics: dict[str, Any], seed: int) -> Any:
        """The task's torch module, standardised by the federated statistics."""

    def fit(self, model: Any, statistics: dict[str, Any], window: Any, **options: Any) -> dict[str, float]:
        """Local training of `model` in place over the schedule `window`; aggregate metrics."""

    def evaluate(self, model: Any, statistics: dict[str, Any], **options: Any) -> dict[str, float]:
        """Aggregate metrics on the evaluation split (all patients at a held-out centre)."""

    def outcome_risks(self, model: Any, statistics: dict[str, Any], validation_only: bool = False) -> Any:
        """Per endpoint: log-risks, times and events (baseline and calibration queries)."""

    def patient_risks(self, model: Any, statistics: dict[str, Any], holdout: bool) -> Any:
        """Per patient: log-risks (the site's own outputs)."""

    def write_site_documents(self, model: Any, statistics: dict[str, Any], folder: Any, federation: str) -> dict[str, int]:
        """Pictures and reports written at the site; counts."""


@runtime_checkable
class ServerModel(Protocol):
    """A task's server side (stsfl.server): what the coordinator needs to know about its model."""

    def schema_json(self) -> Any:
        """The clinical schema every site encodes with ({} for a task without one)."""

    def site_counts(self, per_site: dict[str, dict]) -> dict[str, dict]: ...

    def combine_statistics(self, per_site: dict[str, dict]) -> dict[str, Any]:
        """The global statistics from the sites' replies to the statistics query."""

    def initial_arrays(self, statistics: dict[str, Any], seed: int) -> dict[str, Any]:
        """Round 1's global weights (name -> numpy array)."""

    def initial_blend_weights(self) -> dict[str, float] | None: ...

    def objective(self, pooled_loss: float | None, arrays: dict[str, Any], l2_penalty: float) -> float | None:
        """The penalised objective of a convex task (None otherwise): the round line's convergence."""

    def update_blend(self, server_round: int, blend_stats: dict[str, dict], state: dict | None) -> tuple[Any, Any]:
        """(next round's blend weights or None, new blend state)."""


@dataclass(frozen=True)
class TaskSpec:
    """One registered task: its sides by import path (`module:attribute`) and what it declares."""

    name: str
    description: str
    site: str  # a SiteModel class with `from_run(site, site_yaml, run: RunConfig)`
    server: str  # a ServerModel class taking the FederationConfig
    abilities: frozenset[str] = frozenset()
    # training-recipe defaults of the task (over TrainConfig's, under the preset's and the YAML's)
    recipe_defaults: Mapping[str, Any] = field(default_factory=dict)
    # recipe keys its training does not read: a federation YAML that sets one is refused
    recipe_unused: frozenset[str] = frozenset()
    uses_preset: bool = False  # the model preset's `train:` block is a layer of its recipe

    def can(self, ability: str) -> bool:
        return ability in self.abilities

    def load_site(self) -> type:
        return _load(self.site)

    def load_server(self) -> type:
        return _load(self.server)


def server_side(fed: Any) -> ServerModel:
    """The server side of the federation's task (`fed`: a FederationConfig)."""
    return task_spec(fed.task).load_server()(fed)


def _load(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


TASKS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    """Add (or replace) a task; returns it."""
    TASKS[spec.name] = spec
    return spec


def task_spec(name: str) -> TaskSpec:
    """The registered task `name`; a ValueError lists the registered ones."""
    if name not in TASKS:
        raise ValueError(f"task {name!r} is not registered; tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


# Full-batch gradient descent on the convex stratified Cox objective: FedAvg of one step per site is
# one step of pooled gradient descent (README "task linear-cox"; tests/test_fed_equivalence.py).
LINEAR_COX_RECIPE = {
    "optimizer": "sgd",
    "momentum": 0.0,
    "lr": 0.2,
    "schedule": "constant",
    "epochs_per_round": 1,
    "weight_decay": 0.0,
    "grad_clip": 0.0,
    "blend_mode": "off",
}
# full-batch steps over the whole training split: no batches, risk-set chunks, blending or AMP
LINEAR_COX_UNUSED = frozenset(
    {
        "batch_size",
        "risk_set",
        "ties",
        "blend_mode",
        "blend_overfit_floor",
        "blend_smoothing",
        "blend_max_change",
        "blend_min_weight",
        "blend_fused_min_weight",
        "min_steps_per_round",
        "amp",
    }
)


def register_builtin_tasks() -> None:
    register(
        TaskSpec(
            name="multimodal",
            description="multimodal Cox network over MRI, slides and clinical variables (the product)",
            site="stsfl.tasks.multimodal.site:MultimodalSite",
            server="stsfl.tasks.multimodal.server:MultimodalServer",
            abilities=frozenset({DP_SGD, CLINICAL_INIT, BLENDING, SITE_DOCUMENTS}),
            uses_preset=True,
        )
    )
    register(
        TaskSpec(
            name="linear-cox",
            description="clinical-only linear Cox model on tabular sites",
            site="stsfl.tasks.linear_cox.site:LinearCoxSite",
            server="stsfl.tasks.linear_cox.server:LinearCoxServer",
            abilities=frozenset({RIDGE_CV}),
            recipe_defaults=LINEAR_COX_RECIPE,
            recipe_unused=LINEAR_COX_UNUSED,
        )
    )


register_builtin_tasks()

"""Tasks are plug-ins (stsfl.common.tasks): a task defined here - a clinical-only MLP Cox model on
the tabular sites - is registered by name and runs a whole federation through the real ServerApp
and ClientApp without a change to the product; the registry refuses unknown names and the
abilities a task does not declare."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from inprocess_grid import InProcessGrid, run_in_process, server_identity  # noqa: F401 (fixture)

from stsfl.client.lab.tcga_brca import write_region_sites
from stsfl.common.config import ConfigError, FederationConfig, load_config
from stsfl.common.tasks import LINEAR_COX_RECIPE, LINEAR_COX_UNUSED, TASKS, TaskSpec, register, server_side, task_spec
from stsfl.tasks.linear_cox.server import LinearCoxServer, numpy_state
from stsfl.tasks.linear_cox.site import LinearCoxSite

HIDDEN = 4


class ClinicalMlp(torch.nn.Module):
    """x [B, D] -> log-risk [B, 1] through one hidden layer."""

    def __init__(self, n_features: int):
        super().__init__()
        self.hidden = torch.nn.Linear(n_features, HIDDEN)
        self.fc = torch.nn.Linear(HIDDEN, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.hidden(x)))


def build_mlp(statistics: dict, seed: int) -> ClinicalMlp:
    torch.manual_seed(seed)
    return ClinicalMlp(len(statistics["mean"]))


class MlpSite(LinearCoxSite):
    """The task's site side: the tabular site's table and training, with the MLP as its model."""

    @staticmethod
    def build_model(statistics: dict, seed: int) -> torch.nn.Module:
        return build_mlp(statistics, seed)


class MlpServer(LinearCoxServer):
    """The task's server side: the MLP's initial weights; no convex objective to show."""

    def initial_arrays(self, statistics: dict, seed: int) -> dict[str, np.ndarray]:
        return numpy_state(build_mlp(statistics, seed))

    def objective(self, pooled_loss, arrays, l2_penalty):
        return None


@pytest.fixture
def mlp_task():
    spec = register(
        TaskSpec(
            name="clinical-mlp",
            description="a clinical-only MLP Cox model (defined in a test)",
            site=f"{__name__}:MlpSite",
            server=f"{__name__}:MlpServer",
            recipe_defaults={**LINEAR_COX_RECIPE, "lr": 0.5, "epochs_per_round": 3},
            recipe_unused=LINEAR_COX_UNUSED,
        )
    )
    yield spec
    TASKS.pop(spec.name)


def test_a_task_registered_outside_the_product_runs_a_federation(mlp_task, tcga_brca_dir, tmp_path, server_identity):
    sites = {p.stem: p for p in write_region_sites(tcga_brca_dir, tmp_path / "regions", regions=[0, 1, 2])}
    config = tmp_path / "federation.yaml"
    config.write_text(
        "task: clinical-mlp\nname: mlp\nrounds: 4\nsites: [region_0, region_1, region_2]\nholdout: [region_2]\n"
        "cross_site: {enabled: false}\nsite_outputs: {enabled: false}\n"
    )
    fed = load_config(config, FederationConfig)
    assert fed.recipe.train.lr == 0.5 and fed.recipe.sources["lr"] == "task clinical-mlp"  # its own recipe defaults
    assert isinstance(server_side(fed), MlpServer)
    summary = run_in_process(InProcessGrid(sites), config, tmp_path / "results")
    with np.load(tmp_path / "results" / "model_final.npz") as final:
        assert final["hidden.weight"].shape[0] == HIDDEN  # the plug-in's model went round, not the linear one
    rounds = [json.loads(line) for line in (tmp_path / "results" / "rounds.jsonl").read_text().splitlines()]
    losses = [r["train_sites"]["region_0"]["train-loss-fused"] for r in rounds]
    assert losses[-1] < losses[0], losses
    assert 0.5 < summary["holdout_final"]["region_2"]["c-harrell-os"] <= 1.0


def test_the_registry_names_the_tasks_it_has_and_refuses_undeclared_abilities(tmp_path):
    with pytest.raises(ValueError, match="task 'no-such-task' is not registered; tasks: .*linear-cox.*multimodal"):
        task_spec("no-such-task")
    config = tmp_path / "federation.yaml"
    config.write_text("task: no-such-task\nsites: [a, b]\n")
    with pytest.raises(ConfigError, match="no-such-task"):
        load_config(config, FederationConfig)
    config.write_text("task: linear-cox\nsites: [a, b]\nclinical_init: {steps: 3}\n")
    with pytest.raises(ConfigError, match="clinical_init: task linear-cox has no clinical Cox initialisation"):
        load_config(config, FederationConfig)

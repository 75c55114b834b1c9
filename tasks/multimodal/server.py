"""Task `multimodal`, server side: the federation's clinical schema, the clinical sums and slide-feature
sums combined into the global statistics, the seeded MultimodalCoxNet, and federated gradient blending
(`BlendState` updated once per round from the pooled training / validation losses)."""

from __future__ import annotations

from typing import Any

import numpy as np

from stsfl.common.config import FederationConfig, load_config, load_preset, load_schema
from stsfl.common.config.schema import ClinicalSchema
from stsfl.tasks.linear_cox.server import LinearCoxServer, numpy_state


class MultimodalServer(LinearCoxServer):
    """Task `multimodal` (the shared parts of a server side come from the linear-cox one)."""

    def __init__(self, fed: FederationConfig):
        super().__init__(fed)
        self.bag_standardisation: tuple[np.ndarray, np.ndarray] | None = None  # slide features' (mean, std) [E]
        self.schema: ClinicalSchema = load_config(fed.schema_file, ClinicalSchema) if fed.schema_file else load_schema()
        self.preset = load_preset(fed.preset, fed.model_norm)

    def schema_json(self) -> Any:
        return self.schema.model_dump(mode="json")

    def combine_statistics(self, per_site: dict[str, dict]) -> dict[str, Any]:
        from stsfl.common.bag_stats import BagSums, combine_bag_sums
        from stsfl.common.clinical_stats import ClinicalSums, combine_clinical_sums
        from stsfl.common.wsi_encoder import check_site_encoders

        check_site_encoders(per_site, self.preset)  # before round 1, by site
        self.bag_standardisation = combine_bag_sums(
            [BagSums.from_dict(per_site[s]["wsi_bag"]) for s in self.fed.training_sites], self.preset.wsi.embed_dim
        )
        sums = [ClinicalSums.from_dict(per_site[s]["clinical"]) for s in self.fed.training_sites]
        return combine_clinical_sums(sums, self.schema).to_dict()

    def _model(self, seed: int):
        import torch

        from stsfl.common.clinical_features import clinical_dim
        from stsfl.tasks.multimodal.model import MultimodalCoxNet

        torch.manual_seed(seed)
        return MultimodalCoxNet(self.preset, clinical_dim(self.schema), len(self.schema.endpoints))

    def initial_arrays(self, statistics: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
        """The seeded model, its slide-feature standardisation from the statistics phase (buffers
        that travel with the weights, so the exported model carries them too)."""
        from stsfl.common.bag_stats import set_bag_standardisation

        model = self._model(seed)
        if self.bag_standardisation is not None:
            set_bag_standardisation(model, *self.bag_standardisation)
        checkpoint = self.preset.mri.checkpoint
        if checkpoint and "mri" in model.encoders:
            from stsfl.common.mri_net import load_mri_checkpoint

            # Only the coordinator reads the file: the sites receive the pretrained trunk as round 1's weights.
            load_mri_checkpoint(model.encoders["mri"], checkpoint)
        return numpy_state(model)

    def initial_blend_weights(self) -> dict[str, float] | None:
        """Uniform head weights for round 1: in a federation the server always fixes the weights,
        so sites never blend on their own."""
        from stsfl.common.blending import uniform_weights

        return dict(uniform_weights(self._model(0).head_names))

    def objective(self, pooled_loss: float | None, arrays: dict[str, np.ndarray], l2_penalty: float) -> float | None:
        """None: the network's objective is not convex, its training loss is on the round line already."""
        return None

    def update_blend(self, server_round: int, blend_stats: dict[str, dict], state: dict | None) -> tuple[Any, Any]:
        """Pool the sites' per-head statistics (sums and event counts add up), update the BlendState
        with this round as a checkpoint, return (weights for the next round, new state)."""
        from stsfl.common.blending import BlendState, Checkpoint, HeadLossStats

        usable = [s for s in blend_stats.values() if s and s.get("train") and s.get("val")]
        if self.fed.recipe.train.blend_mode == "off" or not usable:
            return (state or {}).get("weights"), state
        train = HeadLossStats.merge(HeadLossStats.from_dict(s["train"]) for s in usable)
        val = HeadLossStats.merge(HeadLossStats.from_dict(s["val"]) for s in usable)
        if state is None:
            blend = BlendState.for_recipe(train.loss_sums, self.fed.recipe.train)
        else:
            blend = BlendState.from_dict(state)
        weights = blend.update(server_round, Checkpoint(train=train.mean_losses(), val=val.mean_losses()))
        return dict(weights), blend.to_dict()

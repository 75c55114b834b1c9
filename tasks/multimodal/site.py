"""A hospital site of the product: MRI + WSI + clinical data, the multimodal Cox network.

Data: the site folder prepared by the pipeline (`prepare_site`: readers, checks, the content-keyed
preprocessing cache, so only the first message of a federation pays for preprocessing), encoded
with the federation's clinical statistics (`SiteDataset`). Usable patients are split once, by a
hash of patient id and run seed, into training and validation. A held-out centre evaluates on
all its usable patients.

Model and training: `MultimodalCoxNet` of the federation's preset, trained by the model layer's
`train_local` (its TrainConfig from the preset, with the round's epochs, learning rate, seed,
FedProx mu and the server's blend weights). The reply carries, besides the weights, each head's
pooled-loss statistics (`HeadLossStats`: sums and event counts, never per patient) of the
training and validation splits, from which the server computes the next blend weights.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from stsfl.client.data.clinical_encoding import encode_record
from stsfl.client.data.site_dataset import SiteDataset, site_collate
from stsfl.client.data.site_prepare import prepare_site
from stsfl.client.training.privacy import DpSgd
from stsfl.client.training.trainer import evaluate, make_loader, round_epochs, train_local
from stsfl.common.bag_stats import site_bag_sums
from stsfl.common.clinical_features import clinical_dim
from stsfl.common.clinical_stats import GlobalClinicalStats
from stsfl.common.config import ClinicalSchema, ScheduleWindow, SiteConfig, TrainConfig, load_preset
from stsfl.common.cox_newton import cox_score
from stsfl.common.messages import RunConfig
from stsfl.common.risk_group_km import MIN_GROUP_SIZE
from stsfl.common.site_metrics import DEFAULT_HORIZONS_DAYS, site_metrics
from stsfl.common.validation_split import MAX_FRACTION, MIN_SITE_EVENTS, validation_pids
from stsfl.common.wsi_encoder import site_encoder
from stsfl.tasks.multimodal.model import FUSED, MultimodalCoxNet


def _event_flags(record) -> list[bool]:
    """Per endpoint: whether the patient's event was observed [K]."""
    return [bool(o and e > 0.5) for o, e in zip(record.observed, record.event, strict=True)]


class MultimodalSite:
    """The site's prepared data and the multimodal network's local train / evaluate steps."""

    def __init__(
        self,
        site: SiteConfig,
        site_yaml: Path,
        preset: str,
        schema: ClinicalSchema,
        run_seed: int,
        validation_fraction: float,
        norm: str | None = None,
        recipe: TrainConfig | None = None,
        min_validation_events: int = MIN_SITE_EVENTS,
        max_validation_fraction: float = MAX_FRACTION,
    ):
        # The federation's recipe replaces the preset's `train:` block (None: the preset's own).
        loaded = load_preset(preset, norm)
        self.preset = loaded if recipe is None else loaded.model_copy(update={"train": recipe})
        self.schema = schema
        self.run_seed = run_seed
        self.policy = site.bad_patient_policy
        self.prepared = prepare_site(site, site_yaml, self.preset, schema=schema, progress=False)
        pids = [p.pid for p in self.prepared.patients]
        events = [sum(_event_flags(p.record)) for p in self.prepared.patients]
        validating = validation_pids(pids, events, run_seed, validation_fraction, min_validation_events, max_validation_fraction)
        self.val_pids = [p for p in pids if p in validating]
        self.train_pids = [p for p in pids if p not in validating]

    @classmethod
    def from_run(cls, site: SiteConfig, site_yaml: Path, run: RunConfig) -> MultimodalSite:
        """The site's prepared patients for the run: its preset, the federation's schema (the one every
        site encodes with), split, normalisation layers and recipe."""
        schema = ClinicalSchema.model_validate(run.schema)
        return cls(
            site,
            site_yaml,
            run.preset,
            schema,
            run.run_seed,
            run.validation_fraction,
            run.model_norm,
            run.recipe,
            run.min_site_validation_events,
            run.max_validation_fraction,
        )

    def _events(self, pids: list[str]) -> dict[str, int]:
        by_pid = {p.pid: p.record for p in self.prepared.patients}
        flags = [_event_flags(by_pid[pid]) for pid in pids]
        return {endpoint: int(sum(f[k] for f in flags)) for k, endpoint in enumerate(self.schema.endpoint_names)}

    def statistics(self) -> dict:
        """Clinical sums of the usable patients; patients and events per endpoint of the training split;
        usable patients per modality (counts only: the coverage table of the run report); the slide
        encoder's identity (the server checks the sites agree with the preset); sums over the tiles of
        the usable patients' bags (the federation's standardisation of the slide features)."""
        patients = self.prepared.patients
        modalities = {
            "mri": sum(p.mri_key is not None for p in patients),
            "wsi": sum(p.wsi_key is not None for p in patients),
            "clinical": len(patients),
        }
        return {
            "clinical": self.prepared.clinical_sums().to_dict(),
            "counts": {
                "patients": len(self.train_pids),
                "events": self._events(self.train_pids),
                "usable_patients": len(patients),
                "modalities": modalities,
            },
            "wsi_encoder": site_encoder(
                self.prepared.encoder_name, self.prepared.encoder_fingerprint, self.prepared.wsi_feature_dims
            ),
            "wsi_bag": site_bag_sums(
                (self.prepared.cache.load("wsi", p.wsi_key, ["bag"])["bag"] for p in patients if p.wsi_key is not None),
                self.preset.wsi.embed_dim,
            ).to_dict(),
        }

    def build_model(self, statistics: dict, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return MultimodalCoxNet(self.preset, clinical_dim(self.schema), len(self.schema.endpoints))

    def _loader(self, statistics: dict, pids: list[str], train: bool, seed: int):
        dataset = SiteDataset(self.prepared, GlobalClinicalStats.from_dict(statistics), train=train, pids=pids, seed=seed)
        return make_loader(dataset, self.preset.train.batch_size, site_collate(self.preset), shuffle=train, seed=seed)

    def dp_sample_rate(self) -> float:
        """DP-SGD's Poisson sampling rate: batch size / training patients."""
        return DpSgd.sample_rate(len(self.train_pids), self.preset.train.batch_size)

    @property
    def recipe(self) -> TrainConfig:
        return self.preset.train

    def fit(
        self,
        model: torch.nn.Module,
        statistics: dict,
        window: ScheduleWindow,
        seed: int = 0,
        blend_weights: dict[str, float] | None = None,
        privacy: DpSgd | None = None,
    ) -> dict[str, float]:
        """`recipe.epochs_per_round` local epochs (at least min_steps_per_round steps) from the global weights at `window` of the run's
        rate schedule, batches drawn with `seed` (DP-SGD with `privacy`); returns per-head mean
        losses and keeps the pooled statistics in `last_stats`."""
        recipe = self.recipe.model_copy(update={"seed": seed})
        global_state = {k: v.detach().clone() for k, v in model.state_dict().items()} if recipe.prox_mu > 0 else None
        val_loader = self._loader(statistics, self.val_pids, False, seed) if self.val_pids else None
        train_loader = self._loader(statistics, self.train_pids, True, seed)
        # DP-SGD spends its budget per planned epoch: a DP site runs exactly epochs_per_round.
        epochs = recipe.epochs_per_round if privacy else round_epochs(recipe, train_loader)
        result = train_local(
            model,
            train_loader,
            val_loader,
            recipe,
            global_state=global_state,
            blend_weights=blend_weights,
            keep_best=False,
            show_progress=False,
            privacy=privacy,
            epochs=epochs,
            window=window,
        )
        model.load_state_dict(result.state)
        metrics = {f"train-loss-{h}": v for h, v in result.train_stats.mean_losses().items()}
        if result.val_stats is not None:
            metrics.update({f"val-loss-{h}": v for h, v in result.val_stats.mean_losses().items()})
        self.last_stats = {
            "train": result.train_stats.to_dict(),
            "val": result.val_stats.to_dict() if result.val_stats is not None else None,
        }
        return metrics

    def clinical_cox(self, statistics: dict, beta: Sequence[Sequence[float]]) -> dict[str, dict]:
        """Per endpoint, the Breslow score and information of the training split's encoded clinical
        vectors at coefficients beta [K][D] (stsfl.common.cox_newton). An endpoint with fewer than
        MIN_GROUP_SIZE events sends an empty part: with one event the score is that patient's row."""
        stats = GlobalClinicalStats.from_dict(statistics)
        by_pid = {p.pid: p.record for p in self.prepared.patients}
        records = [by_pid[pid] for pid in self.train_pids]
        dim = clinical_dim(self.schema)
        x = np.stack([encode_record(r, stats, self.schema) for r in records]) if records else np.zeros((0, dim))
        parts = {}
        for k, endpoint in enumerate(self.schema.endpoint_names):
            observed = np.array([bool(r.observed[k]) for r in records], dtype=bool)
            time = np.array([r.time[k] for r in records], dtype=float)[observed]
            event = np.array([r.event[k] for r in records], dtype=float)[observed]
            part = cox_score(x[observed], time, event, np.asarray(beta[k], dtype=float))
            if part.events < MIN_GROUP_SIZE:
                part = cox_score(np.zeros((0, dim)), [], [], np.zeros(dim))
            parts[endpoint] = part.to_dict()
        return parts

    def outcome_risks(self, model: torch.nn.Module, statistics: dict, validation_only: bool = False):
        """The fused head's log-risks with the outcomes of every usable patient (the baseline hazard;
        a held-out centre's calibration), or of the validation split (a training site's calibration)."""
        from stsfl.client.prediction.baseline_site import SiteRisks, competing_map

        pids = self.val_pids if validation_only else [p.pid for p in self.prepared.patients]
        result = evaluate(model, self._loader(statistics, pids, False, self.run_seed), self.preset.train.ties)
        return SiteRisks(
            list(self.schema.endpoint_names),
            result.time,
            result.event,
            result.observed,
            result.risks[FUSED],
            self.prepared.encoder_fingerprint,
            competing_map(self.schema),
        )

    def patient_risks(self, model: torch.nn.Module, statistics: dict, holdout: bool):
        """The fused head's log-risks of every usable patient, with its split (a held-out centre's
        patients are `external`) and modalities: the site's risk_scores.csv (stays at the site)."""
        from stsfl.client.outputs.site_outputs import PatientRisks

        patients = self.prepared.patients
        endpoints = list(self.schema.endpoint_names)
        if not patients:
            return PatientRisks([], [], [], endpoints, np.zeros((0, len(endpoints))))
        result = evaluate(
            model, self._loader(statistics, [p.pid for p in patients], False, self.run_seed), self.preset.train.ties
        )
        by_pid = {p.pid: p for p in patients}
        validation = set(self.val_pids)
        splits = ["external" if holdout else "validation" if pid in validation else "train" for pid in result.pids]
        modalities = [
            "+".join(
                [m for m, key in (("mri", by_pid[pid].mri_key), ("wsi", by_pid[pid].wsi_key)) if key is not None] + ["clinical"]
            )
            for pid in result.pids
        ]
        return PatientRisks(list(result.pids), splits, modalities, endpoints, result.risks[FUSED])

    def write_site_documents(self, model: torch.nn.Module, statistics: dict, folder: Path, federation: str) -> dict[str, int]:
        """Into `folder` (at the site): the validation report and a Grad-CAM overlay (first endpoint,
        fused head) of every usable patient with an MRI, under gradcam/ (emptied first, so the folder
        holds this run's overlays only), and the slide attention map of every patient with a slide under
        attention/ (emptied likewise). Returns the counts {"gradcams", "attention_maps", "problems"}."""
        from stsfl.client.data.site_report import write_validation_report
        from stsfl.client.outputs.gradcam import site_gradcams
        from stsfl.client.outputs.site_outputs import GRADCAM_DIR
        from stsfl.client.outputs.wsi_attention import ATTENTION_DIR, write_attention_maps

        problems = write_validation_report(
            self.prepared, self.policy, folder, f"Site {self.prepared.name}, federation {federation}: validation report"
        )
        gradcam_dir = folder / GRADCAM_DIR
        shutil.rmtree(gradcam_dir, ignore_errors=True)
        gradcam_dir.mkdir(parents=True)
        with_mri = [p.pid for p in self.prepared.patients if p.mri_key is not None]
        overlays = []
        if with_mri and "mri" in model.modalities:
            overlays = site_gradcams(
                model,
                self.prepared,
                GlobalClinicalStats.from_dict(statistics),
                with_mri,
                gradcam_dir,
                batch_size=self.preset.train.batch_size,
            )
        maps = []
        if "wsi" in model.modalities:
            shutil.rmtree(folder / ATTENTION_DIR, ignore_errors=True)
            maps = write_attention_maps(model, self.prepared, folder / ATTENTION_DIR)
        return {"gradcams": len(overlays), "attention_maps": len(maps), "problems": problems}

    def evaluate(
        self, model: torch.nn.Module, statistics: dict, holdout: bool, horizons: Sequence[float] = DEFAULT_HORIZONS_DAYS
    ) -> dict[str, float]:
        """Held-out centre: all usable patients; training site: its validation split. Per endpoint,
        from the fused head: the aggregate metrics of `stsfl.common.site_metrics` (Harrell's and
        Uno's C, td-AUC at `horizons`, IBS, events), Kaplan-Meier of the predicted low / high risk
        halves on a fixed grid (stsfl.common.risk_group_km, the report's panels); for training sites
        also the fused validation loss, summed over endpoints and per endpoint (`val-loss-fused-os`: mean
        per event of that endpoint's partial likelihood over the validation split, endpoints with events)."""
        from stsfl.common.risk_group_km import risk_group_km

        pids = [p.pid for p in self.prepared.patients] if holdout else self.val_pids
        metrics: dict[str, float] = {"eval-patients": float(len(pids))}
        if not pids:
            return metrics
        result = evaluate(model, self._loader(statistics, pids, False, self.run_seed), self.preset.train.ties)
        if not holdout:
            metrics["val-loss-fused"] = result.stats.mean_losses()[FUSED]
            sums, events = result.stats.loss_sums[FUSED], result.stats.events[FUSED]
            metrics.update({f"val-loss-fused-{e}": s / n for e, s, n in zip(self.schema.endpoint_names, sums, events) if n > 0})
        per_endpoint = {}
        for k, endpoint in enumerate(self.schema.endpoint_names):
            observed = result.observed[:, k].astype(bool)
            time, event, risk = result.time[observed, k], result.event[observed, k], result.risks[FUSED][observed, k]
            per_endpoint[endpoint] = (time, event, risk)
            if event.sum() > 0 and observed.sum() > 1:
                metrics.update(risk_group_km(endpoint, time, event, risk))
        metrics.update(site_metrics(per_endpoint, horizons))
        return metrics

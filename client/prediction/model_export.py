"""A model file from a network trained outside a federation (pooled or single-site training).

The baseline hazard is computed exactly as in the federation's baseline phase: every site bins
its own events and risk sums (`baseline_site.baseline_reply`) and the bins are combined
(`stsfl.common.baseline_document`), so a pooled benchmark and a federation export the same kind
of file. `site_risks` scores a prepared site with a network (the fused head's log-risks).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from stsfl.client.data.site_dataset import SiteDataset, site_collate
from stsfl.client.data.site_prepare import PreparedSite
from stsfl.client.prediction.baseline_site import SiteRisks, baseline_reply, competing_map
from stsfl.client.training.trainer import evaluate, make_loader
from stsfl.common.baseline_document import baseline_document
from stsfl.common.baseline_hazard import DAYS_PER_YEAR
from stsfl.common.batch import MODALITIES
from stsfl.common.clinical_stats import GlobalClinicalStats
from stsfl.common.config import ClinicalSchema, ModelPreset, PredictionConfig
from stsfl.common.model_file import ExportedModel, save_model_file
from stsfl.tasks.multimodal.model import FUSED


def site_risks(
    net: torch.nn.Module,
    prepared: PreparedSite,
    stats: GlobalClinicalStats,
    pids: Sequence[str] | None = None,
    batch_size: int = 16,
) -> tuple[list[str], SiteRisks]:
    """(patient ids, their outcomes and fused log-risks) of `pids` (default: every usable patient)."""
    dataset = SiteDataset(prepared, stats, pids=list(pids) if pids is not None else None)
    result = evaluate(net, make_loader(dataset, batch_size, site_collate(prepared.preset), shuffle=False))
    risks = SiteRisks(
        list(prepared.schema.endpoint_names),
        result.time,
        result.event,
        result.observed,
        result.risks[FUSED],
        prepared.encoder_fingerprint,
        competing_map(prepared.schema),
    )
    return result.pids, risks


def export_local_model(
    path: Path,
    net: torch.nn.Module,
    preset: ModelPreset,
    schema: ClinicalSchema,
    stats: GlobalClinicalStats,
    sites: dict[str, tuple[PreparedSite, Sequence[str] | None]],
    prediction: PredictionConfig = PredictionConfig(),  # noqa: B008 - a frozen config object, never mutated
    source: dict | None = None,
) -> ExportedModel:
    """Bin each site's patients (`sites`: name -> (prepared site, patient ids or None = all)),
    combine, and write the model file; returns what was written."""
    grid = {"bin_days": prediction.grid.bin_days, "max_days": prediction.grid.max_years * DAYS_PER_YEAR}
    replies = {name: baseline_reply(site_risks(net, prepared, stats, pids)[1], grid) for name, (prepared, pids) in sites.items()}
    fingerprints = {r["encoder_fingerprint"] for r in replies.values() if r["encoder_fingerprint"]}
    model = ExportedModel(
        arrays={k: v.detach().cpu().numpy() for k, v in net.state_dict().items()},
        preset=preset,
        schema=schema,
        statistics=stats.to_dict(),
        baseline=baseline_document(replies, grid, model_round=0),
        horizons_years=list(prediction.horizons_years),
        modalities=list(getattr(net, "modalities", MODALITIES)),
        encoder_fingerprint=next(iter(fingerprints), None),
        source=source or {"training": "local"},
    )
    save_model_file(path, model)
    return model

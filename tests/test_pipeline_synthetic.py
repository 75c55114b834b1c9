"""End to end on the tiny synthetic cohort (`stsfl synth --tiny`): every centre's files go through
the site pipeline, the federated clinical statistics, the DataLoader and one training step of the
MultimodalCoxNet."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from stsfl.client.data.site_dataset import SiteDataset, site_collate
from stsfl.client.data.site_prepare import prepare_site
from stsfl.client.lab.synthetic import generate_cohort, load_synth_config
from stsfl.common.clinical_features import clinical_dim
from stsfl.common.clinical_stats import ClinicalSums, combine_clinical_sums
from stsfl.common.config import SiteConfig, load_config, load_preset
from stsfl.common.head_losses import blended_loss, head_losses
from stsfl.tasks.multimodal.model import MultimodalCoxNet

PRESET = load_preset("cpu-small")


@pytest.fixture(scope="module")
def prepared_centres(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "cohort"
    generate_cohort(load_synth_config(tiny=True), out, show_progress=False)
    sites = []
    for site_yaml in sorted(out.glob("*/site.yaml")):
        site = load_config(site_yaml, SiteConfig)
        sites.append((site_yaml, prepare_site(site, site_yaml, PRESET, cache_dir=out / "cache" / site.name, progress=False)))
    return sites


def test_every_synthetic_patient_is_usable_with_the_modalities_it_has(prepared_centres):
    assert len(prepared_centres) == 3
    for site_yaml, prepared in prepared_centres:
        assert [p for p in prepared.problems if p.severity == "error"] == []
        table = pd.read_csv(site_yaml.parent / "clinical.csv", dtype=str)
        assert {p.pid for p in prepared.patients} == set(table["patient_id"])
        with_mri = {d.name for d in (site_yaml.parent / "mri").iterdir()}
        with_wsi = {f.name.split(".")[0] for f in (site_yaml.parent / "wsi").iterdir()}
        assert {p.pid for p in prepared.patients if p.mri_key} == with_mri
        assert {p.pid for p in prepared.patients if p.wsi_key} == with_wsi
    # center_1 lacks some slides; center_2 has T2 on an oblique grid with the mask on T2
    assert any(p.wsi_key is None for p in prepared_centres[1][1].patients)


def test_federated_statistics_feed_a_training_step(prepared_centres):
    schema = prepared_centres[0][1].schema
    wire = [prepared.clinical_sums().to_dict() for _, prepared in prepared_centres]
    stats = combine_clinical_sums([ClinicalSums.from_dict(s) for s in wire], schema)
    assert stats.n_patients == sum(len(p.patients) for _, p in prepared_centres)
    _, centre = prepared_centres[2]
    loader = DataLoader(SiteDataset(centre, stats, train=True), batch_size=6, collate_fn=site_collate(PRESET))
    batch = next(iter(loader))
    assert batch.mri.shape == (6, 2, *PRESET.mri.input_size) and batch.wsi.shape[2] == PRESET.wsi.embed_dim
    assert batch.clinical.shape == (6, clinical_dim(schema))
    torch.manual_seed(0)
    net = MultimodalCoxNet(PRESET, clinical_dim(schema), len(schema.endpoints))
    weights = {head: 1.0 for head in net.head_names}
    loss = blended_loss(head_losses(net(batch), batch), weights)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)

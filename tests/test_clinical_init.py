"""The network starts where a clinical Cox model ends: Newton steps from site aggregates reach
lifelines' stratified Cox fit, and the initialisation phase puts that fit into the fused head; after
the last round, each endpoint keeps the share of the network's part that the validation prefers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from inprocess_grid import InProcessGrid, run_in_process, server_identity  # noqa: F401 (fixture)
from lifelines import CoxPHFitter
from model_fixtures import N_CLINICAL, N_ENDPOINTS, make_batch, tiny_preset
from site_builder import write_csv

from stsfl.client.data.clinical_encoding import encode_record
from stsfl.client.federation.site_task import SiteTask
from stsfl.client.lab.synthetic import generate_cohort, load_synth_config
from stsfl.common.clinical_features import clinical_feature_names, feature_sources
from stsfl.common.clinical_stats import GlobalClinicalStats
from stsfl.common.config import FederationConfig, load_preset, load_schema, without_n4
from stsfl.common.cox_newton import CoxScore, cox_score, newton_step
from stsfl.common.params import load_arrays, numpy_to_arrays
from stsfl.common.tasks import server_side
from stsfl.server.federation.checkpoint import load_checkpoint
from stsfl.server.orchestrator import Federation
from stsfl.server.phases.clinical_init_phase import run_clinical_init
from stsfl.server.phases.network_share import choose_shares, with_shares
from stsfl.server.phases.statistics_phase import run_statistics_phase
from stsfl.server.reports.report import build_report
from stsfl.tasks.multimodal.model import FUSED, MultimodalCoxNet


def _strata(rng, sizes=(150, 120), beta=(0.6, -0.4, 0.3), ties=False):
    out = []
    for n in sizes:
        x = rng.normal(size=(n, len(beta)))
        t = rng.exponential(np.exp(-x @ np.array(beta)))
        c = rng.exponential(2.0, size=n)
        time = np.minimum(t, c)
        out.append((x, np.round(time, 1) if ties else time, (t <= c).astype(float)))
    return out


def test_newton_steps_from_site_parts_reach_the_stratified_fit():
    parts = _strata(np.random.default_rng(0))
    beta = np.zeros(3)
    for _ in range(6):
        beta = newton_step(CoxScore.total(cox_score(x, t, e, beta) for x, t, e in parts), beta, 0.0)
    frame = pd.concat(
        pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "T": t, "E": e, "site": k}) for k, (x, t, e) in enumerate(parts)
    )
    reference = CoxPHFitter().fit(frame, "T", "E", strata=["site"]).params_.to_numpy()
    np.testing.assert_allclose(beta, reference, atol=1e-4)


def test_tied_times_follow_breslow():
    x, time, event = _strata(np.random.default_rng(1), sizes=(60,), ties=True)[0]
    beta = np.array([0.3, -0.2, 0.1])
    got = cox_score(x, time, event, beta)
    eta = x @ beta
    loglik, score = 0.0, np.zeros(3)
    for i in np.flatnonzero(event > 0.5):  # Breslow by brute force: the risk set holds every tie
        at_risk = time >= time[i]
        w = np.exp(eta[at_risk])
        loglik += eta[i] - np.log(w.sum())
        score += x[i] - (w[:, None] * x[at_risk]).sum(0) / w.sum()
    assert got.loglik == pytest.approx(loglik) and np.allclose(got.score, score)
    assert len(np.unique(time[event > 0.5])) < int(event.sum())  # the data has ties


def _clinical_site(root, name: str, n: int, seed: int):
    """A site of clinical rows only (no MRI, no slides) whose OS hazard rises with age and grade."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        age, grade = rng.uniform(30, 85), int(rng.integers(1, 4))
        t = rng.exponential(3000 * np.exp(-(0.04 * (age - 60) + 0.7 * (grade - 2))))
        c = rng.uniform(300, 4000)
        rows.append(
            {
                "patient_id": f"{name}{i}",
                "age": f"{age:.1f}",
                "sex": ["female", "male"][int(rng.integers(2))],
                "tumour_size": f"{rng.uniform(2, 20):.1f}",
                "tumour_volume": f"{rng.uniform(5, 900):.1f}",
                "depth": ["superficial", "deep"][int(rng.integers(2))],
                "grade": str(grade),
                "histology": "ups",
                "location": "lower_extremity",
                "neoadjuvant_chemo": str(int(rng.integers(2))),
                "metastasis_at_presentation": "0",
                "radiotherapy": "preoperative",
                "os_time": f"{min(t, c):.0f}",
                "os_event": str(int(t <= c)),
                "dm_time": f"{c:.0f}",
                "dm_event": "0",
                "lr_time": f"{c:.0f}",
                "lr_event": "0",
            }
        )
    folder = root / name
    folder.mkdir()
    write_csv(folder / "clinical.csv", rows)
    site_yaml = folder / "site.yaml"
    site_yaml.write_text(yaml.safe_dump({"name": name, "root": ".", "cache_dir": "cache"}))
    return site_yaml, pd.DataFrame(rows)


def test_the_phase_starts_the_fused_head_at_the_federated_clinical_cox_fit(tmp_path, server_identity):
    sites, frames = {}, []
    for k, (name, n) in enumerate((("a", 70), ("b", 60))):
        sites[name], frame = _clinical_site(tmp_path, name, n, seed=k)
        frames.append(frame.assign(site=name))
    fed = FederationConfig(sites=list(sites), validation_fraction=0.0, clinical_init={"steps": 6, "l2_penalty": 0.0})
    run = Federation(
        InProcessGrid(sites), fed, tmp_path / "federation.yaml", tmp_path / "results", server_side(fed), log=lambda _: None
    )
    run.ctx.messenger.sites.wait_for(fed.sites, 60, 60)
    state = run_statistics_phase(run.ctx)
    run_clinical_init(run.ctx, state)
    assert not state.global_arrays["fused_head.weight"].any() and not state.global_arrays["fused_head.bias"].any()
    beta = state.global_arrays["clinical_linear.weight"][0]  # OS
    assert state.global_arrays["clinical_linear.weight"][1].tolist() == [0.0] * len(beta)  # DM: no events
    # The same model by lifelines, on the vectors the sites encode (the federation's statistics).
    names = clinical_feature_names(load_schema())
    x = np.concatenate([_encoded(SiteTask.from_node_config(s, str(p)), run, state) for s, p in sites.items()])
    # One-hot groups sum to a constant, which a Cox model cannot see: lifelines gets a full-rank
    # subset of the columns, and the two fits are compared by their (centred) linear predictors.
    kept = []
    for j in range(x.shape[1]):
        design = np.column_stack([np.ones(len(x)), x[:, kept + [j]]])
        if np.linalg.matrix_rank(design) == len(kept) + 2:
            kept.append(j)
    pooled = pd.concat(frames)
    data = pd.DataFrame(x[:, kept], columns=[names[j] for j in kept]).assign(
        T=pooled["os_time"].astype(float).to_numpy(), E=pooled["os_event"].astype(int).to_numpy(), site=pooled["site"].to_numpy()
    )
    reference = x[:, kept] @ CoxPHFitter().fit(data, "T", "E", strata=["site"]).params_.to_numpy()
    ours = x @ beta
    np.testing.assert_allclose(ours - ours.mean(), reference - reference.mean(), atol=2e-3)
    assert np.std(ours) > 0.3  # age and grade carry the hazard: the fit is not the zero start


def _encoded(task: SiteTask, run: Federation, state) -> np.ndarray:
    """The site's patients' clinical vectors [N, C] under the federation's statistics, in CSV order."""
    impl = task._impl(run.ctx.run_config())
    stats = GlobalClinicalStats.from_dict(state.meta["statistics"])
    return np.stack([encode_record(p.record, stats, impl.schema) for p in impl.prepared.patients])


def test_each_endpoint_keeps_the_share_with_the_lowest_validation_loss_pooled_by_events_given_enough_of_them():
    def site(loss: float, events: float, endpoint: str = "os") -> dict[str, float]:
        return {f"val-loss-fused-{endpoint}": loss, f"eval-events-{endpoint}": events}

    by_share = {
        0.0: {"a": site(2.0, 30) | site(1.2, 5, "dm"), "b": site(2.0, 10)},
        0.5: {"a": site(2.2, 30) | site(1.1, 5, "dm"), "b": site(1.0, 10)},
        1.0: {"a": site(3.0, 30) | site(1.0, 5, "dm"), "b": site(0.5, 10), "c": site(0.1, 90)},
    }
    choice = choose_shares(by_share, ["os", "dm", "lr"])
    # os by events: 2.0, 1.9, 2.375 (a plain mean over the sites would prefer share 1: 1.75);
    # site c did not answer every evaluation and is left out of all of them
    assert choice["os"]["share"] == 0.5 and choice["os"]["events"] == 40.0
    assert choice["os"]["validation_loss"] == {"0.0": 2.0, "0.5": 1.9, "1.0": 2.375}
    assert choice["dm"]["share"] == 1.0
    assert choice["lr"] == {"share": 1.0, "validation_loss": {"0.0": None, "0.5": None, "1.0": None}, "events": 0}
    assert choose_shares(by_share, ["os"], min_events=41)["os"]["share"] == 1.0, "40 events are too few for 41"
    tie = {0.0: {"a": site(1.0, 5)}, 1.0: {"a": site(1.0, 5)}}
    assert choose_shares(tie, ["os"])["os"]["share"] == 1.0, "a tie keeps the network as trained"


def test_a_shared_fused_row_moves_its_endpoint_from_the_clinical_cox_log_risk_to_the_network():
    preset = tiny_preset()
    torch.manual_seed(0)
    model = MultimodalCoxNet(preset, N_CLINICAL, N_ENDPOINTS).eval()
    arrays = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    arrays["clinical_linear.weight"] = np.random.default_rng(0).normal(size=(N_ENDPOINTS, N_CLINICAL)).astype(np.float32)
    batch = make_batch(6, preset)
    with torch.no_grad():
        load_arrays(model, numpy_to_arrays(arrays))
        network = model(batch)[FUSED]
        clinical = model.clinical_linear(batch.clinical)
        load_arrays(model, numpy_to_arrays(with_shares(arrays, [1.0, 0.0])))
        zero = model(batch)[FUSED]
        load_arrays(model, numpy_to_arrays(with_shares(arrays, [1.0, 0.25])))
        quarter = model(batch)[FUSED]
    torch.testing.assert_close(zero[:, 1], clinical[:, 1])
    torch.testing.assert_close(quarter[:, 1], clinical[:, 1] + 0.25 * (network[:, 1] - clinical[:, 1]))
    torch.testing.assert_close(zero[:, 0], network[:, 0])
    assert not torch.allclose(network[:, 1], clinical[:, 1])
    assert arrays["fused_head.weight"][1].any(), "the caller's arrays are left as they were"


def _share_run(tmp_path, sites: dict, name: str, shares: list[float]) -> tuple[dict, dict, dict]:
    """(summary, kept model, the selected network before the shares) of a 2-round run whose rate is
    far too high: the network ends worse than the clinical Cox model it started from."""
    config = tmp_path / f"{name}.yaml"
    body = {
        "name": name,
        "sites": list(sites),
        "holdout": ["c"],
        "rounds": 2,
        "validation_fraction": 0.3,
        "train": {"lr": 20.0, "epochs_per_round": 1, "min_steps_per_round": 4},
        "selection": {"min_validation_events": 5, "network_shares": shares},
        "cross_site": {"enabled": False},
        "prediction": {"baseline": False},
        "site_outputs": {"enabled": False},
    }
    config.write_text(yaml.safe_dump(body))
    summary = run_in_process(InProcessGrid(sites), config, tmp_path / name)
    with np.load(tmp_path / name / "model_selected.npz") as kept:
        return summary, {k: kept[k] for k in kept.files}, load_checkpoint(tmp_path / name).best_arrays


def test_a_network_worse_than_its_clinical_start_on_validation_gives_way_for_that_endpoint(tmp_path, server_identity):
    sites = {name: _clinical_site(tmp_path, name, n, seed=k)[0] for k, (name, n) in enumerate((("a", 70), ("b", 60), ("c", 50)))}
    summary, kept, selected = _share_run(tmp_path, sites, "either", [0.0, 1.0])
    os_choice = summary["network_share"]["os"]
    assert os_choice["share"] == 0.0 and os_choice["validation_loss"]["1.0"] > os_choice["validation_loss"]["0.0"]
    assert not kept["fused_head.weight"][0].any() and not kept["fused_head.bias"][0].any()
    assert kept["clinical_linear.weight"][0].any()
    assert summary["network_share"]["dm"]["share"] == 1.0  # no DM events: nothing to compare
    np.testing.assert_array_equal(kept["fused_head.weight"][1], selected["fused_head.weight"][1])
    # the held-out centre sees the kept model: on OS exactly the clinical Cox model
    held_out, start = summary["holdout_selected"]["c"], summary["holdout_start"]["c"]
    assert held_out["c-harrell-os"] == pytest.approx(start["c-harrell-os"])
    assert "share of the log-risk</td><td>dm 1, lr 1, os 0 (0: the linear Cox" in build_report(tmp_path / "either").read_text()

    summary, kept, selected = _share_run(tmp_path, sites, "grid", [0.0, 0.25, 0.5, 0.75, 1.0])
    os_choice = summary["network_share"]["os"]
    losses = {float(s): v for s, v in os_choice["validation_loss"].items()}
    assert len(losses) == 5 and os_choice["share"] == min(losses, key=losses.get) < 1.0
    np.testing.assert_allclose(kept["fused_head.weight"][0], os_choice["share"] * selected["fused_head.weight"][0], rtol=1e-6)

    summary, kept, selected = _share_run(tmp_path, sites, "as-trained", [1.0])
    assert summary["network_share"] is None
    np.testing.assert_array_equal(kept["fused_head.weight"], selected["fused_head.weight"])
    assert summary["holdout_selected"]["c"]["c-harrell-os"] != pytest.approx(start["c-harrell-os"])


def _init_only(tmp_path, cohort, tag: str, schema_file=None):
    """The statistics and clinical_init phases of a federation over the cohort's centres (l2 0.1)."""
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump(without_n4(load_preset("cpu-small")).model_dump(mode="json")))
    sites = {}
    for site_yaml in sorted(cohort.glob("*/site.yaml")):
        body = yaml.safe_load(site_yaml.read_text()) | ({"schema_file": str(schema_file)} if schema_file else {})
        sites[site_yaml.parent.name] = tmp_path / f"{site_yaml.parent.name}-{tag}.yaml"
        sites[site_yaml.parent.name].write_text(yaml.safe_dump(body))
    fed = FederationConfig(
        sites=list(sites),
        preset=str(preset),
        schema_file=schema_file,
        validation_fraction=0.0,
        clinical_init={"steps": 4, "l2_penalty": 0.1},
    )
    run = Federation(InProcessGrid(sites), fed, tmp_path / f"{tag}.yaml", tmp_path / tag, server_side(fed), log=lambda _: None)
    run.ctx.messenger.sites.wait_for(fed.sites, 120, 120)
    state = run_statistics_phase(run.ctx)
    run_clinical_init(run.ctx, state)
    return state


def test_with_mri_radiomics_the_start_uses_them_and_the_comparator_is_the_clinical_only_fit(tmp_path, server_identity):
    cohort = tmp_path / "cohort"
    generate_cohort(load_synth_config(tiny=True).model_copy(update={"workers": 1}), cohort, show_progress=False)
    schema = load_schema()
    radiomics = np.array([source == "mri" for source in feature_sources(schema)])
    state = _init_only(tmp_path, cohort, "with")
    start = state.global_arrays["clinical_linear.weight"]
    clinical = np.asarray(state.meta["clinical_init"]["clinical_only"]["beta"])
    assert np.abs(start[:, radiomics]).max() > 0.05, "the start uses the radiomics"
    assert not clinical[:, radiomics].any() and np.abs(clinical).max() > 0.05
    # the comparator is what a federation whose schema has no radiomics fits on the same patients
    table_only = tmp_path / "schema-table.yaml"
    table_only.write_text(yaml.safe_dump(schema.model_copy(update={"variables": schema.table_variables}).model_dump(mode="json")))
    without = _init_only(tmp_path, cohort, "without", table_only)
    assert "clinical_only" not in without.meta["clinical_init"]
    np.testing.assert_allclose(clinical[:, ~radiomics], without.global_arrays["clinical_linear.weight"], atol=1e-5)

"""`l2_penalty: cv` (task linear-cox, TCGA-BRCA regions as sites, real ServerApp and ClientApp in
one process): before round 1 the federation chooses its ridge penalty by federated
cross-validation; each fold's fit is the pooled site-stratified ridge Cox fit of the training rows
without the fold, and the cross-validated partial likelihood matches one computed here on the
pooled rows with scipy's optimiser; the rounds then train with the chosen penalty."""

from __future__ import annotations

import json

import numpy as np
import pytest
from inprocess_grid import InProcessGrid, run_in_process, server_identity  # noqa: F401 (fixture)
from scipy.optimize import minimize

from stsfl.client.lab.tcga_brca import write_region_sites
from stsfl.common.config import ConfigError, FederationConfig, load_config
from stsfl.common.cox_newton import cox_score
from stsfl.common.moments import combine_moments
from stsfl.common.validation_split import fold_of
from stsfl.tasks.linear_cox.model import build_linear_cox
from stsfl.tasks.linear_cox.site import LinearCoxSite

GRID, FOLDS, SEED = [0.003, 0.03, 0.3, 3.0], 3, 0


def _pooled_cvpl(yamls, l2: float) -> float:
    """The cross-validated partial log-likelihood of `l2`, fitted on the pooled rows (each site a stratum)."""
    sites = [LinearCoxSite(p.parent / p.stem / "clinical.csv", SEED) for p in yamls]
    statistics = combine_moments([s.statistics()["moments"] for s in sites])
    strata = []
    for s in sites:
        x = LinearCoxSite._standardise(s.train, statistics).double().numpy()
        fold = np.array([fold_of(p, SEED, FOLDS) for p in s.train_pids])
        strata.append((x, s.train.time.double().numpy(), s.train.event.double().numpy(), fold))
    total = 0.0
    for k in range(FOLDS):
        kept = [(x[f != k], t[f != k], e[f != k]) for x, t, e, f in strata]
        events = sum(int(e.sum()) for _, _, e in kept)

        def objective(beta, kept=kept, events=events):
            parts = [cox_score(x, t, e, beta) for x, t, e in kept]
            value = -sum(p.loglik for p in parts) / events + l2 / 2 * beta @ beta
            return value, -sum(p.score for p in parts) / events + l2 * beta

        beta = minimize(objective, np.zeros(strata[0][0].shape[1]), jac=True, method="L-BFGS-B", tol=1e-12).x
        total += sum(
            cox_score(x, t, e, beta).loglik - cox_score(x[f != k], t[f != k], e[f != k], beta).loglik for x, t, e, f in strata
        )
    return total


def _run(yamls, tmp_path, rounds: int, newton_steps: int) -> tuple[dict, dict]:
    """A linear-cox federation of the region sites with `l2_penalty: cv` -> (summary, ridge_cv.json)."""
    config = tmp_path / "federation.yaml"
    config.write_text(
        f"task: linear-cox\nname: ridge-cv\nrounds: {rounds}\nsites: [region_0, region_1, region_2]\nl2_penalty: cv\n"
        f"ridge_cv: {{grid: {GRID}, folds: {FOLDS}, newton_steps: {newton_steps}}}\n"
        "cross_site: {enabled: false}\nsite_outputs: {enabled: false}\nprediction: {baseline: false}\n"
    )
    summary = run_in_process(InProcessGrid({p.stem: p for p in yamls}), config, tmp_path / "results")
    return summary, json.loads((tmp_path / "results" / "ridge_cv.json").read_text())


def test_the_federation_chooses_its_ridge_penalty_by_cross_validation(tcga_brca_dir, tmp_path, server_identity):
    yamls = write_region_sites(tcga_brca_dir, tmp_path / "regions", regions=[0, 1, 2])
    summary, document = _run(yamls, tmp_path, rounds=2, newton_steps=8)
    cvpl = document["cvpl"]
    assert document["grid"] == GRID and document["chosen"] == GRID[int(np.argmax(cvpl))]
    assert max(cvpl) - min(cvpl) > 1.0, "the penalties must be told apart"
    for l2, federated in zip(GRID, cvpl):
        assert federated == pytest.approx(_pooled_cvpl(yamls, l2), abs=1e-3)
    assert summary["l2_penalty"] == document["chosen"]
    assert (tmp_path / "results" / "ridge_cv.png").stat().st_size > 0
    # round 1's objective carries the chosen penalty: pooled loss + l2/2 ||beta||^2 of the initial model
    first = json.loads((tmp_path / "results" / "rounds.jsonl").read_text().splitlines()[0])
    pre_loss = sum(m["train-loss-fused-pre"] * m["num-events"] for m in first["train_sites"].values())
    pre_loss /= sum(m["num-events"] for m in first["train_sites"].values())
    features = len(json.loads((tmp_path / "results" / "statistics.json").read_text())["global"]["mean"])
    start = build_linear_cox(features, SEED).fc.weight.detach().double().numpy()
    assert first["objective"] == pytest.approx(pre_loss + document["chosen"] / 2 * float((start**2).sum()), rel=1e-6)


def test_cross_validating_the_penalty_is_a_linear_cox_option(tmp_path):
    config = tmp_path / "federation.yaml"
    config.write_text("sites: [a, b]\nl2_penalty: cv\n")
    with pytest.raises(ConfigError, match="l2_penalty: cv: task multimodal cannot choose its ridge penalty"):
        load_config(config, FederationConfig)
    config.write_text("task: linear-cox\nsites: [a, b]\nl2_penalty: cv\nridge_cv: {folds: 1}\n")
    with pytest.raises(ConfigError, match="ridge_cv.folds"):
        load_config(config, FederationConfig)


def test_a_site_too_small_for_the_folds_sits_the_cross_validation_out(tcga_brca_dir, tmp_path, server_identity, capsys):
    yamls = write_region_sites(tcga_brca_dir, tmp_path / "regions", regions=[0, 1, 2])
    small = yamls[2].parent / "region_2" / "clinical.csv"
    small.write_text("".join(small.read_text().splitlines(keepends=True)[:25]))  # 24 patients: folds of ~8
    summary, document = _run(yamls, tmp_path, rounds=1, newton_steps=4)
    assert document["sites"] == ["region_0", "region_1"]
    assert set(document["declined"]) == {"region_2"} and "fewer than 10" in document["declined"]["region_2"]
    assert "ridge cross-validation without site region_2" in capsys.readouterr().out
    rounds = json.loads((tmp_path / "results" / "rounds.jsonl").read_text().splitlines()[0])
    assert "region_2" in rounds["train_sites"], "the small site still trains, with the chosen penalty"
    assert summary["l2_penalty"] == document["chosen"]

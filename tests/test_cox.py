"""The Cox loss against lifelines (Efron) and scikit-survival (Breslow), and a linear Cox fit on TCGA-BRCA."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter
from lifelines.fitters.coxph_fitter import SemiParametricPHFitter
from sksurv.linear_model.coxph import CoxPHOptimizer

from stsfl.common.cox import count_events, cox_loss, cox_nll


@pytest.fixture
def tied_data():
    """30 patients, integer times 1..8 (many ties, censored tied with events), 3 covariates."""
    rng = np.random.default_rng(7)
    n = 30
    x = rng.normal(size=(n, 3))
    time = rng.integers(1, 9, size=n).astype(float)
    event = (rng.random(n) < 0.6).astype(float)
    beta = np.array([0.8, -0.5, 0.3])
    return x, time, event, beta


def _ours(x, time, event, beta, ties):
    eta = torch.tensor(x @ beta)
    return cox_nll(eta, torch.tensor(time), torch.tensor(event), ties=ties, reduction="sum").item()


def test_efron_equals_lifelines_at_arbitrary_coefficients(tied_data):
    x, time, event, beta = tied_data
    order = np.argsort(time, kind="mergesort")
    _, _, loglik = SemiParametricPHFitter()._get_efron_values_single(
        pd.DataFrame(x[order]),
        pd.Series(time[order]),
        pd.Series(event[order].astype(bool)),
        pd.Series(np.ones(len(time))),
        None,
        beta,
    )
    assert _ours(x, time, event, beta, "efron") == pytest.approx(-loglik, abs=1e-6)


def test_efron_equals_lifelines_fitted_log_likelihood(tied_data):
    x, time, event, _ = tied_data
    df = pd.DataFrame(x, columns=["a", "b", "c"]).assign(T=time, E=event)
    cph = CoxPHFitter().fit(df, "T", "E")
    assert _ours(x, time, event, cph.params_.to_numpy(), "efron") == pytest.approx(-cph.log_likelihood_, abs=1e-6)


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_equals_scikit_survival(tied_data, ties):
    x, time, event, beta = tied_data
    opt = CoxPHOptimizer(x, event.astype(bool), time, np.zeros(3), ties)
    expected = opt.nlog_likelihood(beta) * len(time)  # sksurv averages over all samples
    assert _ours(x, time, event, beta, ties) == pytest.approx(expected, abs=1e-6)


def test_breslow_and_efron_differ_only_with_ties(tied_data):
    x, time, event, beta = tied_data
    assert abs(_ours(x, time, event, beta, "breslow") - _ours(x, time, event, beta, "efron")) > 1e-3
    distinct = time + np.arange(len(time)) * 1e-3
    assert _ours(x, distinct, event, beta, "breslow") == pytest.approx(_ours(x, distinct, event, beta, "efron"), abs=1e-12)


def test_mean_divides_by_events_per_endpoint_and_masks_missing_endpoints(tied_data):
    x, time, event, beta = tied_data
    eta = torch.tensor(x @ beta)
    keep = np.arange(len(time)) % 4 != 0
    # Endpoint 0 complete, endpoint 1 missing for every 4th patient: equal to dropping them.
    two = torch.stack([eta, eta], 1)
    observed = torch.stack([torch.ones(len(time), dtype=torch.bool), torch.tensor(keep)], 1)
    times = torch.tensor(np.stack([time, time], 1))
    events = torch.tensor(np.stack([event, event], 1))
    got = cox_nll(two, times, events, observed, reduction="mean")
    full = _ours(x, time, event, beta, "efron") / event.sum()
    dropped = _ours(x[keep], time[keep], event[keep], beta, "efron") / event[keep].sum()
    assert got.tolist() == pytest.approx([full, dropped], abs=1e-9)
    assert count_events(events, observed).tolist() == [int(event.sum()), int(event[keep].sum())]
    assert cox_loss(two, times, events, observed).item() == pytest.approx(full + dropped, abs=1e-9)


def test_stable_for_huge_log_risks_and_no_events():
    eta = torch.tensor([1000.0, 999.0, -1000.0, 5.0], requires_grad=True)
    time = torch.tensor([1.0, 1.0, 2.0, 3.0])
    event = torch.tensor([1.0, 1.0, 1.0, 0.0])
    loss = cox_nll(eta, time, event).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(eta.grad).all()
    # Same value as float64 with the log-risks shifted (the partial likelihood is shift invariant).
    shifted = cox_nll((eta.detach() - 1000).double(), time, event).sum()
    assert loss.item() == pytest.approx(shifted.item(), rel=1e-5)

    none = torch.zeros(4, requires_grad=True)
    zero = cox_nll(none, time, torch.zeros(4)).sum()
    zero.backward()
    assert zero.item() == 0.0 and torch.equal(none.grad, torch.zeros(4))


def test_finite_gradient_when_an_unobserved_row_ties_with_an_event():
    # Row 1 is outside every risk set but tied with event row 0, whose risk set is row 0 alone.
    eta = torch.tensor([0.3, -0.2, 0.1], requires_grad=True)
    loss = cox_nll(eta, torch.tensor([1.0, 1.0, 2.0]), torch.tensor([1.0, 0.0, 1.0]), torch.tensor([True, False, True]))
    loss.sum().backward()
    assert torch.isfinite(eta.grad).all() and eta.grad[1] == 0


def test_half_precision_input_is_computed_in_float32():
    eta = torch.tensor([0.5, -0.2, 0.1], dtype=torch.float16)
    out = cox_nll(eta, torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 0.0]))
    assert out.dtype == torch.float32


def test_linear_cox_recovers_lifelines_on_tcga_brca(tcga_brca_dir):
    """Full-batch LBFGS on our loss (+ the same L2 penalty) gives lifelines' coefficients."""
    df = pd.read_csv(tcga_brca_dir / "brca.csv").drop(columns="pid")
    features = [c for c in df.columns if c not in ("T", "E") and df[c].std() > 0]
    x = (df[features] - df[features].mean()) / df[features].std()  # as lifelines normalises (ddof 1)
    penalizer = 0.1
    cph = CoxPHFitter(penalizer=penalizer).fit(x.assign(T=df["T"], E=df["E"]), "T", "E")

    xt = torch.tensor(x.to_numpy())
    time, event = torch.tensor(df["T"].to_numpy(float)), torch.tensor(df["E"].to_numpy(float))
    beta = torch.zeros(xt.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [beta], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        # lifelines maximises loglik / n - penalizer / 2 ||beta||^2
        loss = cox_nll(xt @ beta, time, event, reduction="sum").sum() / len(df) + 0.5 * penalizer * beta.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    np.testing.assert_allclose(beta.detach().numpy(), cph.params_.to_numpy(), atol=1e-3)

"""The local trainer: determinism, exact large risk sets, blending, model selection, FedProx, resume."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from model_fixtures import N_CLINICAL, N_ENDPOINTS, make_samples, tiny_preset

from stsfl.client.training import trainer as trainer_module
from stsfl.client.training.trainer import accumulate_chunk_gradients, evaluate, make_loader, train_local
from stsfl.common.batch import collate_patients
from stsfl.common.config import TrainConfig
from stsfl.common.head_losses import blended_loss, head_losses
from stsfl.tasks.multimodal.model import MultimodalCoxNet


def _setup(norm="batch", n_train=12, n_val=6, batch_size=4, modalities=("wsi", "clinical"), **cfg):
    """Model, loaders and config; without the MRI branch unless asked (the 3D net dominates test time)."""
    preset = tiny_preset(norm)
    collate = partial(collate_patients, mri_shape=tuple(preset.mri.input_size), wsi_dim=preset.wsi.embed_dim)
    train = make_loader(make_samples(n_train, preset, seed=1, mri_every=1, wsi_every=2), batch_size, collate, shuffle=True)
    val = make_loader(make_samples(n_val, preset, seed=2), batch_size, collate, shuffle=False)
    config = TrainConfig(**{"epochs": 2, "batch_size": batch_size, "lr": 0.01, "blend_interval": 1, **cfg})
    torch.manual_seed(0)
    return MultimodalCoxNet(preset, N_CLINICAL, N_ENDPOINTS, modalities), train, val, config


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_deterministic_on_cpu_given_a_seed():
    runs = []
    for _ in range(2):
        model, train, val, cfg = _setup()
        runs.append(train_local(model, train, val, cfg, show_progress=False))
    assert _same(runs[0].state, runs[1].state)
    assert runs[0].history == runs[1].history
    model, train, val, cfg = _setup(seed=5)
    other = train_local(model, train, val, cfg, show_progress=False)
    assert not _same(runs[0].state, other.state)


def test_chunk_gradient_equals_one_forward_over_the_chunk():
    """Two-pass micro-batching gives the gradient of the 12-patient partial likelihood exactly
    (group norm: no batch statistics, so one forward over all 12 is the reference)."""
    model, train, _, cfg = _setup(norm="group", modalities=("mri", "wsi", "clinical"))
    batches = list(train)
    weights = {"fused": 0.5, "mri": 0.2, "wsi": 0.2, "clinical": 0.1}
    accumulate_chunk_gradients(model, batches, weights, cfg)
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # not the Cox-fitted clinical term
    chunked = {n: p.grad.clone() for n, p in trained}
    model.zero_grad()
    everyone = collate_patients([s for b in batches for s in _samples_of(b)], (16, 16, 16), tiny_preset().wsi.embed_dim)
    blended_loss(head_losses(model(everyone), everyone), weights).backward()
    for name, p in trained:
        torch.testing.assert_close(chunked[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def _samples_of(batch):
    from stsfl.common.batch import PatientSample

    out = []
    for i, pid in enumerate(batch.pids):
        has_wsi = bool(batch.modality_present[i, 1])
        out.append(
            PatientSample(
                pid=pid,
                clinical=batch.clinical[i],
                time=batch.time[i],
                event=batch.event[i],
                endpoint_observed=batch.endpoint_observed[i],
                mri=batch.mri[i],
                wsi=batch.wsi[i][batch.wsi_mask[i]] if has_wsi else None,
            )
        )
    return out


def test_dropout_draws_repeat_in_the_second_pass():
    model, train, _, cfg = _setup(norm="group")
    model.encoders["clinical"][2].p = 0.5  # the clinical MLP's dropout
    model.train()
    batches = list(train)
    torch.manual_seed(4)
    a = accumulate_chunk_gradients(model, batches, {"fused": 1, "wsi": 0, "clinical": 0}, cfg)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    torch.manual_seed(4)
    b = accumulate_chunk_gradients(model, batches, {"fused": 1, "wsi": 0, "clinical": 0}, cfg)
    assert a == b and all(torch.equal(grads[n], p.grad) for n, p in model.named_parameters() if p.grad is not None)


@pytest.mark.parametrize("risk_set", ["batch", 8, "site"])
def test_risk_set_modes_train(risk_set):
    # With the MRI branch and batch norm: pass 1 must leave the running statistics as they were.
    model, train, val, cfg = _setup(risk_set=risk_set, epochs=1, modalities=("mri", "wsi", "clinical"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_local(model, train, val, cfg, show_progress=False)
    assert not _same(before, result.state)
    assert result.n_examples == 12 and len(result.n_events) == N_ENDPOINTS
    assert set(result.val_stats.loss_sums) == {"fused", "mri", "wsi", "clinical"}
    if risk_set != "batch":  # the running statistics moved once per micro-batch, not twice
        assert int(result.state["encoders.mri.features.norm0.num_batches_tracked"]) == 3


def test_zero_blend_weight_freezes_a_head_and_selection_uses_fused_val_loss():
    model, train, val, cfg = _setup(weight_decay=0.0, epochs=3)
    head_before = model.fused_head.weight.detach().clone()
    result = train_local(model, train, val, cfg, blend_weights={"fused": 0.0, "wsi": 0.5, "clinical": 0.5}, show_progress=False)
    assert torch.equal(result.state["fused_head.weight"], head_before)
    assert result.blend.history == [(0, {"fused": 0.0, "wsi": 0.5, "clinical": 0.5})]
    fused_val = [h["val"]["fused"] for h in result.history]
    assert result.best_epoch == 1 + fused_val.index(min(fused_val))


def test_local_blending_updates_every_interval():
    model, train, val, cfg = _setup(epochs=3, blend_interval=1)
    result = train_local(model, train, val, cfg, show_progress=False)
    assert [e for e, _ in result.blend.history] == [0, 2, 3]
    assert all(sum(w.values()) == pytest.approx(1.0) for _, w in result.blend.history)
    assert [h["weights"] for h in result.history][1] == pytest.approx(result.blend.history[0][1])


def test_blending_checkpoints_measure_both_splits_in_eval_mode_from_epoch_0():
    model, train, val, cfg = _setup(epochs=2, blend_interval=1, blend_smoothing=0.0)
    train_eval = make_loader(train.dataset, 4, train.collate_fn, shuffle=False)
    start_train, start_val = (evaluate(model, loader).stats.mean_losses() for loader in (train_eval, val))
    result = train_local(model, train, val, cfg, train_eval_loader=train_eval, show_progress=False)
    # The initial model is checkpoint 0, so the first update comes after one interval, not two.
    assert [e for e, _ in result.blend.history] == [0, 1, 2]
    first = result.history[0]
    assert first["train_eval"] != pytest.approx(first["train"])  # not the running train-mode losses
    epoch, stats = result.blend.stats_history[0]
    assert epoch == 1
    for head, (g, o) in stats.items():
        assert g == pytest.approx(start_val[head] - first["val"][head])
        assert o == pytest.approx((first["val"][head] - first["train_eval"][head]) - (start_val[head] - start_train[head]))


def test_fedprox_keeps_weights_near_the_global_model():
    distances = {}
    for mu in (0.0, 30.0):
        model, train, val, cfg = _setup(prox_mu=mu, lr=0.05, epochs=4, grad_clip=0.0)
        anchor = {k: v.clone() for k, v in model.state_dict().items()}
        # the weights after all 4 epochs: the best-validation epoch may be an early one for either mu
        result = train_local(model, train, val, cfg, global_state=anchor, show_progress=False, keep_best=False)
        distances[mu] = sum((result.state[n] - anchor[n]).pow(2).sum() for n, _ in model.named_parameters())
    assert distances[30.0] < 0.5 * distances[0.0]


def test_resume_after_a_crash_matches_an_unbroken_run(tmp_path, monkeypatch):
    model, train, val, cfg = _setup(epochs=3)
    unbroken = train_local(model, train, val, cfg, show_progress=False)

    original = trainer_module._save

    def crash_after_epoch_two(directory, epoch, *args):
        original(directory, epoch, *args)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "_save", crash_after_epoch_two)
    model, train, val, cfg = _setup(epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train_local(model, train, val, cfg, checkpoint_dir=tmp_path, show_progress=False)
    monkeypatch.setattr(trainer_module, "_save", original)
    model, train, val, cfg = _setup(epochs=3)
    resumed = train_local(model, train, val, cfg, checkpoint_dir=tmp_path, show_progress=False)
    assert _same(unbroken.state, resumed.state) and unbroken.history == resumed.history
    assert (tmp_path / "best.pt").is_file()
    assert (tmp_path / "training.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_returns_risks_and_whole_split_statistics():
    model, _, val, cfg = _setup()
    ev = evaluate(model, val)
    assert ev.pids == [f"p{i:03d}" for i in range(6)]
    assert ev.risks["fused"].shape == (6, N_ENDPOINTS) and ev.time.shape == (6, N_ENDPOINTS)
    assert sum(ev.stats.events["fused"]) == int(ev.event.sum())

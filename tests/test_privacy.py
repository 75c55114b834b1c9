"""DP-SGD in the local trainer (Opacus) and the site's privacy ledger."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from model_fixtures import N_CLINICAL, N_ENDPOINTS, make_samples, tiny_preset

from stsfl.client.training.privacy import DpSgd, PrivacyBudgetSpent, PrivacyLedger
from stsfl.client.training.trainer import make_loader, train_local
from stsfl.common.batch import collate_patients
from stsfl.common.config import ConfigError, SiteConfig, TrainConfig, load_config
from stsfl.tasks.multimodal.model import MultimodalCoxNet


def _setup(norm="group", n_train=12, modalities=("mri", "wsi", "clinical"), **cfg):
    preset = tiny_preset(norm)
    collate = partial(collate_patients, mri_shape=tuple(preset.mri.input_size), wsi_dim=preset.wsi.embed_dim)
    train = make_loader(make_samples(n_train, preset, seed=1, wsi_every=2), 4, collate, shuffle=True)
    config = TrainConfig(**{"epochs": 2, "batch_size": 4, "lr": 0.01, "blend_mode": "off", **cfg})
    torch.manual_seed(0)
    return MultimodalCoxNet(preset, N_CLINICAL, N_ENDPOINTS, modalities), train, config


def _distance(a: dict, b: dict) -> float:
    return math.sqrt(sum(float((a[k].float() - b[k].float()).pow(2).sum()) for k in a))


def test_dp_sgd_trains_the_whole_network_deterministically_and_counts_its_steps():
    runs = []
    for _ in range(2):
        model, train, cfg = _setup(n_train=8, epochs=1)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        runs.append(train_local(model, train, None, cfg, show_progress=False, privacy=DpSgd(1.0, 1.0, seed=3)))
    result = runs[0]
    assert result.dp_sample_rate == pytest.approx(4 / 8) and result.dp_steps == 2
    assert _distance(result.state, runs[1].state) == 0.0, "same seeds, same noise: same model"
    moved = [name for name, p in model.named_parameters() if not torch.equal(result.state[name], start[name])]
    trained = [p for p in model.parameters() if p.requires_grad]  # not the Cox-fitted clinical term
    assert len(moved) == len(trained), "every trained parameter gets its noisy gradient"
    assert not any(hasattr(p, "grad_sample") for p in model.parameters()), "the Opacus hooks are removed afterwards"
    model, train, cfg = _setup(n_train=8, epochs=1)
    other = train_local(model, train, None, cfg, show_progress=False, privacy=DpSgd(1.0, 1.0, seed=4))
    assert _distance(result.state, other.state) > 0, "another noise seed gives another model"


def test_per_patient_clipping_bounds_the_update():
    """With (almost) no noise, each step moves the weights by at most lr x C x drawn / expected batch."""
    bound_cfg = {"lr": 1.0, "momentum": 0.0, "weight_decay": 0.0, "epochs": 1}
    model, train, cfg = _setup(modalities=("clinical",), **bound_cfg)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    clip = 1e-3
    result = train_local(model, train, None, cfg, show_progress=False, privacy=DpSgd(1e-9, clip, seed=0))
    dp_move = _distance(result.state, start)
    worst = result.dp_steps * cfg.lr * clip * len(train.dataset) / train.batch_size
    assert 0 < dp_move <= worst
    model, train, cfg = _setup(modalities=("clinical",), **bound_cfg, grad_clip=0.0)
    plain = train_local(model, train, None, cfg, show_progress=False)
    assert _distance(plain.state, start) > 10 * worst, "without DP the same training moves much further"


def test_batch_norm_network_is_refused_with_the_key_to_change():
    model, train, cfg = _setup(norm="batch")
    with pytest.raises(ValueError, match="model_norm: group"):
        train_local(model, train, None, cfg, show_progress=False, privacy=DpSgd(1.0, 1.0))


def test_dp_needs_the_batch_as_risk_set():
    model, train, cfg = _setup(risk_set="site")
    with pytest.raises(ValueError, match="risk_set: batch"):
        train_local(model, train, None, cfg, show_progress=False, privacy=DpSgd(1.0, 1.0))


def test_calibrated_noise_spends_the_budget_over_the_planned_steps_then_stops(tmp_path):
    path = tmp_path / "privacy_ledger.json"
    ledger = PrivacyLedger(path, delta=1e-5)
    rate, steps_per_round, rounds = 0.1, 10, 5
    noise = ledger.calibrated_noise(3.0, rate, rounds * steps_per_round)
    spent = []
    for server_round in range(1, rounds + 1):
        ledger.check(3.0, noise, rate, steps_per_round)
        ledger.record(server_round, noise, rate, steps_per_round)
        spent.append(PrivacyLedger(path, delta=1e-5).epsilon())  # a new process reads the same ledger
    assert spent == sorted(spent) and 2.9 <= spent[-1] <= 3.0 * 1.001
    reopened = PrivacyLedger(path, delta=1e-5)
    assert reopened.calibrated_noise(3.0, rate, 1) == noise, "the noise is fixed at the first training"
    with pytest.raises(PrivacyBudgetSpent, match=r"epsilon 2\.9\d of 3 .*one more would reach .*stops training"):
        reopened.check(3.0, noise, rate, steps_per_round)
    louder = PrivacyLedger(tmp_path / "other.json", delta=1e-5)
    assert louder.calibrated_noise(1.0, rate, rounds * steps_per_round) > noise, "a smaller budget needs more noise"


def test_site_yaml_dp_without_budget_is_a_config_error(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("name: a\nroot: .\nprivacy: {dp: true}\n")
    with pytest.raises(ConfigError, match="privacy.*epsilon_budget"):
        load_config(path, SiteConfig)
    path.write_text("name: a\nroot: .\nprivacy: {dp: true, epsilon_budget: 3}\n")
    assert load_config(path, SiteConfig).privacy.epsilon_budget == 3


def test_each_site_keeps_its_state_beside_its_own_yaml(tmp_path, monkeypatch):
    """The ledger and FedBN layers of two sites with `cache_dir: cache` never share a folder (nor the working directory)."""
    from stsfl.client.federation.site_task import SiteTask

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    dirs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "site.yaml").write_text(f"name: {name}\nroot: .\ncache_dir: cache\n")
        dirs.append(SiteTask.from_node_config(name, str(tmp_path / name / "site.yaml"))._state_dir("fed"))
    assert dirs == [tmp_path / "a" / "cache" / "federations" / "fed", tmp_path / "b" / "cache" / "federations" / "fed"]
    assert not any((tmp_path / "elsewhere").iterdir())

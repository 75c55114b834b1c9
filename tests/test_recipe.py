"""The training recipe in one place: layered defaults with their sources, refusals of keys that
moved or that a federation cannot use, one schedule over a whole federation, the optimiser the
recipe names."""

from __future__ import annotations

import pytest
import torch
from test_trainer import _setup

from stsfl.client.training.trainer import train_local
from stsfl.common.config import ConfigError, FederationConfig, ScheduleWindow, TrainConfig, parse_config
from stsfl.server.cli import main as server_main


def _fed(**data) -> FederationConfig:
    return parse_config({"sites": ["a", "b"], **data}, FederationConfig, "federation.yaml")


def test_every_value_names_its_layer():
    recipe = _fed(train={"lr": 0.05}).recipe
    sources = recipe.sources
    assert recipe.train.lr == 0.05 and sources["lr"] == "federation YAML"
    assert sources["batch_size"] == "preset cpu-small" and sources["optimizer"] == "default"
    linear = _fed(task="linear-cox").recipe
    assert linear.train.lr == 0.2 and linear.sources["lr"] == "task linear-cox" and linear.train.momentum == 0.0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"learning_rate": 0.01}, "learning_rate -> train.lr"),
        ({"local_epochs": 2, "seed": 1}, "local_epochs -> train.epochs_per_round, seed -> train.seed"),
        ({"client_optimizer": "adam"}, "client_optimizer -> train.optimizer"),
        ({"strategy_params": {"prox_mu": 0.1}}, "strategy_params.prox_mu -> train.prox_mu"),
        ({"train": {"optimizer": "rmsprop"}}, "train.optimizer: expected 'sgd' or 'adam'"),
        ({"train": {"lrr": 0.1}}, "train.lrr: unknown key"),
        ({"train": {"epochs": 5}}, "train.epochs applies to pooled training only"),
        ({"train": {"final_lr_fraction": 0.1}}, "final_lr_fraction has no effect with schedule 'onecycle'"),
        ({"strategy": "fedprox"}, "train.prox_mu"),
        ({"task": "linear-cox", "train": {"blend_mode": "wang"}}, "does not use blend_mode"),
        (
            {"task": "linear-cox", "train": {"batch_size": 4, "min_steps_per_round": 8}},
            "does not use batch_size, min_steps_per_round",
        ),
    ],
)
def test_settings_that_would_be_ignored_are_refused(data, expected):
    with pytest.raises(ConfigError) as err:
        _fed(**data)
    assert expected in str(err.value) and "federation.yaml" in str(err.value)


def test_onecycle_matches_torch_and_spans_the_whole_federation():
    cfg = TrainConfig(lr=0.1)
    steps = 40
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    reference = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=steps)
    for i in range(steps):
        expected = reference.get_last_lr()[0]
        assert cfg.learning_rate_at(i, steps) == pytest.approx(expected, rel=1e-9)
        optimizer.step()
        reference.step()
    fed = _fed(rounds=4, train={"epochs_per_round": 3})
    windows = [fed.schedule_window(r) for r in range(1, 5)]
    assert [(w.start_epoch, w.total_epochs) for w in windows] == [(0, 12), (3, 12), (6, 12), (9, 12)]
    rates = [fed.learning_rate_at(r) for r in range(1, 5)]
    assert rates[1] > rates[0] and rates[3] < rates[2]  # warm-up, then decay: no restart per round


def test_rounds_continue_the_pooled_schedule():
    """Four 1-epoch calls at windows 0..3 of 4 take exactly the rates of one 4-epoch call."""
    model, train, val, cfg = _setup(epochs=4, blend_mode="off")
    pooled = train_local(model, train, val, cfg, show_progress=False)
    model, train, val, cfg = _setup(epochs=4, blend_mode="off")
    rates = []
    for epoch in range(4):
        result = train_local(
            model, train, val, cfg, epochs=1, show_progress=False, window=ScheduleWindow(start_epoch=epoch, total_epochs=4)
        )
        rates.append(result.history[0]["lr"])
    assert rates == pytest.approx([r["lr"] for r in pooled.history])
    assert rates[0] > cfg.lr / 25  # a restart would begin every round at lr / 25


def test_adam_is_run_when_the_recipe_names_it(monkeypatch):
    used = []
    original = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        used.append(self.param_groups[0]["betas"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    model, train, val, cfg = _setup(optimizer="adam", momentum=0.8, blend_mode="off")
    adam = train_local(model, train, val, cfg, show_progress=False)
    assert used and used[0] == (0.8, 0.999)
    model, train, val, cfg = _setup(optimizer="sgd", blend_mode="off")
    sgd = train_local(model, train, val, cfg, show_progress=False)
    assert not all(torch.equal(adam.state[k], sgd.state[k]) for k in adam.state)


def test_check_config_prints_the_effective_recipe(tmp_path, capsys):
    config = tmp_path / "federation.yaml"
    config.write_text("sites: [a, b]\nrounds: 12\ntrain: {lr: 0.03, epochs_per_round: 2}\n")
    with pytest.raises(SystemExit) as done:
        server_main(["check-config", "--config", str(config)])
    assert done.value.code == 0
    out = capsys.readouterr().err  # the console of the CLIs writes to stderr
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 4}
    assert "0.03" in rows["lr"] and "federation YAML" in rows["lr"]
    assert "preset cpu-small" in rows["batch_size"] and "epochs" not in rows

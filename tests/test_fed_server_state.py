"""Unit tests of the federation's building blocks: parameter (de)serialisation, FedBN keys,
federated moments, checkpoints, and the strategies' server step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import MetricRecord, RecordDict
from inprocess_grid import InProcessGrid, run_in_process, server_identity  # noqa: F401 (fixture)

from stsfl.client.lab.tcga_brca import write_region_sites
from stsfl.common.config import FederationConfig
from stsfl.common.fed_protocol import ARRAYS, METRICS, NUM_EVENTS, NUM_PATIENTS
from stsfl.common.moments import combine_moments, site_moments
from stsfl.common.params import (
    arrays_nbytes,
    arrays_to_numpy,
    arrays_to_state_dict,
    float32_nbytes,
    load_arrays,
    normalisation_keys,
    numpy_to_arrays,
    state_dict_to_arrays,
)
from stsfl.server.federation.checkpoint import CorruptCheckpointError, ServerState, load_checkpoint, save_checkpoint
from stsfl.server.federation.strategies import Aggregator


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv1d(2, 4, 3), torch.nn.BatchNorm1d(4), torch.nn.Flatten(), torch.nn.Linear(8, 1))


def test_state_dict_round_trip_is_exact_and_sized():
    net = _net()
    record = state_dict_to_arrays(net.state_dict())
    back = arrays_to_state_dict(record)
    assert set(back) == set(net.state_dict())
    for name, tensor in net.state_dict().items():
        assert back[name].dtype == tensor.dtype
        assert torch.equal(back[name], tensor)
    n_values = sum(t.numel() for t in net.state_dict().values())
    assert float32_nbytes(record) == 4 * n_values
    # num_batches_tracked is int64: the real payload is larger than the float32 reference by 4 bytes
    assert arrays_nbytes(record) == 4 * n_values + 4


def test_normalisation_keys_and_partial_load():
    net = _net()
    keys = normalisation_keys(net)
    assert keys == {"1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"}
    other = _net()
    with torch.no_grad():
        other[1].weight.fill_(7.0)
        other[0].weight.fill_(3.0)
    # FedBN: load everything but the normalisation tensors; the local BN weight survives
    load_arrays(other, state_dict_to_arrays(net.state_dict(), exclude=keys))
    assert torch.equal(other[0].weight, net[0].weight)
    assert torch.all(other[1].weight == 7.0)
    with pytest.raises(ValueError, match="shape"):
        load_arrays(torch.nn.Linear(3, 1), state_dict_to_arrays(torch.nn.Linear(2, 1).state_dict()))


def test_federated_moments_equal_pooled():
    rng = np.random.default_rng(0)
    parts = [rng.normal(loc=i, scale=1 + i, size=(n, 3)) for i, n in enumerate((40, 7, 113))]
    parts[1][2, 1] = np.nan  # a missing value is not counted
    combined = combine_moments([site_moments(p) for p in parts])
    pooled = np.concatenate(parts)
    np.testing.assert_allclose(combined["mean"], np.nanmean(pooled, axis=0), rtol=1e-12)
    np.testing.assert_allclose(combined["std"], np.nanstd(pooled, axis=0), rtol=1e-10)
    assert combined["n"] == [160.0, 159.0, 160.0]


def test_checkpoint_round_trip(tmp_path):
    state = ServerState(
        round=3,
        global_arrays={"fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "bn.n": np.array(5)},
        strategy_state={"m/fc.weight": np.ones((2, 3))},
        best_arrays={"fc.weight": np.zeros((2, 3), dtype=np.float32)},
        meta={"history": [{"round": 1}], "blend_weights": {"mri": 0.5}},
    )
    save_checkpoint(tmp_path, state)
    back = load_checkpoint(tmp_path)
    assert back.round == 3 and back.meta == state.meta
    np.testing.assert_array_equal(back.global_arrays["fc.weight"], state.global_arrays["fc.weight"])
    assert back.global_arrays["bn.n"].dtype == state.global_arrays["bn.n"].dtype
    np.testing.assert_array_equal(back.strategy_state["m/fc.weight"], 1.0)
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


def _state(round_: int) -> ServerState:
    return ServerState(round=round_, global_arrays={"w": np.full((64, 64), round_, np.float32)}, meta={"history": []})


@pytest.mark.parametrize("damage", ["truncated", "flipped bytes", "empty"])
def test_an_unreadable_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    for r in (1, 2, 3):
        save_checkpoint(tmp_path, _state(r))
    newest = tmp_path / "checkpoint.npz"
    data = bytearray(newest.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped bytes":  # inside the weights: only the member's CRC can tell
        data[len(data) // 2 : len(data) // 2 + 16] = bytes(16)
    else:
        data = bytearray()
    newest.write_bytes(bytes(data))
    said = []
    state = load_checkpoint(tmp_path, log=said.append)
    assert state.round == 2 and float(state.global_arrays["w"][0, 0]) == 2.0
    assert len(said) == 1 and "checkpoint.npz is unreadable" in said[0] and "checkpoint.prev.npz (after round 2)" in said[0]
    (tmp_path / "checkpoint.prev.npz").write_bytes(b"not a zip")
    with pytest.raises(CorruptCheckpointError, match="checkpoint.npz is unreadable.*and so is .*checkpoint.prev.npz"):
        load_checkpoint(tmp_path, log=said.append)


def test_a_resume_over_a_corrupt_checkpoint_ends_with_the_uninterrupted_model(tcga_brca_dir, tmp_path, capsys, server_identity):
    """The last round's checkpoint is damaged after a complete run: the resumed run goes back to the
    round before, runs the last round again and ends with the same model, nothing lost."""
    sites = {p.stem: p for p in write_region_sites(tcga_brca_dir, tmp_path / "regions", regions=[0, 1, 3])}
    config = tmp_path / "federation.yaml"
    config.write_text(
        "task: linear-cox\nname: ckpt\nrounds: 3\ntrain: {epochs_per_round: 5, lr: 0.05, seed: 3}\n"
        "sites: [region_0, region_1, region_3]\nholdout: [region_3]\nprediction: {baseline: false}\n"
        "site_outputs: {enabled: false}\n"
    )
    clean = run_in_process(InProcessGrid(sites), config, tmp_path / "clean")
    run_in_process(InProcessGrid(sites), config, tmp_path / "damaged")
    checkpoint = tmp_path / "damaged" / "checkpoint.npz"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    capsys.readouterr()
    resumed = run_in_process(InProcessGrid(sites), config, tmp_path / "damaged", resume=True)
    out = capsys.readouterr().out
    assert "resuming from" in out and "(after round 2)" in out and "resuming after round 2 of 3" in out, out
    with np.load(tmp_path / "clean" / "model_final.npz") as a, np.load(tmp_path / "damaged" / "model_final.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    assert resumed["holdout_selected"] == clean["holdout_selected"]
    rounds = [json.loads(line)["round"] for line in (tmp_path / "damaged" / "rounds.jsonl").read_text().splitlines()]
    assert rounds == [1, 2, 3]


def _reply(arrays: dict[str, np.ndarray], patients: int, events: int) -> RecordDict:
    return RecordDict({ARRAYS: numpy_to_arrays(arrays), METRICS: MetricRecord({NUM_PATIENTS: patients, NUM_EVENTS: events})})


def _fed(**kw) -> FederationConfig:
    return FederationConfig(sites=["a", "b"], **kw)


def test_fedavg_weights_by_events_or_patients():
    glob = numpy_to_arrays({"w": np.zeros(2, dtype=np.float32), "n": np.array(0)})
    assert arrays_to_numpy(glob)["n"].shape == ()  # 0-d buffers keep their shape
    replies = [
        _reply({"w": np.array([1.0, 0.0], np.float32), "n": np.array(4)}, 10, 1),
        _reply({"w": np.array([0.0, 1.0], np.float32), "n": np.array(6)}, 30, 3),
    ]
    by_events, _ = Aggregator(_fed(weighting="events")).aggregate(1, glob, replies)
    np.testing.assert_allclose(arrays_to_numpy(by_events)["w"], [0.25, 0.75])
    assert arrays_to_numpy(by_events)["n"].dtype == np.int64  # integer buffers stay integers
    by_patients, _ = Aggregator(_fed(weighting="patients")).aggregate(1, glob, replies)
    np.testing.assert_allclose(arrays_to_numpy(by_patients)["w"], [0.25, 0.75])
    replies[1] = _reply({"w": np.array([0.0, 1.0], np.float32), "n": np.array(6)}, 10, 3)
    by_patients, _ = Aggregator(_fed(weighting="patients")).aggregate(1, glob, replies)
    np.testing.assert_allclose(arrays_to_numpy(by_patients)["w"], [0.5, 0.5])


def test_fedadam_state_survives_a_restart():
    """Two rounds straight == one round, checkpoint state, fresh aggregator, second round."""
    glob0 = {"w": np.zeros(3, dtype=np.float32)}
    rounds = [[_reply({"w": np.array([1, 2, 3], np.float32)}, 5, 2)], [_reply({"w": np.array([-1, 0, 4], np.float32)}, 5, 2)]]
    fed = _fed(strategy="fedadam")
    straight = Aggregator(fed)
    g1, _ = straight.aggregate(1, numpy_to_arrays(glob0), rounds[0])
    g2, _ = straight.aggregate(2, g1, rounds[1])
    first = Aggregator(fed)
    h1, _ = first.aggregate(1, numpy_to_arrays(glob0), rounds[0])
    second = Aggregator(fed)
    second.load_state(first.state())
    h2, _ = second.aggregate(2, h1, rounds[1])
    np.testing.assert_array_equal(arrays_to_numpy(g2)["w"], arrays_to_numpy(h2)["w"])
    # and without the moments the result differs (the state matters)
    fresh = Aggregator(fed)
    f2, _ = fresh.aggregate(2, h1, rounds[1])
    assert not np.allclose(arrays_to_numpy(f2)["w"], arrays_to_numpy(g2)["w"])


def test_fedprox_takes_the_recipes_mu_and_fedbn_keeps_norm_local():
    assert Aggregator(_fed(strategy="fedprox", train={"prox_mu": 0.02})).strategy.proximal_mu == pytest.approx(0.02)
    with pytest.raises(ValueError, match="train.prox_mu"):
        _fed(strategy="fedprox")
    assert Aggregator(_fed(strategy="fedbn")).keeps_norm_local
    assert not Aggregator(_fed(strategy="fedadam")).keeps_norm_local


def test_zero_events_is_a_clear_error():
    glob = numpy_to_arrays({"w": np.zeros(1, dtype=np.float32)})
    with pytest.raises(ValueError, match="weighting: patients"):
        Aggregator(_fed()).aggregate(1, glob, [_reply({"w": np.ones(1, np.float32)}, 5, 0)])

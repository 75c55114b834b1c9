"""The contract between coordinator and sites (stsfl.common.messages): every config message
survives its ConfigRecord round trip, a site refuses a config that lacks a required key and names
it, no two fields of a message share a record key, and every reply reads back what the site wrote."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stsfl.common.config import ScheduleWindow, TrainConfig
from stsfl.common.messages import (
    CONFIG_MESSAGES,
    BaselineQuery,
    BaselineReply,
    CalibrationQuery,
    ClinicalCoxQuery,
    CrossEvaluateConfig,
    CrossEvaluateReply,
    RidgeCvQuery,
    RoundConfig,
    RunConfig,
    SiteOutputsQuery,
    StatsReply,
    TrainReply,
    record_key,
)
from stsfl.common.params import numpy_to_arrays

RUN = RunConfig(
    federation="f",
    task="multimodal",
    recipe=TrainConfig(lr=0.03, epochs_per_round=2),
    run_seed=7,
    validation_fraction=0.25,
    preset="cpu-small",
    schema={"endpoints": ["os"]},
    model_norm="group",
    l2_penalty=0.5,
    planned_epochs=12,
)
ROUND = RoundConfig(
    run=RUN,
    server_round=3,
    seed=10,
    schedule_window=ScheduleWindow(start_epoch=4, total_epochs=20, span_epochs=2),
    statistics={"mean": [0.5, 1.5]},
    blend_weights={"fused": 0.6, "mri": 0.4},
    keep_norm_local=True,
    eval_horizons_days=[365.0, 730.0],
    holdout_sites=["c"],
    transfer_dtype="float16",
    aggregation_weight="num-events",
    clipping_range=8.0,
)
MESSAGES = [
    RUN,
    ROUND,
    ClinicalCoxQuery(run=RUN, statistics={"mean": [1.0]}, beta=[[0.1, -0.2]]),
    RidgeCvQuery(run=RUN, statistics={"mean": [1.0]}, folds=5, betas=[{"fold": 0, "beta": [0.0, 0.1]}]),
    CrossEvaluateConfig(round=ROUND, global_model="global"),
    BaselineQuery(round=ROUND, grid={"bin_days": 30.4375, "max_days": 7305.0}),
    CalibrationQuery(round=ROUND, baseline={"os": {"edges": [0, 1]}}, horizons_days=[1095.75], competing={"dm": {}}),
    SiteOutputsQuery(round=ROUND, horizons_days=[365.25], baseline={"os": {}}, bins={"os": [1]}, competing={"dm": {}}),
]


def test_there_is_a_message_here_for_every_config_message():
    assert {type(m) for m in MESSAGES} == set(CONFIG_MESSAGES)


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_config_message_survives_its_record_round_trip(message):
    assert type(message).from_record(message.to_record()) == message


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_no_two_fields_of_a_message_share_a_key(message):
    keys = []

    def collect(m):
        for f in dataclasses.fields(m):
            value = getattr(m, f.name)
            if "key" in f.metadata:
                keys.append(f.metadata["key"])
            else:
                collect(value)

    collect(message)
    assert len(keys) == len(set(keys)) == len(message.to_record())


def test_a_config_without_a_required_key_is_refused_by_name():
    record = ROUND.to_record()
    del record[record_key(RoundConfig, "schedule_window")]
    with pytest.raises(KeyError, match="RoundConfig: the message config has no 'schedule-window' \\(schedule_window\\)"):
        RoundConfig.from_record(record)
    record = RUN.to_record()
    del record["recipe"]
    with pytest.raises(KeyError, match="'recipe'"):
        CalibrationQuery.from_record(record)


def test_optional_fields_take_their_defaults_and_none_is_not_sent():
    plain = dataclasses.replace(
        ROUND, aggregation_weight=None, clipping_range=None, blend_weights=None, run=dataclasses.replace(RUN, model_norm=None)
    )
    record = plain.to_record()
    assert not {record_key(RoundConfig, "aggregation_weight"), "blend-weights", "model-norm"} & set(record)
    decoded = RoundConfig.from_record(record)
    assert decoded.run.model_norm is None and decoded.blend_weights is None and decoded.clipping_range is None


def test_replies_read_back_what_the_site_wrote():
    arrays = numpy_to_arrays({"w": np.arange(3, dtype=np.float32)})
    train = TrainReply("a", {"train-loss-fused": 1.5}, {"train": {"sums": [1.0]}}, {"dp-epsilon": 2.0}, arrays)
    back = TrainReply.from_record(train.to_record())
    assert (back.site, back.metrics, back.blend_stats, back.privacy) == ("a", train.metrics, train.blend_stats, train.privacy)
    assert back.arrays["w"].numpy().tolist() == [0.0, 1.0, 2.0]
    assert StatsReply.from_record(StatsReply("b", {"counts": {"patients": 3}}).to_record()).statistics == {
        "counts": {"patients": 3}
    }
    cross = CrossEvaluateReply("c", {"global": {"c": 0.7}, "local-a": {"c": 0.6}})
    assert CrossEvaluateReply.from_record(cross.to_record()) == cross
    assert BaselineReply.from_record(BaselineReply("a", {"endpoints": {}}).to_record()) == BaselineReply("a", {"endpoints": {}})

"""Half-precision transfer of the weights (`transfer_dtype`): 16-bit tensors on the wire in both
directions of a training round, float32 again for the training and for the aggregation; a
federation (real ServerApp orchestration and ClientApp handlers in one process, TCGA-BRCA
regions) sends half the bytes and reaches nearly the same held-out C-index."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from inprocess_grid import InProcessGrid, run_in_process, server_identity  # noqa: F401 (fixture)

from stsfl.client.lab.tcga_brca import write_region_sites
from stsfl.common.params import arrays_nbytes, arrays_to_numpy, from_transfer, numpy_to_arrays, to_transfer

BODY = """task: linear-cox
sites: [region_0, region_1, region_3]
holdout: [region_3]
rounds: 3
train: {epochs_per_round: 3, lr: 0.05, seed: 2}
prediction: {baseline: false}
site_outputs: {enabled: false}
"""


def test_16_bit_transfer_halves_the_float_tensors_and_keeps_the_rest():
    rng = np.random.default_rng(0)
    record = numpy_to_arrays(
        {
            "w": rng.normal(size=(3, 5)).astype(np.float32),
            "b": np.array(0.25, dtype=np.float32),
            "steps": np.array(7, dtype=np.int64),
        }
    )
    for dtype, tolerance in (("float16", 1e-3), ("bfloat16", 8e-3)):
        sent = to_transfer(record, dtype)
        assert arrays_nbytes(sent) == 15 * 2 + 2 + 8, "16-bit floats, the int64 buffer as it is"
        back = arrays_to_numpy(from_transfer(sent, dtype))
        original = arrays_to_numpy(record)
        assert back["w"].dtype == np.float32 and back["w"].shape == (3, 5) and back["b"].shape == ()
        np.testing.assert_allclose(back["w"], original["w"], rtol=tolerance)
        assert back["steps"] == 7 and back["steps"].dtype == np.int64
    bf16 = arrays_to_numpy(from_transfer(to_transfer(record, "bfloat16"), "bfloat16"))["w"]
    assert np.array_equal(bf16, torch.from_numpy(arrays_to_numpy(record)["w"]).to(torch.bfloat16).float().numpy())
    assert to_transfer(record, "float32") is record


@pytest.fixture(scope="module")
def region_sites(tcga_brca_dir, tmp_path_factory) -> dict:
    paths = write_region_sites(tcga_brca_dir, tmp_path_factory.mktemp("regions"), regions=[0, 1, 3])
    return {p.stem: p for p in paths}


def test_half_precision_federation_sends_half_the_bytes(region_sites, tmp_path, server_identity):
    outcome = {}
    for dtype in ("float32", "float16", "bfloat16"):
        config = tmp_path / f"{dtype}.yaml"
        config.write_text(BODY + f"name: transfer-{dtype}\ntransfer_dtype: {dtype}\n")
        summary = run_in_process(InProcessGrid(region_sites), config, tmp_path / dtype)
        rounds = [json.loads(line) for line in (tmp_path / dtype / "rounds.jsonl").read_text().splitlines()]
        site = rounds[0]["train_sites"]["region_0"]
        outcome[dtype] = (site["bytes-down"], site["bytes-up"], summary["holdout_final"]["region_3"]["c-harrell-os"])
    print("transfer_dtype: bytes down, bytes up per site and round, held-out C (OS):", outcome)
    assert outcome["float32"][:2] == (160.0, 160.0), "40 float32 values each way"
    for dtype in ("float16", "bfloat16"):
        down, up, c_index = outcome[dtype]
        assert (down, up) == (80.0, 80.0), f"{dtype}: half the float32 bytes"
        assert c_index == pytest.approx(outcome["float32"][2], abs=0.02)

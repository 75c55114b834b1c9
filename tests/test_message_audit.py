"""What leaves a site (docs/security.md, "What leaves a site"): every reply the real ClientApp returns during
whole federations - statistics, training, evaluation, cross-site validation, baseline,
calibration and site-outputs queries - is audited for per-patient content (tests/message_audit.py), on the TCGA-BRCA
region sites (linear Cox) and on tiny multimodal sites (MRI + slides + clinical). The auditor itself
is shown to catch leaking replies.

The same federations show that a site reads every field of the coordinator's message configs
(stsfl.common.messages; tests/field_reads.py): a field that no site reads is a setting that does nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from field_reads import all_fields, site_reads  # noqa: F401 (fixture)
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from inprocess_grid import run_in_process, server_identity  # noqa: F401 (fixture)
from message_audit import AuditedGrid, MessageAudit, SitePrivates
from site_builder import make_site

from stsfl.client.lab.tcga_brca import write_region_sites
from stsfl.client.prediction.baseline_site import SiteRisks
from stsfl.client.prediction.calibration_site import calibration_reply
from stsfl.client.training.privacy import PrivacyLedger
from stsfl.common.baseline_hazard import BaselineHazard
from stsfl.common.fed_protocol import ARRAYS, CONFIG, METRICS, SITE, STATS, site_record, to_json
from stsfl.common.params import numpy_to_arrays

ALL_TYPES = {"query.stats", "train", "evaluate", "evaluate.cross", "query.baseline", "query.calibration", "query.site_outputs"}
MULTIMODAL_TYPES = ALL_TYPES | {"query.clinical_cox"}
# Config fields a federation's sites do not read, by what it leaves out: the other task's settings,
# the phases it does not run.
SECURE_LINEAR_UNREAD = {
    "RunConfig.preset",  # the multimodal task's
    "RunConfig.model_norm",
    "RunConfig.planned_epochs",  # no DP site
    "ClinicalCoxQuery.statistics",  # no clinical Cox initialisation
    "ClinicalCoxQuery.beta",
    "CrossEvaluateConfig.global_model",  # no cross-site validation under SecAgg+
}
MULTIMODAL_DP_UNREAD = {
    "RunConfig.l2_penalty",  # the linear-cox task's
    "RidgeCvQuery.statistics",
    "RidgeCvQuery.folds",
    "RidgeCvQuery.betas",
    "RoundConfig.aggregation_weight",  # no secure aggregation
    "RoundConfig.clipping_range",
}


def _report(audit: MessageAudit, label: str) -> str:
    line = f"{label}: {audit.messages} replies, {audit.bytes} bytes inspected ({audit.by_type}); {len(audit.findings)} findings"
    print(line)
    return line + "".join(f"\n  {f}" for f in audit.findings[:20])


def _run_and_audit(sites: dict, config, results, label: str, types: set[str] = ALL_TYPES) -> None:
    """A whole in-process federation whose every reply is audited: all message `types` seen, no finding."""
    audit = MessageAudit()
    run_in_process(AuditedGrid(sites, audit), config, results)
    report = _report(audit, label)
    assert set(audit.by_type) == types, report
    assert not audit.findings, report


def test_nothing_per_patient_leaves_the_tcga_region_sites(tcga_brca_dir, tmp_path, server_identity):
    sites = {p.stem: p for p in write_region_sites(tcga_brca_dir, tmp_path / "regions", regions=[0, 1, 3])}
    config = tmp_path / "federation.yaml"
    config.write_text(
        "task: linear-cox\nname: audit\nrounds: 2\ntrain: {epochs_per_round: 5, lr: 0.05, seed: 3}\n"
        "sites: [region_0, region_1, region_3]\nholdout: [region_3]\n"
        "cross_site: {enabled: true, local_epochs: 2}\n"
    )
    _run_and_audit(sites, config, tmp_path / "results", "linear-cox TCGA regions")


def test_every_config_field_is_read_by_some_site():
    assert not SECURE_LINEAR_UNREAD & MULTIMODAL_DP_UNREAD
    assert (SECURE_LINEAR_UNREAD | MULTIMODAL_DP_UNREAD) <= all_fields()


def test_nothing_per_patient_leaves_the_sites_under_secure_aggregation(tcga_brca_dir, tmp_path, server_identity, site_reads):
    """The four SecAgg+ stages replace the train reply (no cross-site validation: it is refused with
    them); the ridge penalty is cross-validated first (the folds' Cox parts are audited too)."""
    sites = {p.stem: p for p in write_region_sites(tcga_brca_dir, tmp_path / "regions", regions=[0, 1, 3])}
    config = tmp_path / "federation.yaml"
    config.write_text(
        "task: linear-cox\nname: audit-secagg\nrounds: 2\ntrain: {epochs_per_round: 5, lr: 0.05, seed: 3}\n"
        "sites: [region_0, region_1, region_3]\nholdout: [region_3]\nsecure_aggregation: {enabled: true}\n"
        "l2_penalty: cv\nridge_cv: {grid: [0.01, 0.1, 1.0], folds: 3, newton_steps: 3}\n"
    )
    types = ALL_TYPES - {"evaluate.cross"} | {"query.ridge_cv"}
    _run_and_audit(sites, config, tmp_path / "results", "linear-cox TCGA regions, SecAgg+, ridge CV", types)
    assert all_fields() - site_reads == SECURE_LINEAR_UNREAD


def test_nothing_per_patient_leaves_the_multimodal_sites(tmp_path, server_identity, site_reads):
    """...site `a` with DP-SGD included: it spends its budget over the planned round and fine-tuning."""
    sites = {}
    for i, name in enumerate(["a", "b", "held_out"]):
        site_yaml = make_site(tmp_path / name, n=12, slides=(i != 1))
        privacy = {"privacy": {"dp": True, "epsilon_budget": 8.0}} if name == "a" else {}
        site_yaml.write_text(yaml.safe_dump({**yaml.safe_load(site_yaml.read_text()), "name": name, **privacy}))
        sites[name] = site_yaml
    config = tmp_path / "federation.yaml"
    config.write_text(
        "task: multimodal\npreset: cpu-small\nmodel_norm: group\nname: audit-mm\nrounds: 1\n"
        "train: {epochs_per_round: 1}\nsites: [a, b, held_out]\nholdout: [held_out]\nvalidation_fraction: 0.34\n"
        "cross_site: {enabled: true, local_epochs: 1}\n"
    )
    _run_and_audit(sites, config, tmp_path / "results", "multimodal tiny sites", MULTIMODAL_TYPES)
    assert all_fields() - site_reads == MULTIMODAL_DP_UNREAD
    round_1 = json.loads((tmp_path / "results" / "rounds.jsonl").read_text().splitlines()[0])["train_sites"]
    assert 0 < round_1["a"]["dp-epsilon"] < 8.0 and "dp-epsilon" not in round_1["b"]
    ledger = json.loads((tmp_path / "a" / "cache" / "federations" / "audit-mm" / "privacy_ledger.json").read_text())
    assert [e["round"] for e in ledger["entries"]] == [1, 2], "the round and the cross-site fine-tuning"
    assert PrivacyLedger.epsilon_of(ledger["entries"], ledger["delta"]) == pytest.approx(8.0, rel=0.02)


# ---------------------------------------------------------------------------- the auditor catches leaks
def _message(kind: str, content: RecordDict) -> Message:
    return Message(content, dst_node_id=1, message_type=kind)


def test_the_auditor_catches_a_leaking_reply(server_identity):
    rng = np.random.default_rng(0)
    ids = {f"TCGA-XX-{i:04d}" for i in range(40)}
    times = rng.integers(30, 3000, 40).astype(float) + 0.5
    privates = SitePrivates(ids, np.unique(times), {40, 32, 8, 11}, 40)
    log_risk = np.sort(rng.normal(size=40))
    model = {"fc.weight": rng.normal(size=(1, 5)).astype(np.float32)}
    sent = _message("train", RecordDict({ARRAYS: numpy_to_arrays(model), CONFIG: ConfigRecord({"server-round": 1})}))
    leaking = RecordDict(
        {
            SITE: site_record("region_9"),
            ARRAYS: numpy_to_arrays({**model, "risks": log_risk.astype(np.float32)}),
            METRICS: MetricRecord(
                {"c-harrell-os": 0.7, "max-time": float(times[3]), "a-risk": float(log_risk[5]), "per-patient": [0.1] * 32}
            ),
            STATS: ConfigRecord({"json": to_json({"who": sorted(ids)[0], "relative": float(np.exp(log_risk[7]))})}),
        }
    )
    reply = Message(leaking, reply_to=sent)
    audit = MessageAudit()
    audit.inspect(sent, reply, privates, np.unique(np.concatenate([log_risk, np.exp(log_risk)])))
    found = "\n".join(map(str, audit.findings))
    for where in (
        "arrays/risks",
        "metrics.max-time",
        "metrics.a-risk",
        "metrics.per-patient",
        "stats.json.who",
        "stats.json.relative",
    ):
        assert where in found, found
    clean = RecordDict(
        {
            SITE: site_record("region_9"),
            ARRAYS: numpy_to_arrays(model),
            METRICS: MetricRecord({"c-harrell-os": 0.7, "num-patients": 32.0}),
        }
    )
    audit = MessageAudit()
    audit.inspect(sent, Message(clean, reply_to=sent), privates, np.unique(np.concatenate([log_risk, np.exp(log_risk)])))
    assert audit.findings == [] and audit.messages == 1 and audit.bytes > 20


def test_calibration_groups_hold_at_least_five_patients():
    """Regression: with 10-19 evaluation patients the risk deciles held single patients, whose mean
    predicted risk is that patient's absolute risk (and the observed risk their outcome)."""
    rng = np.random.default_rng(1)
    n = 12
    eta = rng.normal(size=n)
    time = rng.uniform(100, 900, n)
    event = np.ones(n)  # every patient an event before the horizon: enough (MIN_EVENTS) for an estimate
    hazard = BaselineHazard(np.array([0.0, 3000.0]), np.array([0.0, 1.0]))
    risks = SiteRisks(["os"], time[:, None], event[:, None], np.ones((n, 1), bool), eta[:, None])
    reply = calibration_reply(risks, {"os": hazard}, [1000.0])["endpoints"]["os"]["1000"]
    assert min(reply["groups"]["n"]) >= 5 and sum(reply["groups"]["n"]) == n
    absolute = 1.0 - np.exp(-hazard.at(np.array([1000.0]))[0] * np.exp(eta))
    assert not np.isin(np.round(reply["groups"]["predicted"], 12), np.round(absolute, 12)).any()

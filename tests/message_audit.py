"""An auditor of what leaves a site: every reply a ClientApp returns, checked for per-patient content.

`AuditedGrid` is the in-process grid (tests/inprocess_grid.py) that keeps each (message sent, reply
returned by the real ClientApp) pair; `MessageAudit.inspect` walks a reply's RecordDict - arrays,
metrics, configs and the JSON documents inside them - and records a finding for

- an array (or JSON list) whose length is one of the site's per-patient lengths (patients, training /
  validation / evaluation split, events), unless it is a model tensor of the shape the server sent;
- a string equal to a patient id (or containing one, for ids of 6 characters or more);
- a number equal to one of the site's event / censoring times (outside count fields and the public
  grids: baseline edges, horizons, Kaplan-Meier grid), or to a patient's log-risk, relative risk
  exp(log-risk) or absolute risk at a requested horizon under any model the message carried.

Lengths below MIN_LENGTH are left out of the length check: a 2-endpoint or 3-horizon list is
protocol structure, and such a site would be too small to hide anything anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from inprocess_grid import InProcessGrid

from stsfl.client.federation.site_task import SiteTask
from stsfl.common.baseline_hazard import BaselineHazard, time_grid
from stsfl.common.competing_risks import cumulative_incidence
from stsfl.common.fed_protocol import (
    ARRAYS,
    CONFIG,
    MODEL_PREFIX,
    NODE_SITE_CONFIG,
    NODE_SITE_NAME,
    from_json,
    reply_site_name,
)
from stsfl.common.messages import BaselineQuery, CalibrationQuery, RoundConfig, RunConfig, record_key
from stsfl.common.params import load_arrays
from stsfl.common.risk_group_km import KM_GRID_DAYS
from stsfl.tasks.linear_cox.site import LinearCoxSite, read_table

# the raw config keys the audit reads (the server's own numbers that a reply may echo)
BASELINE = record_key(CalibrationQuery, "baseline")
COMPETING_BASELINE = record_key(CalibrationQuery, "competing")
BASELINE_GRID = record_key(BaselineQuery, "grid")
HORIZONS = record_key(CalibrationQuery, "horizons_days")  # prediction horizons, days
EVAL_HORIZONS = record_key(RoundConfig, "eval_horizons_days")

MIN_LENGTH = 5
MIN_ID_CONTAINED = 6
RTOL = 1e-7
# Keys whose numbers are counts or sums over patients (integers that may equal a day count by chance).
COUNT_KEYS = {
    "n",
    "sum",
    "sumsq",
    "events",
    "patients",
    "risk_histogram",
    "observed",
    "expected",
    "usable_patients",
    "clinical",
    "mri",
    "wsi",
    "os",
    "dm",
}
COUNT_METRIC_PREFIXES = ("eval-patients", "eval-events-", "num-", "weight")


@dataclass
class SitePrivates:
    """What must not leave one site: patient ids, outcome times, the per-patient lengths."""

    ids: set[str]
    times: np.ndarray
    lengths: set[int]
    patients: int  # an integer up to this may be a count: it is not taken for a day count

    @staticmethod
    def of(task: SiteTask, impl) -> SitePrivates:
        if isinstance(impl, LinearCoxSite):
            splits = (impl.all, impl.train, impl.val, impl.test)
            ids = set(read_table(task.site.root_dir(task.site_yaml) / task.site.layout.clinical_csv).iloc[:, 0].astype(str))
            # A list as long as the feature vector is per feature (moments, names), whatever the split sizes.
            lengths = {n for s in splits for n in (len(s), s.events)} - {len(impl.features)}
            return SitePrivates(ids, np.unique(impl.all.time.numpy()), lengths, len(impl.all))
        patients = impl.prepared.patients
        times = np.array([t for p in patients for t, seen in zip(p.record.time, p.record.observed) if seen])
        lengths = {
            len(patients),
            len(impl.train_pids),
            len(impl.val_pids),
            *impl._events(impl.train_pids).values(),
            *impl._events(impl.val_pids).values(),
        }
        return SitePrivates({p.pid for p in patients}, np.unique(times), lengths, len(patients))


@dataclass
class Finding:
    message_type: str
    site: str
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.site} {self.message_type} {self.where}: {self.what}"


def _walk(value, where: str) -> Iterator[tuple[str, object]]:
    """(key path, leaf or list) of a JSON-like value; lists are yielded whole and then walked."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{where}.{key}", str(key)
            yield from _walk(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        yield where, list(value)
        for index, item in enumerate(value):
            yield from _walk(item, f"{where}[{index}]")
    else:
        yield where, value


def _nbytes(value) -> int:
    """Payload bytes of a ConfigRecord / MetricRecord value (numbers counted as 8)."""
    if isinstance(value, (str, bytes)):
        return len(value.encode() if isinstance(value, str) else value)
    if isinstance(value, list):
        return sum(_nbytes(v) for v in value)
    return 8


def _close_to_any(values: np.ndarray, secrets: np.ndarray) -> np.ndarray:
    """Mask of `values` [M] within RTOL of some element of sorted `secrets` [S]."""
    if not len(secrets) or not len(values):
        return np.zeros(len(values), bool)
    index = np.clip(np.searchsorted(secrets, values), 1, len(secrets) - 1)
    nearest = np.minimum(np.abs(secrets[index] - values), np.abs(secrets[index - 1] - values))
    return nearest <= RTOL * np.maximum(np.abs(values), 1e-12)


@dataclass
class MessageAudit:
    """Inspects replies; `messages`, `bytes` and `findings` accumulate over a run."""

    messages: int = 0
    bytes: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def inspect(
        self,
        sent: Message,
        reply: Message,
        privates: SitePrivates,
        risks: np.ndarray,
        public: Iterable[float] = (),
        site: str | None = None,
    ) -> None:
        """Check one reply; `risks` holds the per-patient log-risks, relative and absolute risks of
        the site under every model of the exchange; `public` numbers the server itself sent; `site`:
        the replying site (default: the name in the reply; SecAgg+ stage replies carry none)."""
        kind, site = sent.metadata.message_type, site or reply_site_name(reply.content)
        self.messages += 1
        self.by_type[kind] = self.by_type.get(kind, 0) + 1
        sent_shapes = {name: tuple(a.shape) for name, a in self._sent_arrays(sent.content)}
        public = np.unique(np.concatenate([np.asarray(list(public), float), np.asarray(KM_GRID_DAYS, float)]))
        numbers: list[tuple[str, float, bool]] = []  # (where, value, is a count)
        found = lambda where, what: self.findings.append(Finding(kind, site, where, what))  # noqa: E731
        for name, record in reply.content.items():
            self.bytes += len(name)
            if isinstance(record, ArrayRecord):
                for key, array in record.items():
                    values = array.numpy()
                    self.bytes += len(key) + values.nbytes
                    if sent_shapes.get(key) != values.shape:
                        found(f"{name}/{key}", f"array of shape {values.shape} that is not a model tensor the server sent")
                        if set(values.shape) & privates.lengths:
                            found(f"{name}/{key}", f"array with a per-patient length {values.shape}")
                    numbers += [(f"{name}/{key}", float(v), False) for v in values.reshape(-1)]
                continue
            items = record.items()
            for key, value in items:
                self.bytes += len(key)
                if isinstance(value, str) and key == "json":
                    self.bytes += len(value.encode())
                    leaves = _walk(from_json(value), f"{name}.json")
                else:
                    self.bytes += _nbytes(value)
                    leaves = _walk(value, f"{name}.{key}")
                    leaves = [(f"{name}", key), *leaves]
                for where, leaf in leaves:
                    counts = where.rsplit(".", 1)[-1].split("[")[0] in COUNT_KEYS or (
                        isinstance(record, MetricRecord) and key.startswith(COUNT_METRIC_PREFIXES)
                    )
                    if isinstance(leaf, list):
                        if len(leaf) >= MIN_LENGTH and len(leaf) in privates.lengths:
                            found(where, f"a list of {len(leaf)} values: the length of a per-patient list")
                    elif isinstance(leaf, str):
                        if leaf in privates.ids or any(len(p) >= MIN_ID_CONTAINED and p in leaf for p in privates.ids):
                            found(where, f"patient id in {leaf!r}")
                    elif isinstance(leaf, (int, float)) and not isinstance(leaf, bool):
                        numbers.append((where, float(leaf), counts))
        self._check_numbers(numbers, privates, risks, public, found)

    @staticmethod
    def _sent_arrays(content: RecordDict) -> Iterator[tuple[str, object]]:
        """(tensor name, Array) of every model the message carries."""
        for name, record in content.array_records.items():
            if name == ARRAYS or name.startswith(MODEL_PREFIX):
                yield from record.items()

    @staticmethod
    def _check_numbers(numbers, privates: SitePrivates, risks: np.ndarray, public: np.ndarray, found) -> None:
        if not numbers:
            return
        values = np.array([v for _, v, _ in numbers])
        finite = np.isfinite(values)
        # Within 1e-4 of 0 or +-1 a number says nothing of a patient: a network started at zero log-risk
        # gives every patient a relative risk of ~1, and norm weights start at 1.
        trivial = np.abs(values[:, None] - np.array([0.0, 1.0, -1.0])).min(axis=1) < 1e-4
        maybe_count = (values == np.round(values)) & (np.abs(values) <= privates.patients)
        is_time = _close_to_any(values, privates.times) & ~_close_to_any(values, public) & ~maybe_count
        is_risk = _close_to_any(values, risks) & ~trivial
        for (where, value, count), time, risk, ok in zip(numbers, is_time, is_risk, finite):
            if ok and time and not count:
                found(where, f"{value!r} is a patient's event or censoring time")
            if ok and risk:
                found(where, f"{value!r} is a patient's (log-, relative or absolute) risk")


def incidences(risks, cfg, horizons: list[float]) -> list[np.ndarray]:
    """Every patient's crude cumulative incidence at the horizons of each endpoint whose competing
    event's baseline the config carries (the calibration and site-outputs queries)."""
    if COMPETING_BASELINE not in cfg or BASELINE not in cfg or not horizons:
        return []
    own = {n: BaselineHazard.from_dict(h) for n, h in from_json(str(cfg[BASELINE])).items()}
    out = []
    for name, entry in from_json(str(cfg[COMPETING_BASELINE])).items():
        k, c = risks.endpoints.index(name), risks.endpoints.index(entry["cause"])
        competing = BaselineHazard.from_dict(entry["pooled"])
        eta = np.nan_to_num(risks.log_risk.astype(float))
        out.append(cumulative_incidence(eta[:, k], eta[:, c], own[name], competing, np.array(horizons, float)).reshape(-1))
    return out


def per_patient_risks(task: SiteTask, impl, sent: Message, reply: Message) -> np.ndarray:
    """Sorted log-risks, exp(log-risks) and absolute risks at the requested horizons of every patient
    of the site under every model in the message and the reply (empty for the statistics query)."""
    cfg = sent.content[CONFIG]
    if "statistics" not in cfg:
        return np.empty(0)
    statistics = from_json(str(cfg["statistics"]))
    models = [
        record
        for content in (sent.content, reply.content)
        for name, record in content.array_records.items()
        if name == ARRAYS or name.startswith(MODEL_PREFIX)
    ]
    hazards = [BaselineHazard.from_dict(h) for h in from_json(str(cfg[BASELINE])).values()] if BASELINE in cfg else []
    horizons = from_json(str(cfg[HORIZONS])) if HORIZONS in cfg else []
    out = []
    for arrays in models:
        model = impl.build_model(statistics, 0)
        load_arrays(model, arrays)
        model.eval()
        risks = impl.outcome_risks(model, statistics)
        out += incidences(risks, cfg, horizons)
        eta = risks.log_risk.astype(float)
        if isinstance(impl, LinearCoxSite) and len(impl.test):
            with torch.no_grad():
                eta = np.concatenate([eta.reshape(-1), model(impl._standardise(impl.test, statistics)).reshape(-1).numpy()])
        eta = np.asarray(eta, float).reshape(-1)
        eta = eta[np.isfinite(eta)]
        out += [eta, np.exp(eta)]
        out += [1.0 - np.exp(-h.at(np.array(horizons, float))[None, :] * np.exp(eta)[:, None]).reshape(-1) for h in hazards]
    return np.unique(np.concatenate(out)) if out else np.empty(0)


def public_numbers(sent: Message) -> list[float]:
    """Numbers the server sent that a reply may echo: the baseline grid's edges and the horizons."""
    cfg = sent.content[CONFIG]
    out: list[float] = []
    if BASELINE_GRID in cfg:
        grid = from_json(str(cfg[BASELINE_GRID]))
        out += time_grid(float(grid["bin_days"]), float(grid["max_days"])).tolist()
    for key in (HORIZONS, EVAL_HORIZONS):  # prediction and evaluation horizons, days
        if key in cfg:
            out += [float(h) for h in from_json(str(cfg[key])) or []]
    return out


class AuditedGrid(InProcessGrid):
    """The in-process grid, auditing every reply of the real ClientApp before the server sees it."""

    def __init__(self, site_yamls, audit: MessageAudit):
        super().__init__(site_yamls)
        self.audit = audit
        self._privates: dict[str, SitePrivates] = {}

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        replies = super().send_and_receive(messages, timeout=timeout)
        for sent, reply in zip(messages, replies):
            config = self.node_config[sent.metadata.dst_node_id]
            task = SiteTask.from_node_config(config[NODE_SITE_NAME], config[NODE_SITE_CONFIG])
            impl = task._impl(RunConfig.from_record(sent.content[CONFIG]))
            if task.name not in self._privates:
                self._privates[task.name] = SitePrivates.of(task, impl)
            privates = self._privates[task.name]
            risks = per_patient_risks(task, impl, sent, reply)
            self.audit.inspect(sent, reply, privates, risks, public_numbers(sent), site=task.name)
        return replies

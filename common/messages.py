"""The contract between coordinator and sites: one frozen dataclass per message config and per reply.

A config message's field states its record key, its default and its encoding once (`entry`):
`to_record()` writes the ConfigRecord the coordinator sends, `from_record()` reads it at the site
(a missing required key is an error that names it). Messages that extend another hold it as a
field (`CalibrationQuery.round` is the `RoundConfig` of the model it calibrates) and share its
record: keys are unique across the contract. Larger structured values (statistics, blend weights,
baselines) travel as JSON strings: they are small, and one schema stays in Python.

A reply is built by the site with its values and read by the coordinator with `from_record` on the
reply's RecordDict; its record keys are those of stsfl.common.fed_protocol.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from pydantic import BaseModel

from stsfl.common.config.train import ScheduleWindow, TrainConfig
from stsfl.common.fed_protocol import (
    ARRAYS,
    BASELINE,
    BLEND_STATS,
    CALIBRATION,
    CLINICAL_COX,
    METRICS,
    METRICS_PREFIX,
    PRIVACY,
    RIDGE_CV,
    SITE,
    STATS,
    from_json,
    to_json,
)
from stsfl.common.validation_split import MAX_FRACTION, MIN_SITE_EVENTS

M = TypeVar("M", bound="ConfigMessage")


@dataclass(frozen=True)
class Codec:
    """How one field's value is written into a ConfigRecord and read back."""

    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


STR = Codec(str, str)
INT = Codec(int, int)
FLOAT = Codec(float, float)
BOOL = Codec(bool, bool)
JSON = Codec(to_json, lambda text: from_json(str(text)))
OPTIONAL_STR = Codec(lambda v: v or "", lambda text: str(text) or None)  # "" on the wire: not set


def pydantic_json(model: type[BaseModel]) -> Codec:
    return Codec(lambda v: to_json(v.model_dump(mode="json")), lambda text: model.model_validate(from_json(str(text))))


def entry(key: str, codec: Codec, default: Any = dataclasses.MISSING, doc: str = "") -> Any:
    """A field sent under record key `key`; without `default` a message lacking it is refused."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"key": key, "codec": codec, "doc": doc})
    return field(default=default, metadata={"key": key, "codec": codec, "doc": doc})


class ConfigMessage:
    """Base of the config dataclasses: their ConfigRecord round trip."""

    def entries(self) -> dict[str, Any]:
        """record key -> encoded value, the nested messages' entries included (None: not sent)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, ConfigMessage):
                out.update(value.entries())
            elif value is not None:
                out[f.metadata["key"]] = f.metadata["codec"].encode(value)
        return out

    def to_record(self) -> ConfigRecord:
        return ConfigRecord(self.entries())

    @classmethod
    def from_record(cls: type[M], record: ConfigRecord | dict[str, Any]) -> M:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if "key" not in f.metadata:  # a nested message reads the same record
                values[f.name] = NESTED[f.name].from_record(record)
            elif f.metadata["key"] in record:
                values[f.name] = f.metadata["codec"].decode(record[f.metadata["key"]])
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise KeyError(f"{cls.__name__}: the message config has no {f.metadata['key']!r} ({f.name})")
        return cls(**values)


@dataclass(frozen=True)
class RunConfig(ConfigMessage):
    """What every message of a run tells a site: which federation, which task, how to train."""

    federation: str = entry("federation", STR, doc="the run's name: the site's state and outputs folder")
    task: str = entry("task", STR, doc="the task plug-in (stsfl.common.tasks)")
    recipe: TrainConfig = entry("recipe", pydantic_json(TrainConfig), doc="the effective training recipe")
    run_seed: int = entry("run-seed", INT, doc="seed of the validation split and of model initialisation")
    validation_fraction: float = entry("validation-fraction", FLOAT, doc="share of a training site's patients validated")
    min_site_validation_events: int = entry(
        "min-site-validation-events", INT, MIN_SITE_EVENTS, doc="a site with fewer validation events validates more patients"
    )
    max_validation_fraction: float = entry("max-validation-fraction", FLOAT, MAX_FRACTION, doc="the most a site's share grows to")
    preset: str = entry("preset", STR, "", doc="multimodal: the model and preprocessing preset")
    schema: dict[str, Any] = entry("schema", JSON, {}, doc="multimodal: the federation's clinical schema")
    model_norm: str | None = entry("model-norm", OPTIONAL_STR, None, doc="multimodal: normalisation layers override")
    l2_penalty: float = entry("l2-penalty", FLOAT, 0.0, doc="linear-cox: ridge penalty")
    planned_epochs: int = entry("planned-epochs", INT, 0, doc="DP sites: every local epoch the federation plans")


@dataclass(frozen=True)
class ClinicalCoxQuery(ConfigMessage):
    """Before round 1: score and information of the clinical Cox model at `beta` (per endpoint)."""

    run: RunConfig
    statistics: dict[str, Any] = entry("statistics", JSON, doc="the federated feature statistics")
    beta: list[list[float]] = entry("clinical-beta", JSON, doc="coefficients [endpoint][clinical feature]")


@dataclass(frozen=True)
class RidgeCvQuery(ConfigMessage):
    """Before round 1 (`l2_penalty: cv`): at each (fold, coefficients) the Cox parts of the training
    split without that fold, and the log-likelihood of the whole training split."""

    run: RunConfig
    statistics: dict[str, Any] = entry("statistics", JSON, doc="the federated feature statistics")
    folds: int = entry("ridge-cv-folds", INT, doc="cross-validation folds (patients by a fixed hash)")
    betas: list[dict[str, Any]] = entry("ridge-cv-betas", JSON, doc="[{'fold', 'beta': [D]}], one entry per fit")


@dataclass(frozen=True)
class RoundConfig(ConfigMessage):
    """Train or evaluate the global model of one round."""

    run: RunConfig
    server_round: int = entry("server-round", INT)
    seed: int = entry("seed", INT, doc="this round's training seed (run seed + round)")
    schedule_window: ScheduleWindow = entry("schedule-window", pydantic_json(ScheduleWindow), doc="the epochs of this round")
    statistics: dict[str, Any] = entry("statistics", JSON, doc="the federated feature statistics")
    blend_weights: dict[str, Any] | None = entry("blend-weights", JSON, None, doc="per-head gradient-blending weights")
    keep_norm_local: bool = entry("keep-norm-local", BOOL, False, doc="FedBN: normalisation layers stay at the site")
    eval_horizons_days: list[float] = entry("eval-horizons-days", JSON, [], doc="time-dependent AUC horizons, days")
    holdout_sites: list[str] = entry("holdout-sites", JSON, [], doc="held-out centres: evaluate on all patients")
    transfer_dtype: str = entry("transfer-dtype", STR, "float32", doc="the weights' type on the wire, both ways")
    aggregation_weight: str | None = entry("weight", STR, None, doc="SecAgg+: the metric that weights the update")
    clipping_range: float | None = entry("clipping-range", FLOAT, None, doc="SecAgg+: each coordinate's range")


@dataclass(frozen=True)
class CrossEvaluateConfig(ConfigMessage):
    """Cross-site validation: several models on one site's evaluation split."""

    round: RoundConfig
    global_model: str = entry("global-model", STR, doc="the name of the global model among the models sent")


@dataclass(frozen=True)
class BaselineQuery(ConfigMessage):
    """Binned events and risk sums under the selected model on the shared grid."""

    round: RoundConfig
    grid: dict[str, float] = entry("baseline-grid", JSON, doc="{'bin_days', 'max_days'}")


@dataclass(frozen=True)
class CalibrationQuery(ConfigMessage):
    """Calibration and decision curves of the absolute risks of the pooled baselines."""

    round: RoundConfig
    baseline: dict[str, Any] = entry("baseline", JSON, doc="pooled baseline hazard per endpoint")
    horizons_days: list[float] = entry("prediction-horizons-days", JSON, doc="prediction horizons, days")
    competing: dict[str, Any] = entry("competing-baseline", JSON, {}, doc="per competing endpoint: cause, pooled, bins")


@dataclass(frozen=True)
class SiteOutputsQuery(ConfigMessage):
    """Each site writes its patients' outputs at the site (absolute risks when a baseline is sent)."""

    round: RoundConfig
    horizons_days: list[float] = entry("prediction-horizons-days", JSON, doc="prediction horizons, days")
    baseline: dict[str, Any] = entry("baseline", JSON, {}, doc="pooled baseline hazard per endpoint")
    bins: dict[str, Any] = entry("baseline-bins", JSON, {}, doc="pooled bins per endpoint (risk intervals)")
    competing: dict[str, Any] = entry("competing-baseline", JSON, {}, doc="per competing endpoint: cause, pooled, bins")


def record_key(message: type[ConfigMessage], name: str) -> str:
    """The record key of field `name` of a config message (e.g. for a test that reads a raw record)."""
    return next(f.metadata["key"] for f in dataclasses.fields(message) if f.name == name)  # type: ignore[arg-type]


# the message type of each nested field name (a field holds the message it extends)
NESTED: dict[str, type[ConfigMessage]] = {"run": RunConfig, "round": RoundConfig}
CONFIG_MESSAGES: tuple[type[ConfigMessage], ...] = (
    RunConfig,
    ClinicalCoxQuery,
    RidgeCvQuery,
    RoundConfig,
    CrossEvaluateConfig,
    BaselineQuery,
    CalibrationQuery,
    SiteOutputsQuery,
)


# ---------------------------------------------------------------------------------------- replies
def _site_record(name: str) -> ConfigRecord:
    return ConfigRecord({"site-name": name})


def _floats(record: Any) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()}


@dataclass(frozen=True)
class StatsReply:
    """The statistics query's answer: clinical sums and counts, event counts, schema fingerprint."""

    site: str
    statistics: dict[str, Any]

    def to_record(self) -> RecordDict:
        return RecordDict({SITE: _site_record(self.site), STATS: ConfigRecord({"json": to_json(self.statistics)})})

    @classmethod
    def from_record(cls, content: RecordDict) -> StatsReply:
        return cls(str(content[SITE]["site-name"]), from_json(str(content[STATS]["json"])))


@dataclass(frozen=True)
class TrainReply:
    """Local training's answer: new weights (absent under SecAgg+, whose records replace them),
    aggregate metrics, per-head pooled-loss statistics and, from a DP-SGD site, its privacy spent."""

    site: str
    metrics: dict[str, float]
    blend_stats: dict[str, Any]
    privacy: dict[str, float]
    arrays: ArrayRecord | None = None

    def to_record(self, secure_records: dict[str, Any] | None = None) -> RecordDict:
        content: dict[str, Any] = {
            SITE: _site_record(self.site),
            METRICS: MetricRecord(self.metrics),
            BLEND_STATS: ConfigRecord({"json": to_json(self.blend_stats)}),
            **(secure_records or {ARRAYS: self.arrays}),
        }
        if self.privacy:
            content[PRIVACY] = ConfigRecord(self.privacy)
        return RecordDict(content)

    @classmethod
    def from_record(cls, content: RecordDict) -> TrainReply:
        return cls(
            site=str(content[SITE]["site-name"]) if SITE in content else "",  # a SecAgg+ stage reply has no site record
            metrics=_floats(content[METRICS]),
            blend_stats=from_json(str(content[BLEND_STATS]["json"])) if BLEND_STATS in content else {},
            privacy=_floats(content[PRIVACY]) if PRIVACY in content else {},
            arrays=content[ARRAYS] if ARRAYS in content else None,
        )


@dataclass(frozen=True)
class EvaluateReply:
    """An evaluation's answer: aggregate metrics (C-index, td-AUC, IBS, losses, event counts)."""

    site: str
    metrics: dict[str, float]

    def to_record(self) -> RecordDict:
        return RecordDict({SITE: _site_record(self.site), METRICS: MetricRecord(self.metrics)})

    @classmethod
    def from_record(cls, content: RecordDict) -> EvaluateReply:
        return cls(str(content[SITE]["site-name"]), _floats(content[METRICS]))


@dataclass(frozen=True)
class CrossEvaluateReply:
    """Cross-site validation's answer: the metrics of each model sent."""

    site: str
    per_model: dict[str, dict[str, float]]

    def to_record(self) -> RecordDict:
        records = {f"{METRICS_PREFIX}{name}": MetricRecord(m) for name, m in self.per_model.items()}
        return RecordDict({SITE: _site_record(self.site), **records})

    @classmethod
    def from_record(cls, content: RecordDict) -> CrossEvaluateReply:
        per_model = {
            name.removeprefix(METRICS_PREFIX): _floats(record)
            for name, record in content.metric_records.items()
            if name.startswith(METRICS_PREFIX)
        }
        return cls(str(content[SITE]["site-name"]), per_model)


@dataclass(frozen=True)
class DocumentReply:
    """A query answered with one JSON document under the record key `KEY`."""

    KEY: ClassVar[str]
    site: str
    document: dict[str, Any]

    def to_record(self) -> RecordDict:
        return RecordDict({SITE: _site_record(self.site), self.KEY: ConfigRecord({"json": to_json(self.document)})})

    @classmethod
    def from_record(cls, content: RecordDict) -> DocumentReply:
        return cls(str(content[SITE]["site-name"]), from_json(str(content[cls.KEY]["json"])))


class ClinicalCoxReply(DocumentReply):
    """Per endpoint: score, information, events and log-likelihood of the clinical Cox model."""

    KEY = CLINICAL_COX


class RidgeCvReply(DocumentReply):
    """{"parts": [{"without": CoxScore of the split without the fold, "all_loglik": float}]} in query order,
    or {"parts": [], "declined": why} from a site too small to take part."""

    KEY = RIDGE_CV


class BaselineReply(DocumentReply):
    """Per endpoint: bins on the shared grid and a log-risk histogram."""

    KEY = BASELINE


class CalibrationReply(DocumentReply):
    """Per endpoint and horizon: decile curves, decision curves and counts."""

    KEY = CALIBRATION


@dataclass(frozen=True)
class SiteOutputsReply:
    """What a site wrote at the site, as counts: risk scores, Grad-CAM overlays, problems."""

    site: str
    counts: dict[str, int]

    def to_record(self) -> RecordDict:
        return RecordDict({SITE: _site_record(self.site), METRICS: MetricRecord({k: int(v) for k, v in self.counts.items()})})

    @classmethod
    def from_record(cls, content: RecordDict) -> SiteOutputsReply:
        return cls(str(content[SITE]["site-name"]), {k: int(v) for k, v in content[METRICS].items()})

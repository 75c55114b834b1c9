"""The known survival model: a Cox model with a Weibull baseline per endpoint and a centre offset.

    log h_e(t | patient, centre) = log h0_e(t) + centre_c + clinical_e(x) + b_mri_e * z_mri + b_wsi_e * z_wsi
    h0_e(t) = (k_e / s_e) (t / s_e)^(k_e - 1)          (Weibull, t in years)

z_mri is the standardised necrosis fraction of the tumour, z_wsi the standardised log density of
mitosis-like figures on the slide; both are drawn independently of the clinical variables and of
tumour volume, so the imaging parts add information that no clinical variable carries. Local
recurrence (lr) has its own imaging part besides: + b_oedema_lr * z_oedema, the standardised
thickness of the peritumoural oedema rim on MRI (infiltrative growth, the "tail sign"), and its
clinical part holds the radiotherapy given (none raises the hazard) and the site (axial).
Censoring: administrative (uniform accrual over the centre's follow-up range) and random loss to
follow-up (exponential); distant metastasis and local recurrence are also censored at death
(death competes with both: the cause-specific hazards above act on latent times, and whichever of
death, the event and censoring comes first is observed). `first_event` records which of dm, lr
and death came first (or none: censored before any).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from stsfl.client.lab.synthetic.config import CentreProfile

DAYS_PER_YEAR = 365.25
NECROSIS_MEAN, NECROSIS_SD = 1 / 3, 0.178  # Beta(2, 4)
OEDEMA_MEAN, OEDEMA_SD = 0.225, 0.101  # Uniform(0.05, 0.4)
MITOSIS_LOG_MEAN, MITOSIS_LOG_SD = math.log(150.0), 0.7  # figures per mm^2 of tissue


@dataclass(frozen=True)
class EndpointModel:
    """Coefficients of one endpoint's log-hazard (clinical features: see `clinical_features`)."""

    intercept: float
    clinical: dict[str, float]
    mri: float
    wsi: float
    weibull_scale_years: float
    weibull_shape: float
    oedema: float = 0.0


ENDPOINTS: dict[str, EndpointModel] = {
    "os": EndpointModel(
        intercept=-0.9,
        clinical={
            "age_per_decade": 0.30,
            "log_size": 0.55,
            "grade_2": 0.4,
            "grade_3": 0.9,
            "deep": 0.2,
            "male": 0.1,
            "axial": 0.25,
            "metastasis_at_presentation": 1.0,
            "neoadjuvant_chemo": -0.1,
            "hist_leiomyosarcoma": 0.2,
            "hist_ups": 0.15,
            "hist_mpnst": 0.35,
            "hist_myxoid_liposarcoma": -0.4,
            "hist_dedifferentiated_liposarcoma": 0.2,
        },
        mri=0.7,
        wsi=0.6,
        weibull_scale_years=9.0,
        weibull_shape=1.1,
    ),
    "dm": EndpointModel(
        intercept=-0.9,
        clinical={
            "age_per_decade": 0.05,
            "log_size": 0.7,
            "grade_2": 0.45,
            "grade_3": 1.0,
            "deep": 0.3,
            "metastasis_at_presentation": 0.8,
            "neoadjuvant_chemo": -0.15,
            "hist_leiomyosarcoma": 0.35,
            "hist_synovial_sarcoma": 0.3,
            "hist_ups": 0.2,
            "hist_myxoid_liposarcoma": -0.3,
            "hist_myxofibrosarcoma": -0.3,
        },
        mri=0.55,
        wsi=0.8,
        weibull_scale_years=8.0,
        weibull_shape=0.9,
    ),
    # Local recurrence: early (shape < 1), driven by the surgical bed (no radiotherapy, axial site,
    # deep) and histology (myxofibrosarcoma and dedifferentiated liposarcoma recur locally), with
    # an MRI part (oedema rim, necrosis) and a small slide part.
    "lr": EndpointModel(
        intercept=-1.6,
        clinical={
            "log_size": 0.35,
            "grade_2": 0.25,
            "grade_3": 0.5,
            "deep": 0.25,
            "axial": 0.8,
            "no_radiotherapy": 0.7,
            "hist_myxofibrosarcoma": 0.7,
            "hist_dedifferentiated_liposarcoma": 0.6,
            "hist_synovial_sarcoma": -0.3,
        },
        mri=0.3,
        wsi=0.3,
        weibull_scale_years=10.0,
        weibull_shape=0.8,
        oedema=0.6,
    ),
}
COMPETING = ("dm", "lr")  # endpoints censored at death (death competes with them)


def z_necrosis(fraction: float) -> float:
    return (fraction - NECROSIS_MEAN) / NECROSIS_SD


def z_oedema(thickness: float) -> float:
    return (thickness - OEDEMA_MEAN) / OEDEMA_SD


def z_mitosis(per_mm2: float) -> float:
    return (math.log(per_mm2) - MITOSIS_LOG_MEAN) / MITOSIS_LOG_SD


def draw_latents(rng: np.random.Generator) -> dict[str, float]:
    """The imaging latents: necrosis fraction (0-1), mitoses per mm^2, oedema thickness."""
    return {
        "necrosis_fraction": float(np.clip(rng.beta(2, 4), 0.02, 0.85)),
        "mitoses_per_mm2": float(np.exp(rng.normal(MITOSIS_LOG_MEAN, MITOSIS_LOG_SD))),
        "oedema": float(rng.uniform(0.05, 0.4)),  # a nuisance for os and dm, part of the lr hazard
    }


def clinical_features(clinical: dict[str, object]) -> dict[str, float]:
    """Numeric features the clinical part of the log-hazard uses."""
    features = {
        "age_per_decade": (float(clinical["age"]) - 60) / 10,
        "log_size": math.log(float(clinical["tumour_size"]) / 7),
        "grade_2": float(clinical["grade"] == "2"),
        "grade_3": float(clinical["grade"] == "3"),
        "deep": float(clinical["depth"] == "deep"),
        "male": float(clinical["sex"] == "male"),
        "axial": float(clinical["location"] == "axial"),
        "metastasis_at_presentation": float(clinical["metastasis_at_presentation"]),
        "neoadjuvant_chemo": float(clinical["neoadjuvant_chemo"]),
        "no_radiotherapy": float(clinical["radiotherapy"] == "none"),
    }
    features[f"hist_{clinical['histology']}"] = 1.0
    return features


def log_hazard_parts(
    clinical: dict[str, object], necrosis_fraction: float, mitoses_per_mm2: float, centre_shift: float, oedema: float
) -> dict[str, float]:
    """`{e}_clinical, {e}_mri, {e}_wsi, {e}_centre, {e}_log_hazard` for every endpoint e."""
    features = clinical_features(clinical)
    parts: dict[str, float] = {}
    for name, model in ENDPOINTS.items():
        clin = model.intercept + sum(coef * features.get(key, 0.0) for key, coef in model.clinical.items())
        mri = model.mri * z_necrosis(necrosis_fraction) + model.oedema * z_oedema(oedema)
        wsi = model.wsi * z_mitosis(mitoses_per_mm2)
        parts |= {f"{name}_clinical": clin, f"{name}_mri": mri, f"{name}_wsi": wsi, f"{name}_centre": centre_shift}
        parts[f"{name}_log_hazard"] = clin + mri + wsi + centre_shift
    return parts


def _weibull_time(rng: np.random.Generator, model: EndpointModel, log_hazard: float) -> float:
    """Inverse-CDF draw in years: S(t) = exp(-(t / s)^k * exp(log_hazard))."""
    return model.weibull_scale_years * (-math.log(rng.random()) * math.exp(-log_hazard)) ** (1 / model.weibull_shape)


def draw_outcomes(
    rng: np.random.Generator, parts: dict[str, float], profile: CentreProfile, dm_missing: bool, lr_rng: np.random.Generator
) -> dict[str, float | int | str | None]:
    """Observed `os_time, os_event, dm_time, dm_event, lr_time, lr_event` (days, 0/1; DM is None
    when not followed) and the truth `first_event` (dm, lr, death or none) with `first_event_time`.
    Local recurrence is drawn from its own generator `lr_rng`, so the other outcomes of a seed do
    not change with it."""
    death = _weibull_time(rng, ENDPOINTS["os"], parts["os_log_hazard"])
    metastasis = _weibull_time(rng, ENDPOINTS["dm"], parts["dm_log_hazard"])
    administrative = rng.uniform(*profile.follow_up_years)
    lost = rng.exponential(1 / profile.dropout_per_year) if profile.dropout_per_year > 0 else math.inf
    censor = min(administrative, lost)

    def days(years: float) -> int:
        return max(1, math.ceil(years * DAYS_PER_YEAR))

    outcome: dict[str, float | int | None] = {"os_time": days(min(death, censor)), "os_event": int(death <= censor)}
    dm_end = min(death, censor)
    outcome["dm_time"] = None if dm_missing else days(min(metastasis, dm_end))
    outcome["dm_event"] = None if dm_missing else int(metastasis <= dm_end)
    recurrence = _weibull_time(lr_rng, ENDPOINTS["lr"], parts["lr_log_hazard"])
    outcome["lr_time"], outcome["lr_event"] = days(min(recurrence, dm_end)), int(recurrence <= dm_end)
    first, cause = min((metastasis, "dm"), (recurrence, "lr"), (death, "death"))
    outcome["first_event"] = cause if first <= censor else "none"
    outcome["first_event_time"] = days(min(first, censor))
    return outcome


def describe_model() -> dict[str, object]:
    """The hazard model as plain data, for cohort.json."""
    return {
        "endpoints": {name: asdict(model) for name, model in ENDPOINTS.items()},
        "z_mri": f"(necrosis_fraction - {NECROSIS_MEAN:.4f}) / {NECROSIS_SD}",
        "z_oedema": f"(oedema - {OEDEMA_MEAN}) / {OEDEMA_SD}",
        "competing_with_death": list(COMPETING),
        "z_wsi": f"(ln(mitoses_per_mm2) - ln(150)) / {MITOSIS_LOG_SD}",
        "time_unit_of_baseline": "years",
    }

"""The 11 clinical variables of configs/schema.yaml, drawn with plausible STS distributions.

Frequencies follow large STS series loosely (deep > superficial, lower limb most common, UPS and
myxofibrosarcoma the most frequent subtypes); a centre's profile shifts its age and grade mix
and its radiotherapy practice. `tumour_volume` is not drawn here: it is measured from the
tumour that the MRI is rendered from (see tumour.py), as a hospital would.
"""

from __future__ import annotations

import numpy as np

from stsfl.client.lab.synthetic.config import CentreProfile

HISTOLOGY = {
    "ups": 0.22,
    "myxofibrosarcoma": 0.15,
    "myxoid_liposarcoma": 0.12,
    "dedifferentiated_liposarcoma": 0.10,
    "leiomyosarcoma": 0.13,
    "synovial_sarcoma": 0.08,
    "mpnst": 0.05,
    "other": 0.15,
}
LOCATION = {"lower_extremity": 0.6, "upper_extremity": 0.15, "axial": 0.25}
RADIOTHERAPY = ("none", "preoperative", "postoperative")
SIZE_RANGE_CM = (1.5, 16.0)


def _choice(rng: np.random.Generator, probs: dict[str, float]) -> str:
    names = list(probs)
    return names[rng.choice(len(names), p=np.array(list(probs.values())) / sum(probs.values()))]


def draw_clinical(rng: np.random.Generator, profile: CentreProfile) -> dict[str, object]:
    """One patient's clinical variables (schema names and category spellings), without tumour_volume."""
    age = float(np.clip(round(rng.normal(profile.age_mean, 14.0)), 18, 95))
    sex = "male" if rng.random() < 0.55 else "female"
    depth = "deep" if rng.random() < 0.72 else "superficial"
    median_cm = 7.0 if depth == "deep" else 4.5
    size = float(np.clip(np.exp(rng.normal(np.log(median_cm), 0.45)), *SIZE_RANGE_CM))
    grade = int(rng.choice(3, p=np.array(profile.grade_probs))) + 1
    chemo_p = 0.08 + 0.25 * (grade == 3) + 0.10 * (size > 10)
    metastatic_p = 0.04 + 0.06 * (grade == 3)
    return {
        "age": age,
        "sex": sex,
        "tumour_size": round(size, 1),
        "depth": depth,
        "grade": str(grade),
        "histology": _choice(rng, HISTOLOGY),
        "location": _choice(rng, LOCATION),
        "neoadjuvant_chemo": int(rng.random() < chemo_p),
        "metastasis_at_presentation": int(rng.random() < metastatic_p),
        "radiotherapy": RADIOTHERAPY[int(rng.choice(3, p=np.array(profile.radiotherapy_probs)))],
    }

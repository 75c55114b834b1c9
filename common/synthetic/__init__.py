"""Synthetic multi-centre soft-tissue sarcoma cohort in real file formats, with a known hazard.

Each centre is a site folder of the DESIGN.md data contract (clinical.csv, NIfTI T1/T2/mask,
pyramidal TIFF slides, site.yaml); outcomes come from a Cox model whose log-hazard sums a
clinical, an MRI (necrosis fraction), a WSI (mitosis-like figure density) and a centre part,
so every model can be compared with the oracle C-index.
"""

from .config import CentreProfile, MriGrid, SynthConfig, WsiSettings, load_synth_config
from .generate import generate_cohort, read_cohort

__all__ = [
    "CentreProfile",
    "MriGrid",
    "SynthConfig",
    "WsiSettings",
    "generate_cohort",
    "load_synth_config",
    "read_cohort",
]

"""Synthetic multi-centre soft-tissue sarcoma cohort in real file formats, with a known hazard.

    generate_cohort(load_synth_config(), "data/synthetic")     # or: stsfl synth --out DIR

writes, for each centre `center_<i>` (a site folder of the site data contract, docs/site-operator.md):

    center_<i>/clinical.csv          patient_id, the 11 schema variables, os_time, os_event, dm_time, dm_event,
                                     lr_time, lr_event (days, 0/1; dm empty for ~2% of patients: not followed
                                     for DM; dm and lr are censored at death, which competes with them)
    center_<i>/mri/<pid>/t1.nii.gz   T1 post-contrast, int16; t2.nii.gz T2 fat-sat, int16 (own grid at center_2)
    center_<i>/mri/<pid>/mask.nii.gz tumour mask 0/1 on the T1 grid (on the T2 grid at center_2)
    center_<i>/wsi/<pid>.tiff        tiled pyramidal RGB TIFF, 0.5 microns per pixel at level 0 (OpenSlide)
    center_<i>/site.yaml             a SiteConfig whose root is the centre folder

and beside them ground_truth.csv (per patient: `{os,dm,lr}_{clinical,mri,wsi,centre}` and their sum
`{os,dm,lr}_log_hazard`; first_event (dm, lr, death or none) and first_event_time; the latents necrosis_fraction, mitoses_per_mm2, oedema; has_mri, has_wsi;
the declared MRI geometry t1_/t2_{size,spacing,origin} and mask_grid; tissue_mm2),
cohort.json (settings, hash, hazard model, per-centre counts and oracle C-index) and preview.png.
Patient ids are `C<i>-<nnnn>`, unique across centres. Outcomes come from the Cox model of hazard.py.
"""

from stsfl.client.lab.synthetic.config import CentreProfile, MriGrid, SynthConfig, WsiSettings, load_synth_config
from stsfl.client.lab.synthetic.generate import generate_cohort, patient_record, read_cohort
from stsfl.client.lab.synthetic.summary import oracle_c

__all__ = [
    "CentreProfile",
    "MriGrid",
    "SynthConfig",
    "WsiSettings",
    "generate_cohort",
    "load_synth_config",
    "oracle_c",
    "patient_record",
    "read_cohort",
]

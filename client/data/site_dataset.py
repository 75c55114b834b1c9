"""The site's torch Dataset: one PatientSample per usable patient, read from the preprocessing
cache (no image is decoded here), clinical vector encoded with the given statistics."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import torch
from torch.utils.data import Dataset

from stsfl.client.mri.augment import augment_mri, item_seed, mri_augmentation
from stsfl.client.data.clinical_encoding import encode_record, local_clinical_stats
from stsfl.client.data.site_prepare import PreparedPatient, PreparedSite
from stsfl.common.batch import PatientSample, collate_patients
from stsfl.common.clinical_stats import GlobalClinicalStats
from stsfl.common.config import ModelPreset
from stsfl.common.console import UserError


class SiteDataset(Dataset):
    """Yields PatientSample: mri [2, D, H, W] or None; wsi [N, E] or None; clinical [C];
    time / event / endpoint_observed [K] in schema endpoint order.

    clinical_stats: the federation's GlobalClinicalStats (default: this site's own statistics).
    train: apply MRI augmentation (seeded per (seed, epoch, patient); call set_epoch each epoch).
    pids: restrict to these patients (e.g. a train / validation split), in the given order."""

    def __init__(
        self,
        prepared: PreparedSite,
        clinical_stats: GlobalClinicalStats | None = None,
        *,
        train: bool = False,
        pids: Sequence[str] | None = None,
        seed: int = 0,
    ):
        self.prepared = prepared
        self.schema = prepared.schema
        self.stats = clinical_stats or local_clinical_stats((p.record for p in prepared.patients), prepared.schema)
        by_pid = {p.pid: p for p in prepared.patients}
        if pids is not None:
            unknown = [pid for pid in pids if pid not in by_pid]
            if unknown:
                raise UserError(f"site {prepared.name}: not usable patients: {', '.join(unknown[:5])}")
        self.patients: list[PreparedPatient] = [by_pid[pid] for pid in pids] if pids is not None else list(prepared.patients)
        self.train = train
        self.seed = seed
        self.epoch = 0
        self._augment = mri_augmentation(prepared.preset.preprocessing.augmentation) if train else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.patients)

    @property
    def pids(self) -> list[str]:
        return [p.pid for p in self.patients]

    def _cached(self, kind: str, key: str, name: str) -> np.ndarray:
        entry = self.prepared.cache.load(kind, key, [name])
        if entry is None:
            raise UserError(
                f"{self.prepared.cache.entry_path(kind, key)}: cache entry gone since prepare_site; prepare the site again"
            )
        return entry[name]

    def __getitem__(self, index: int) -> PatientSample:
        patient = self.patients[index]
        record = patient.record
        mri = wsi = None
        if patient.mri_key is not None:
            volume = self._cached("mri", patient.mri_key, "volume")
            if self._augment is not None:
                volume = augment_mri(self._augment, volume, item_seed(self.seed, self.epoch, record.pid))
            mri = torch.from_numpy(volume)
        if patient.wsi_key is not None:
            wsi = torch.from_numpy(self._cached("wsi", patient.wsi_key, "bag"))
        observed = np.asarray(record.observed, dtype=bool)
        return PatientSample(
            pid=record.pid,
            clinical=torch.from_numpy(encode_record(record, self.stats, self.schema)),
            time=torch.from_numpy(np.where(observed, record.time, 0.0).astype(np.float32)),
            event=torch.from_numpy(np.where(observed, record.event, 0.0).astype(np.float32)),
            endpoint_observed=torch.from_numpy(observed),
            mri=mri,
            wsi=wsi,
        )


def site_collate(preset: ModelPreset):
    """collate_fn for a DataLoader over a SiteDataset: PatientSamples -> SurvivalBatch."""
    return partial(collate_patients, mri_shape=tuple(preset.mri.input_size), wsi_dim=preset.wsi.embed_dim)

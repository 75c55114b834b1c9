"""Cache-or-compute of the preprocessed entries of a site: one patient's MRI crop and slide bag
(encoded tiles, or pre-extracted features), sequentially or in a process pool.

Each entry is computed on its own from its input files and settings and written to the cache by
whoever computed it (atomic renames), so computing the missing entries in parallel first and
then reading them all in patient order gives exactly the sequential result: same arrays, same
cached failures, same problems in the same order. Workers are started with `spawn` (a fork of a
process whose OpenMP pool is running can hang) and use one torch thread each.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from stsfl.client.mri.mri_io import MriPaths, input_files
from stsfl.client.mri.mri_preprocess import preprocess_mri
from stsfl.client.slides.patch_encoder import PatchEncoder
from stsfl.client.data.preprocess_cache import PreprocessCache
from stsfl.client.problems import PatientDataError
from stsfl.client.slides.wsi_bag import slide_bag
from stsfl.client.slides.wsi_features import read_features
from stsfl.client.slides.wsi_tiles import sample_tiles
from stsfl.common.config import ModelPreset
from stsfl.common.radiomics import radiomics_vector

Job = tuple[str, str, object]  # (cache kind "mri" | "wsi", key, MriPaths | slide or features path)


class EntryMaker:
    """Keys, cache look-ups and computation of MRI and slide entries under one preset; `extractor`
    set: slides are pre-extracted features files made by it. Counts what it computed in
    `computed` and the seconds of each step in `seconds`."""

    def __init__(self, preset: ModelPreset, cache: PreprocessCache, need_encoder: bool, extractor: str | None):
        self.preset = preset
        self.cache = cache
        pre = preset.preprocessing
        self.mri_settings = {"mri": pre.mri.model_dump(mode="json"), "size": list(preset.mri.input_size)}
        self.extractor = extractor
        self.encoder = PatchEncoder(pre.wsi, preset.wsi.embed_dim) if need_encoder and extractor is None else None
        if self.encoder is not None:
            self.encoder_name, self.fingerprint = self.encoder.name, self.encoder.fingerprint
        elif need_encoder:
            self.encoder_name = extractor
            self.fingerprint = hashlib.sha256(f"pre_extracted:{extractor}".encode()).hexdigest()[:16]
        else:
            self.encoder_name = self.fingerprint = None
        wsi = pre.wsi.model_dump(mode="json")
        wsi["encoder"].pop("batch_size")  # batching does not change the embedding
        self.wsi_settings = {"wsi": wsi, "embed_dim": preset.wsi.embed_dim, "weights": self.fingerprint}
        self.feature_dims: set[int] = set()
        self.seconds: dict[str, float] = defaultdict(float)
        self.computed: dict[str, int] = defaultdict(int)

    # ------------------------------------------------------------------ keys
    def mri_key(self, paths: MriPaths) -> str:
        labelled = [(role, f) for role, p in zip(("t1", "t2", "mask"), paths.all()) for f in input_files(p)]
        return self.cache.key("mri", self.mri_settings, labelled)

    def wsi_key(self, path: Path) -> str:
        return self.cache.key("wsi", self.wsi_settings, [("features" if self.extractor else "slide", path)])

    def missing(self, kind: str, key: str) -> bool:
        """Neither the entry nor a cached failure exists."""
        return not self.cache.entry_path(kind, key).exists() and self.cache.load_failure(kind, key) is None

    # ------------------------------------------------------------------ computing
    def _compute(self, kind: str, source) -> dict[str, np.ndarray]:
        if kind == "mri":
            result = preprocess_mri(source, self.preset.preprocessing.mri, self.preset.mri.input_size)
            for step, sec in result.seconds.items():
                self.seconds[f"mri_{step}"] += sec
            return {"volume": result.volume, "mask": result.mask, "radiomics": radiomics_vector(result.volume)}
        cfg = self.preset.preprocessing.wsi
        if self.extractor:
            bag, coords = read_features(source, self.extractor)
            rows = sample_tiles(np.arange(len(bag)).reshape(-1, 1), cfg.max_tiles, cfg.sampling_seed)[:, 0]
            return {"bag": bag[rows], "coords": coords[rows], "n_tissue_tiles": np.asarray(len(bag))}
        result = slide_bag(source, cfg, self.encoder)
        for step, sec in result.seconds.items():
            self.seconds[f"wsi_{step}"] += sec
        self.computed["wsi_tiles"] += len(result.bag)
        return {"bag": result.bag, "coords": result.coords, "n_tissue_tiles": np.asarray(result.n_tissue_tiles)}

    def ensure(self, kind: str, key: str, source) -> None:
        """Compute and store the entry unless it (or a cached failure) exists; raise PatientDataError."""
        failure = self.cache.load_failure(kind, key)
        if failure is not None:
            raise PatientDataError(failure["reason"], failure.get("file"), failure.get("column"))
        if self.cache.entry_path(kind, key).exists():
            return
        try:
            arrays = self._compute(kind, source)
        except PatientDataError as err:
            self.cache.store_failure(kind, key, {"reason": err.reason, "file": err.file, "column": err.column})
            self.computed[f"{kind}_failed"] += 1
            raise
        except Exception as err:  # one bad patient never crashes a site; not cached (may be transient)
            where = source.t1.parent if isinstance(source, MriPaths) else source
            raise PatientDataError(f"unexpected {type(err).__name__}: {err}", str(where)) from err
        self.cache.store(kind, key, arrays)
        self.computed[kind] += 1

    def mri(self, paths: MriPaths) -> str:
        key = self.mri_key(paths)
        self.ensure("mri", key, paths)
        return key

    def wsi(self, path: Path) -> str:
        """The slide's (or features file's) entry key; features of another width than the
        preset's raise PatientDataError (their width is recorded in feature_dims)."""
        key = self.wsi_key(path)
        self.ensure("wsi", key, path)
        width = self.cache.load("wsi", key, ["bag"])["bag"].shape[1] if self.extractor else self.preset.wsi.embed_dim
        self.feature_dims.add(width)
        if width != self.preset.wsi.embed_dim:
            raise PatientDataError(
                f"features of dimension {width}, the federation's wsi.embed_dim is {self.preset.wsi.embed_dim}", str(path)
            )
        return key

    # ------------------------------------------------------------------ in parallel
    def fill(self, jobs: list[Job], workers: int, done: Callable[[], None]) -> None:
        """Compute the jobs' entries in `workers` processes (failures are cached as failures, as
        sequentially); `done` is called after each job; seconds and counts are added up here."""
        context = multiprocessing.get_context("spawn")
        init = (self.preset, self.cache.root, self.encoder is not None or self.extractor is not None, self.extractor)
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=init) as pool:
            for future in as_completed([pool.submit(_run_job, job) for job in jobs]):
                seconds, computed = future.result()
                for step, sec in seconds.items():
                    self.seconds[step] += sec
                for kind, n in computed.items():
                    self.computed[kind] += n
                done()


_WORKER: EntryMaker | None = None


def _start_worker(preset: ModelPreset, cache_root: Path, need_encoder: bool, extractor: str | None) -> None:
    import torch

    global _WORKER
    torch.set_num_threads(1)  # the processes are the parallelism
    _WORKER = EntryMaker(preset, PreprocessCache(cache_root), need_encoder, extractor)


def _run_job(job: Job) -> tuple[dict[str, float], dict[str, int]]:
    """One entry in a worker: (seconds per step, counts) of this job alone."""
    _WORKER.seconds.clear()
    _WORKER.computed.clear()
    try:
        _WORKER.ensure(*job)
    except PatientDataError:
        pass  # cached as a failure, or (unexpected) left for the sequential pass to raise again
    return dict(_WORKER.seconds), dict(_WORKER.computed)

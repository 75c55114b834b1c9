"""Pre-extracted slide features: one file per patient, as CLAM and TRIDENT write them.

`<pid>.h5`: datasets `features` [N, E] (or [1, N, E]) and `coords` [N, 2] (level-0 x, y);
`<pid>.pt`: a tensor [N, E] (CLAM's .pt, no coordinates) or a dict with `features` and optionally
`coords`. A file may name its extractor (HDF5 attribute `extractor` on the file or on `features`,
the dict key `extractor`); it must then be the site's `wsi_features_extractor`. Every problem is
a PatientDataError naming the file, so the patient keeps its other modalities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stsfl.client.problems import PatientDataError


def _read_h5(path: Path) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    import h5py

    with h5py.File(path, "r") as handle:
        if "features" not in handle:
            raise PatientDataError(f"no `features` dataset (has: {', '.join(handle) or 'nothing'})", str(path))
        features = handle["features"][()]
        coords = handle["coords"][()] if "coords" in handle else None
        named = handle.attrs.get("extractor", handle["features"].attrs.get("extractor"))
    return features, coords, None if named is None else str(named.decode() if isinstance(named, bytes) else named)


def _read_pt(path: Path) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, torch.Tensor):
        return data.numpy(), None, None
    if isinstance(data, dict) and isinstance(data.get("features"), torch.Tensor):
        coords = data.get("coords")
        return data["features"].numpy(), None if coords is None else np.asarray(coords), data.get("extractor")
    raise PatientDataError("neither a features tensor [N, E] nor a dict with `features`", str(path))


def read_features(path: Path, extractor: str) -> tuple[np.ndarray, np.ndarray]:
    """(features [N, E] float32, coords [N, 2] int64; -1 where the file has none). E is not checked
    here: the site records every width it finds and drops the files of another width."""
    try:
        features, coords, named = (_read_pt if path.suffix == ".pt" else _read_h5)(path)
    except PatientDataError:
        raise
    except Exception as err:  # truncated HDF5, foreign pickle: the file is unusable, whatever the library says
        raise PatientDataError(f"cannot read the features file ({type(err).__name__}: {err})", str(path)) from None
    if named is not None and named != extractor:
        raise PatientDataError(f"features made by {named!r}, the site's wsi_features_extractor is {extractor!r}", str(path))
    if features.ndim == 3 and features.shape[0] == 1:
        features = features[0]
    if features.ndim != 2 or len(features) == 0:
        raise PatientDataError(f"features of shape {tuple(features.shape)}, expected [N, E] with N > 0", str(path))
    if not np.isfinite(features).all():
        raise PatientDataError("features contain NaN or infinite values", str(path))
    if coords is None:
        coords = np.full((len(features), 2), -1)
    elif coords.shape != (len(features), 2):
        raise PatientDataError(f"coords of shape {tuple(coords.shape)} for {len(features)} feature rows", str(path))
    return features.astype(np.float32), coords.astype(np.int64)

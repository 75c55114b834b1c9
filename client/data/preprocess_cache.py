"""On-disk cache of preprocessed inputs, keyed by input content and preprocessing settings.

key = sha256(kind, settings JSON, content hashes of the input files, PIPELINE_VERSION). A changed
file or setting therefore changes exactly the keys of the entries that used it; old entries are
simply never read again. Content hashes are remembered per file by (size, mtime) in
`file_hashes.json`, so a fresh process does not re-read unchanged inputs (as git's index does).
Failures are cached too (the reason as JSON), so a known-bad file is not re-decoded every run.
Writes go to a temporary file and are renamed into place (stsfl.common.atomic_file): a crash never
leaves half an entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stsfl.common.atomic_file import atomic_path, write_bytes_atomic

# Bump when the preprocessing code changes what it produces for the same inputs and settings.
PIPELINE_VERSION = "1"
_CHUNK = 1 << 20
# entries hold patients' preprocessed images: readable by the site's own user only
_FILE_MODE = 0o600


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data, mode=_FILE_MODE)


class FileHashes:
    """sha256 of file contents, remembered by (path, size, mtime_ns) across runs."""

    def __init__(self, index_path: Path):
        self.index_path = index_path
        self.dirty = False
        try:
            self.index: dict[str, list] = json.loads(index_path.read_text())
        except (OSError, ValueError):
            self.index = {}

    def of(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        known = self.index.get(key)
        if known and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
            return known[2]
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        self.index[key] = [stat.st_size, stat.st_mtime_ns, digest.hexdigest()]
        self.dirty = True
        return digest.hexdigest()

    def save(self) -> None:
        if self.dirty:
            _write_bytes(self.index_path, json.dumps(self.index).encode())
            self.dirty = False


class PreprocessCache:
    """Entries <root>/<kind>/<key[:2]>/<key>.npz (arrays) or <key>.error.json (a cached failure)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.hashes = FileHashes(self.root / "file_hashes.json")

    def key(self, kind: str, settings: dict, inputs: Sequence[tuple[str, Path]]) -> str:
        """Key of an entry made from labelled input files (label: e.g. the MRI role) under `settings`."""
        digest = hashlib.sha256(json.dumps([kind, PIPELINE_VERSION, settings], sort_keys=True).encode())
        for label, path in inputs:
            digest.update(f"\0{label}\0{path.name}\0{self.hashes.of(path)}".encode())
        return digest.hexdigest()

    def _path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / key[:2] / f"{key}{suffix}"

    def load(self, kind: str, key: str, names: Sequence[str] | None = None) -> dict[str, np.ndarray] | None:
        """The entry's arrays (only `names` if given), or None when absent."""
        path = self._path(kind, key, ".npz")
        if not path.exists():
            return None
        with np.load(path) as data:
            return {name: data[name] for name in (names or data.files)}

    def store(self, kind: str, key: str, arrays: dict[str, np.ndarray]) -> None:
        path = self._path(kind, key, ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, mode=_FILE_MODE) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    def load_failure(self, kind: str, key: str) -> dict | None:
        path = self._path(kind, key, ".error.json")
        return json.loads(path.read_text()) if path.exists() else None

    def store_failure(self, kind: str, key: str, failure: dict) -> None:
        _write_bytes(self._path(kind, key, ".error.json"), json.dumps(failure).encode())

    def entry_path(self, kind: str, key: str) -> Path:
        return self._path(kind, key, ".npz")

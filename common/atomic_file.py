"""Atomic file writes: the content goes to a temporary file beside the target, which is renamed onto
the target (os.replace, atomic on POSIX) only once it is complete. A crash or an error half-way
therefore never leaves a half-written file: a reader sees the old file or the new one, never a mix.

    write_text_atomic(path, text)             a text file (UTF-8 unless told)
    write_bytes_atomic(path, data, mode=...)  a binary file
    with atomic_path(path) as tmp: ...        any writer that takes a path or opens one itself
                                              (torch.save, np.savez, zipfile, csv, savefig)

The temporary name holds the process id and a random part, so two writers of the same target
(threads, processes) never write into each other's temporary file; the last rename wins whole.
It is a hidden file that keeps the target's suffix, for writers that choose the format by it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _temporary_beside(path: Path) -> Path:
    """A fresh temporary name in `path`'s folder (same file system, so the rename is atomic)."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}{path.suffix}")


@contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` when the block ends normally and is
    removed when the block raises (`path` is then untouched). `mode`: create the temporary file,
    empty, with these permission bits (less the umask) before the block, so that the content is
    never readable by others for a moment; None leaves creating it to the writer (usual umask bits)."""
    path = Path(path)
    tmp = _temporary_beside(path)
    try:
        if mode is not None:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes, mode: int | None = None) -> None:
    """Write `data` to `path` atomically; `mode` as in atomic_path (e.g. 0o600 for a secret)."""
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)

"""stsfl.common.atomic_file: a write either lands whole or leaves the old file as it was."""

from __future__ import annotations

import os
import stat
import threading
import zipfile

import numpy as np
import pytest
import torch

from stsfl.common.atomic_file import atomic_path, write_bytes_atomic, write_text_atomic


def test_text_and_bytes_round_trip(tmp_path):
    text_path, bytes_path = tmp_path / "note.json", tmp_path / "blob.bin"
    write_text_atomic(text_path, "Überlebenszeit: 5 Jahre\n")
    write_bytes_atomic(bytes_path, bytes(range(256)))
    assert text_path.read_text(encoding="utf-8") == "Überlebenszeit: 5 Jahre\n"
    assert bytes_path.read_bytes() == bytes(range(256))
    write_text_atomic(text_path, "second", encoding="latin-1")  # replaces the file
    assert text_path.read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin", "note.json"]


def test_a_writer_that_raises_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "site_metrics.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp != target
            tmp.write_text("half a ne")
            raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["site_metrics.csv"]


def test_text_that_fails_to_encode_half_way_keeps_the_old_file(tmp_path):
    target = tmp_path / "report.html"
    write_text_atomic(target, "old")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(target, "x" * 100_000 + "é", encoding="ascii")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_a_failed_first_write_leaves_nothing_even_when_the_temporary_was_made_first(tmp_path):
    with pytest.raises(TypeError):
        write_bytes_atomic(tmp_path / "worker.token", "not bytes", mode=0o600)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_writers_that_take_a_path_land_under_the_target_name(tmp_path):
    arrays = {"w": np.arange(6.0).reshape(2, 3), "b": np.array([1, 2], np.int64)}
    # np.savez adds ".npz" to a name without it: the temporary keeps the target's suffix
    with atomic_path(tmp_path / "model_final.npz") as tmp:
        np.savez(tmp, **arrays)
    with np.load(tmp_path / "model_final.npz") as back:
        assert {k: back[k].tolist() for k in back.files} == {k: v.tolist() for k, v in arrays.items()}
    with atomic_path(tmp_path / "last.pt") as tmp:
        torch.save({"epoch": 3, "weight": torch.ones(2)}, tmp)
    assert torch.load(tmp_path / "last.pt")["epoch"] == 3
    with atomic_path(tmp_path / "model.stsfl") as tmp, zipfile.ZipFile(tmp, "w") as archive:
        archive.writestr("manifest.json", "{}")
    assert zipfile.ZipFile(tmp_path / "model.stsfl").namelist() == ["manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "model.stsfl", "model_final.npz"]


def test_mode_makes_a_private_file_and_the_default_follows_the_umask(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what an ordinary write makes under this umask
    write_text_atomic(tmp_path / "status.json", "{}")
    assert stat.S_IMODE((tmp_path / "status.json").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    token = tmp_path / "worker.token"
    token.write_bytes(b"old")
    token.chmod(0o644)
    seen = []
    with atomic_path(token, mode=0o600) as tmp:
        seen.append(stat.S_IMODE(tmp.stat().st_mode))  # private before any content is in it
        tmp.write_bytes(b"secret")
    write_bytes_atomic(token, b"secret", mode=0o600)
    assert seen == [0o600] and stat.S_IMODE(token.stat().st_mode) == 0o600
    assert token.read_bytes() == b"secret"


def test_each_writer_gets_its_own_temporary(tmp_path):
    target = tmp_path / "checkpoint.npz"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        assert str(os.getpid()) in first.name and first.name.startswith(".")
        first.write_bytes(b"first")
        second.write_bytes(b"second")
    assert target.read_bytes() == b"first"  # the outer block ends last: its rename wins


def test_concurrent_writers_never_mix_their_contents(tmp_path):
    target = tmp_path / "status.json"
    contents = [bytes([65 + i]) * 200_000 for i in range(4)]
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            for _ in range(10):
                write_bytes_atomic(target, data)
        except BaseException as err:  # a temporary clobbered by another thread would show up here
            errors.append(err)

    threads = [threading.Thread(target=write, args=(data,)) for data in contents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert target.read_bytes() in contents
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]

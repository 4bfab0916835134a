"""The one file writer and the one file lock: a write that fails half-way leaves the old file and
no temporary one; an exclusive write never replaces a file; the lock excludes another holder; a
distillation checkpoint is written through the same writer."""
from __future__ import annotations

import fcntl
import os

import pytest
import torch

from softdimo.files import atomic_write, exclusive_lock
from softdimo.train import save_checkpoint


def test_text_bytes_and_writer_functions(tmp_path):
    assert atomic_write(tmp_path / "a" / "t.json", "{}").read_text() == "{}"       # makes the folder
    assert atomic_write(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    atomic_write(tmp_path / "c.txt", lambda tmp: tmp.write_text("from a writer"))
    assert (tmp_path / "c.txt").read_text() == "from a writer"
    assert oct((tmp_path / "c.txt").stat().st_mode & 0o777) == "0o644"


def test_a_writer_that_fails_half_way_leaves_the_old_file(tmp_path):
    path = atomic_write(tmp_path / "state.json", "old")

    def half(tmp):
        tmp.write_text("ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_refused_check_replaces_nothing(tmp_path):
    path = atomic_write(tmp_path / "r.json", "old")

    def refuse():
        raise ValueError("final")

    with pytest.raises(ValueError, match="final"):
        atomic_write(path, "new", lock=tmp_path / ".lock", check=refuse)
    assert path.read_text() == "old" and not list(tmp_path.glob(".r.*"))


def test_an_exclusive_write_never_replaces(tmp_path):
    atomic_write(tmp_path / "claim", "job-1", exclusive=True)
    with pytest.raises(FileExistsError):
        atomic_write(tmp_path / "claim", "job-2", exclusive=True)
    assert (tmp_path / "claim").read_text() == "job-1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["claim"]


def test_the_lock_excludes_another_holder_until_released(tmp_path):
    lock = tmp_path / "x.lock"

    def try_lock() -> bool:
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    with exclusive_lock(lock):
        assert not try_lock()
    assert try_lock()


def test_a_checkpoint_that_fails_half_way_keeps_the_last_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "distill.pt"
    save_checkpoint({"step": 1}, path)

    def half(obj, f):
        with open(f, "wb") as out:
            out.write(b"PK\x03")
        raise RuntimeError("killed")

    monkeypatch.setattr(torch, "save", half)
    with pytest.raises(RuntimeError, match="killed"):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["distill.pt"]

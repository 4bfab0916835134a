"""Cache entries: the content digest written when an entry completes (`content.sha256`, in
sha256sum's format), its check, the entry digest, and the wait for another process's lock."""
from __future__ import annotations

import fcntl
import subprocess
import time
from pathlib import Path

import pytest

from softdimo.teachers.cache import CacheLockTimeout, cached_dir, entry_lock
from softdimo.teachers.cache_digest import DIGEST_FILE, CorruptEntryError, entry_digest, verify_entry, write_digest


def build(tmp: Path) -> dict:
    (tmp / "weights.bin").write_bytes(bytes(range(256)) * 40)
    (tmp / "sub").mkdir()
    (tmp / "sub" / "notes.json").write_text('{"a": 1}')
    return {"built": True}


def test_the_digest_file_is_sha256sum_format_and_checks_by_hand(tmp_path: Path) -> None:
    entry, hit = cached_dir(tmp_path, "k", build)
    assert not hit
    lines = (entry / DIGEST_FILE).read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == ["complete.json", "sub/notes.json", "weights.bin"]
    done = subprocess.run(["sha256sum", "-c", DIGEST_FILE], cwd=entry, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.count(": OK") == 3, done.stdout + done.stderr
    verify_entry(entry)
    assert cached_dir(tmp_path, "k", build) == (entry, True)


def test_the_entry_digest_names_the_content(tmp_path: Path) -> None:
    a, _ = cached_dir(tmp_path / "a", "k", build)
    b = tmp_path / "b"
    b.mkdir()
    build(b)
    (b / "complete.json").write_bytes((a / "complete.json").read_bytes())
    assert write_digest(b) == entry_digest(b) == entry_digest(a) and len(entry_digest(a)) == 64
    (b / "sub" / "notes.json").write_text('{"a": 2}')
    assert write_digest(b) != entry_digest(a)


@pytest.mark.parametrize("damage, reason", [
    (lambda e: (e / "weights.bin").write_bytes((e / "weights.bin").read_bytes()[:100]),
     "weights.bin does not match its sha256 in content.sha256 (100 bytes, sha256 "),
    (lambda e: (e / "sub" / "notes.json").unlink(), "sub/notes.json is missing"),
    (lambda e: (e / DIGEST_FILE).unlink(), "no content.sha256 (an incomplete entry, or one made by an older version)"),
    (lambda e: (e / DIGEST_FILE).write_text(""), "content.sha256 is empty"),
    (lambda e: (e / DIGEST_FILE).write_text(f"{'0' * 64}  ../outside\n"),
     "content.sha256 line 1 is not '<sha256>  <relative path>'"),
])
def test_a_damaged_entry_fails_its_check_naming_entry_and_file(tmp_path: Path, damage, reason: str) -> None:
    entry, _ = cached_dir(tmp_path, "k", build)
    damage(entry)
    with pytest.raises(CorruptEntryError) as info:
        verify_entry(entry)
    assert str(info.value).startswith(f"cache entry {entry}: {reason}")
    lines: list[str] = []
    assert cached_dir(tmp_path, "k", build, lines.append) == (entry, False)     # set aside, built again
    verify_entry(entry)
    assert lines[0].startswith(f"cache entry {entry}: {reason}")


def test_a_lock_wait_names_the_holder_and_gives_up_after_its_timeout(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("softdimo.teachers.cache.LOCK_POLL_S", 0.05)
    lock = tmp_path / ".k.lock"
    lines: list[str] = []
    with entry_lock(lock, "cache entry k"):
        holder = lock.read_text().strip()
        assert holder.startswith("host ") and " pid " in holder
        start = time.monotonic()
        with pytest.raises(CacheLockTimeout) as info:       # another open file description: a second holder
            cached_dir(tmp_path, "k", build, lines.append, lock_timeout_s=0.3)
        assert 0.3 <= time.monotonic() - start < 5
    assert str(info.value).startswith(f"gave up after 0.0 min waiting for cache entry {tmp_path / 'k'}: its lock "
                                      f"{lock} is held by {holder}")
    assert lines == [f"waiting for cache entry {tmp_path / 'k'}: another process builds it ({holder}; lock {lock}); "
                     f"waited 0.0 min of at most 0"]
    with open(lock) as f:                                    # released
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)

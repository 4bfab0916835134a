"""Faults of the file system, each ending with a clear message and nothing recorded lost: a
read-only results root or cache is refused before launch; a disk that fills up while a cell runs
leaves its record absent (never truncated), every earlier record whole, and the cell runs again
once there is room; a teacher, Di[M]O prefix or student cache entry truncated or altered inside
its data is detected by its content digest and never loaded, but built again (or refused by name).

The file systems are real: small tmpfs mounts made by the test (root only; skipped elsewhere).
"""
from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch
from safetensors.torch import load_file

from harness import run, store
from harness.contracts.entries import RunContext
from harness.grid.spec import resolve_cell
from harness.methods.students import distil_student, prefix_key, student_key
from softdimo.teachers.cache_digest import CorruptEntryError
from softdimo.teachers.digits import build_digits_teacher
from tests.conftest import TINY_TEACHER

TOY = """
name: faults
plugins: [toy_lab]
matrix:
  teacher: [toy]
  method: [{method}]
  seed: {seeds}
params:
  eval.samples: 8
  eval.grid_images: 0
"""


def main(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = run.main(list(args), out, err)
    return rc, out.getvalue(), err.getvalue()


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


# Mount a tmpfs of `size_kb` under the test's directory (`mount(name, size_kb)`), unmounted at the end;
# `read_only(path)` remounts one read-only.
@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, int], Path]]:
    mounted: list[Path] = []

    def mount(name: str, size_kb: int) -> Path:
        path = tmp_path / name
        path.mkdir()
        done = _mount("-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path))
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {done.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def read_only(path: Path) -> None:
    done = _mount("-o", "remount,ro", str(path))
    assert done.returncode == 0, done.stderr


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

#----------------------------------------------------------------------------


def test_a_read_only_results_root_or_cache_is_refused_before_launch(tmpfs, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(TOY.format(method="toy_sampler", seeds="[0, 1]"))
    results = tmpfs("results", 1024)
    rc, out, err = main("--grid", str(grid), "--results", str(results), "--executor", "debug", "--set",
                        "eval.samples=4")
    assert rc == 0, out + err
    before = snapshot(results)
    read_only(results)
    rc, out, err = main("--grid", str(grid), "--results", str(results), "--executor", "debug")
    assert rc == 2 and out == ""
    assert err == (f"error: cannot write under {results / 'faults'}: Read-only file system ({results / 'faults'}); "
                   f"results, logs and caches are written there (--results DIR, $SOFTDIMO_CACHE); nothing was "
                   f"submitted\n")
    assert snapshot(results) == before
    assert main("--grid", str(grid), "--results", str(results), "--status")[0] == 0   # reading still works

    cache = tmpfs("cache", 64)
    read_only(cache)
    monkeypatch.setenv("SOFTDIMO_CACHE", str(cache / "softdimo"))
    rc, _, err = main("--grid", str(grid), "--results", str(tmp_path / "elsewhere"), "--executor", "debug")
    assert rc == 2 and err.startswith(f"error: cannot write under {cache / 'softdimo'}: Read-only file system ({cache})")
    assert not (tmp_path / "elsewhere").exists()


# The cell fills the disk while it runs (toy_flaky with TOY_LAB_FILL): its record cannot be
# written. The record is absent, the earlier ones are whole, the launcher says why, and the cell
# runs once there is room again.
def test_a_disk_that_fills_up_during_a_record_write_loses_nothing(tmpfs, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmpfs("results", 256)
    first = tmp_path / "first.yaml"
    first.write_text(TOY.format(method="toy_sampler", seeds="[0, 1]"))
    assert main("--grid", str(first), "--results", str(results), "--executor", "debug")[0] == 0
    earlier = {k: v for k, v in snapshot(results / "faults").items() if k != store.GRID_INFO_FILE}
    grid = tmp_path / "grid.yaml"
    grid.write_text(TOY.format(method="toy_flaky", seeds="[0]"))
    monkeypatch.setenv("TOY_LAB_FILL", str(results / "filler"))
    rc, out, err = main("--grid", str(grid), "--results", str(results), "--executor", "debug")
    [cell] = [p.parent.name for p in (results / "faults").glob("*/log.txt")
              if p.parent.name not in {Path(k).parts[0] for k in earlier}]
    assert rc == 1
    assert "summary: 0 ok, 1 failed, 0 diverged" in out
    assert f"  failed {cell} " in out and "no record: its job ended without writing one" in out
    assert (f"error: cell {cell}: job " in err and f"the ok record of run {cell} could not be written to "
            f"{results / 'faults' / cell / 'record.json'}: No space left on device; nothing of it was recorded" in err
            and "its failure record could not be written either (No space left on device); the cell has no record "
                "and counts as pending" in err)
    assert not (results / "faults" / cell / "record.json").exists()
    assert {k: v for k, v in snapshot(results / "faults").items() if k in earlier} == earlier
    assert not [p for p in results.rglob("*") if ".tmp" in p.name]
    for path in (results / "faults").glob("*/record.json"):
        store.read_record(path)                                  # whole: every record parses

    (results / "filler").unlink()
    monkeypatch.delenv("TOY_LAB_FILL")
    rc, out, err = main("--grid", str(grid), "--results", str(results), "--executor", "debug")
    assert rc == 0 and "summary: 1 ok" in out, out + err
    assert store.read_record(results / "faults" / cell / "record.json")["status"] == "ok"


# A record replacing a failed one on a full disk: the write fails with the file system's error, the
# failed record stays whole and in place, and no temporary file is left.
def test_a_record_write_on_a_full_disk_keeps_the_previous_record(tmpfs) -> None:
    root = tmpfs("records", 64)
    run_dir = root / "g" / "abc"
    failed = {"schema_version": store.SCHEMA_VERSION, "run_id": "abc", "grid": "g", "spec": {}, "status": "failed",
              "error": {"type": "RuntimeError", "message": "first try", "traceback": "", "log": ""}}
    store.write_record(run_dir, failed)
    before = (run_dir / store.RECORD_FILE).read_bytes()
    with open(root / "filler", "wb", buffering=0) as filler:
        with pytest.raises(OSError):
            while filler.write(b"\0" * 4096):
                pass
    ok = {**failed, "status": "ok", "error": None, "info": {"big": "x" * 100_000}}
    with pytest.raises(OSError, match="No space left on device"):
        store.write_record(run_dir, ok)
    assert (run_dir / store.RECORD_FILE).read_bytes() == before
    assert json.loads(before)["status"] == "failed"
    assert sorted(p.name for p in run_dir.iterdir()) == [".record.lock", store.RECORD_FILE]

#----------------------------------------------------------------------------
# Cache entries damaged on disk: a teacher's weights, a Di[M]O prefix's state, a student's EMA
# weights, truncated or altered inside their data. Each is detected by the entry's content digest,
# never loaded: set aside and built again (the same bits as the intact entry), or refused with its
# name where it cannot be built again.


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


# Overwrite 4 KB in the middle of the file, past any header: the file keeps its size and format.
def alter(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle - 2048:middle + 2048] = bytes(range(256)) * 16
    path.write_bytes(bytes(data))


DAMAGE = {"truncated": truncate, "altered": alter}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_teacher_entry_is_never_loaded_but_built_again(damage: str, tmp_path: Path) -> None:
    clean = build_digits_teacher(TINY_TEACHER, tmp_path / "cache")
    entry = Path(clean.info["cache_dir"])
    weights = entry / "weights.safetensors"
    DAMAGE[damage](weights)
    damaged = weights.read_bytes()
    if damage == "altered":                   # what loaded silently before entries had a digest
        loaded = load_file(str(weights))
        assert any(not torch.equal(loaded[k], v) for k, v in clean.network.state_dict().items())
    lines: list[str] = []
    again = build_digits_teacher(TINY_TEACHER, tmp_path / "cache", lines.append)
    assert not again.info["cache_hit"]
    assert f"cache entry {entry}: weights.safetensors does not match its sha256 in content.sha256" in lines[0]
    assert "truncated or altered; it is never loaded: it is set aside and built again" in lines[0]
    [aside] = (tmp_path / "cache" / "teachers" / ".corrupt").iterdir()
    assert f"cache entry {entry} moved to {aside}" in "\n".join(lines)
    assert (aside / "weights.safetensors").read_bytes() == damaged
    assert all(torch.equal(v, again.network.state_dict()[k]) for k, v in clean.network.state_dict().items())
    assert build_digits_teacher(TINY_TEACHER, tmp_path / "cache").info["cache_hit"]


@pytest.mark.parametrize("prefix_damage, student_damage", [("altered", "truncated"), ("truncated", "altered")])
def test_damaged_prefix_and_student_entries_are_never_loaded_but_built_again(
        prefix_damage: str, student_damage: str, tiny_teacher, tmp_path: Path) -> None:
    spec = resolve_cell({"teacher": "digits", "method": "dimo", "seed": 5, "relaxation": "soft", "distill.steps": 4,
                         "distill.refine_start": 2, "distill.batch_size": 8,
                         **{f"teacher.{k}": v for k, v in TINY_TEACHER.__dict__.items()}}, "mini")
    cache = tmp_path / "cache"
    ema, info = distil_student(spec, tiny_teacher, RunContext(tmp_path / "run1", cache, log=lambda s: None))
    assert not info["cache_hit"] and not info["prefix"]["cache_hit"]
    prefix, student = cache / "prefixes" / prefix_key(spec), cache / "students" / student_key(spec)
    DAMAGE[prefix_damage](prefix / "state.pt")
    DAMAGE[student_damage](student / "ema.pt")
    lines: list[str] = []
    again, info = distil_student(spec, tiny_teacher, RunContext(tmp_path / "run2", cache, log=lines.append))
    text = "\n".join(lines)
    assert not info["cache_hit"] and not info["prefix"]["cache_hit"]
    assert f"cache entry {student}: ema.pt does not match its sha256" in text
    assert f"cache entry {prefix}: state.pt does not match its sha256" in text
    assert text.count("it is never loaded: it is set aside and built again") == 2
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in ema.state_dict().items())


# Where the damaged entry cannot be set aside (a read-only cache), it is refused by name.
def test_a_damaged_entry_that_cannot_be_built_again_is_refused_by_name(tmpfs) -> None:
    cache = tmpfs("cache", 1024)
    entry = Path(build_digits_teacher(TINY_TEACHER, cache).info["cache_dir"])
    alter(entry / "weights.safetensors")
    read_only(cache)
    with pytest.raises(CorruptEntryError) as info:
        build_digits_teacher(TINY_TEACHER, cache)
    assert str(info.value).startswith(f"cache entry {entry}: it is not intact and cannot be built again here "
                                      f"(Read-only file system: ")
    assert str(info.value).endswith("); it is never loaded")

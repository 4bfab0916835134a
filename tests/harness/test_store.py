"""Records: atomic writes (a killed writer leaves no ok record), 32 concurrent writers, ok records
never overwritten, failed ones kept as attempts, corrupt records reported by name."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import store

ROOT = Path(__file__).resolve().parents[2]


def record(run_id: str, status: str = "ok", grid: str = "g", **extra) -> dict:
    return {"schema_version": store.SCHEMA_VERSION, "run_id": run_id, "grid": grid,
            "description": "", "spec": {"teacher": "toy", "method": "m", "seed": 0, "params": {}},
            "status": status, "error": None, "metrics": {}, **extra}


def test_write_read_roundtrip_and_final_records_never_overwritten(tmp_path):
    d = store.run_dir(tmp_path, "g", "r1")
    store.write_record(d, record("r1", "failed", error={"type": "E", "message": "m",
                                                        "traceback": "", "log": ""}))
    store.write_record(d, record("r1", "failed"))
    store.write_record(d, record("r1", "ok", metrics={"x": {"value": 1.5}}))
    assert store.read_record(d / "record.json")["metrics"]["x"]["value"] == 1.5
    assert sorted(p.name for p in (d / "attempts").iterdir()) == ["1.json", "2.json"]
    assert store.read_record(d / "attempts" / "1.json")["error"]["type"] == "E"
    with pytest.raises(store.RecordExistsError, match="never overwritten"):
        store.write_record(d, record("r1", "failed"))
    assert store.read_record(d / "record.json")["status"] == "ok"
    assert oct((d / "record.json").stat().st_mode & 0o777) == "0o644"
    with pytest.raises(store.CorruptRecordError, match="status 'done' is not one of"):
        store.write_record(d, record("r1", "done"))
    with pytest.raises(ValueError):                     # NaN is not JSON: refused, nothing written
        store.write_record(store.run_dir(tmp_path, "g", "r2"), record("r2", metrics={"x": float("nan")}))
    assert not (store.run_dir(tmp_path, "g", "r2") / "record.json").exists()


# A child that writes a large ok record and stalls (SIGSTOP-free: sleeps in fsync) when told.
WRITER = """
import os, sys, time
from harness import store
def stalled_fsync(fd):
    print("stalled", flush=True)
    time.sleep(120)
os.fsync = stalled_fsync
rec = {"schema_version": store.SCHEMA_VERSION, "run_id": "r", "grid": "g", "spec": {},
       "status": "ok", "info": {"payload": "x" * 20_000_000}}
store.write_record(sys.argv[1], rec)
"""


@pytest.mark.parametrize("previous", [None, "failed"])
def test_writer_killed_mid_write_leaves_no_ok_record(tmp_path, previous):
    d = store.run_dir(tmp_path, "g", "r")
    if previous:
        store.write_record(d, record("r", previous))
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(d)], stdout=subprocess.PIPE,
                             text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.stdout.readline().strip() == "stalled"
    tmp_files = list(d.glob(".record.*.tmp.json"))
    assert len(tmp_files) == 1 and tmp_files[0].stat().st_size > 20_000_000  # data was written
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    statuses = store.statuses(tmp_path, "g", ["r"])
    assert statuses["r"] == previous                 # the old record, intact, or none at all
    records, problems = store.scan(tmp_path)
    assert [r["status"] for r in records] == ([previous] if previous else []) and problems == []
    store.write_record(d, record("r", "ok"))         # the lock died with the writer
    assert store.statuses(tmp_path, "g", ["r"])["r"] == "ok"


# 32 writers start together; each writes `status` for run `run_id`.
CONCURRENT = """
import sys, time
from harness import store
run_dir, status, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
while time.time() < start:
    time.sleep(0.001)
rec = {"schema_version": store.SCHEMA_VERSION, "run_id": "same", "grid": "g", "spec": {},
       "status": status, "info": {"writer": sys.argv[4], "pad": "y" * 200_000}}
try:
    store.write_record(run_dir, rec)
    print("written")
except store.RecordExistsError:
    print("refused")
"""


def test_32_concurrent_writers_one_run(tmp_path):
    d = store.run_dir(tmp_path, "g", "same")
    start = time.time() + 1.5
    statuses = ["failed"] * 24 + ["ok"] * 8
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(d), st, str(start), str(i)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
             for i, st in enumerate(statuses)]
    outcomes = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    final = store.read_record(d / "record.json")
    written = [st for st, o in zip(statuses, outcomes) if o == "written"]
    attempts = sorted((d / "attempts").glob("*.json")) if (d / "attempts").exists() else []
    # Every successful write but the last became an attempt; no write was lost or half-written.
    assert len(attempts) == len(written) - 1
    for a in attempts:
        assert store.read_record(a)["status"] == "failed"
    assert written.count("ok") == 1 and final["status"] == "ok"
    assert outcomes.count("refused") == 32 - len(written)
    assert list(d.glob(".record.*.tmp*")) == []


def test_32_concurrent_writers_distinct_runs(tmp_path):
    code = ("import sys; from harness import store; i = sys.argv[1]; "
            "store.write_record(store.run_dir(sys.argv[2], 'g', 'r' + i), {'schema_version': "
            "store.SCHEMA_VERSION, 'run_id': 'r' + i, 'grid': 'g', 'spec': {}, 'status': 'ok'})")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i), str(tmp_path)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}) for i in range(32)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 32
    records, problems = store.scan(tmp_path)
    assert sorted(r["run_id"] for r in records) == sorted(f"r{i}" for i in range(32))
    assert problems == []


def test_scan_reports_corrupt_records_by_name(tmp_path):
    good = store.run_dir(tmp_path, "g", "good")
    store.write_record(good, record("good"))
    text = (good / "record.json").read_text()
    bad = {
        "truncated": text[: len(text) // 2],
        "empty": "",
        "garbage": "\x00\xff\xfe not json",
        "array": "[1, 2]",
        "old-schema": json.dumps({**record("old-schema"), "schema_version": 0}),
        "no-status": json.dumps({k: v for k, v in record("no-status").items() if k != "status"}),
        "moved": json.dumps(record("elsewhere")),
    }
    for name, body in bad.items():
        d = store.run_dir(tmp_path, "g", name)
        d.mkdir(parents=True)
        (d / "record.json").write_bytes(body.encode("utf-8", "surrogateescape")
                                        if name != "garbage" else b"\x00\xff\xfe not json")
    (tmp_path / "g" / "pending-run").mkdir()           # no record yet: not a problem
    (tmp_path / "g" / ".submitit").mkdir()
    records, problems = store.scan(tmp_path)
    assert [r["run_id"] for r in records] == ["good"]
    by_dir = {p.path.parent.name: p.message for p in problems}
    assert set(by_dir) == set(bad)
    assert "the file may be truncated" in by_dir["truncated"]
    assert by_dir["empty"] == "empty file"
    assert "not UTF-8" in by_dir["garbage"] or "invalid JSON" in by_dir["garbage"]
    assert by_dir["array"] == "expected a JSON object, got list"
    assert "schema_version 0" in by_dir["old-schema"]
    assert "missing key(s) status" in by_dir["no-status"]
    assert "lies in g/moved" in by_dir["moved"]
    with pytest.raises(store.CorruptRecordError, match=r"truncated/record.json: corrupt record"):
        store.read_record(tmp_path / "g" / "truncated" / "record.json")
    _, missing = store.scan(tmp_path, ["nope"])
    assert "no results for grid 'nope'" in missing[0].message


def test_reused_record_brings_its_sample_files(tmp_path):
    source = store.run_dir(tmp_path, "a", "r1")
    source.mkdir(parents=True)
    (source / store.SAMPLES_FILE).write_bytes(b"png")
    (source / store.CONDITION_SAMPLES_FILE).write_bytes(b"npz")
    (source / store.SELECTION_FILE).write_bytes(b"selection")
    path = store.write_record(source, record("r1", grid="a", samples={
        "grid_png": store.SAMPLES_FILE, "per_condition": store.CONDITION_SAMPLES_FILE,
        "selection": store.SELECTION_FILE}))
    copy = store.reuse_record(path, tmp_path, "b")
    assert store.read_record(copy)["reused_from"] == "a/r1"
    assert (copy.parent / store.SAMPLES_FILE).read_bytes() == b"png"
    assert (copy.parent / store.CONDITION_SAMPLES_FILE).read_bytes() == b"npz"
    assert (copy.parent / store.SELECTION_FILE).read_bytes() == b"selection"

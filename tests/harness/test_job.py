"""`harness.cell.execute`: one cell -> one record with metrics, samples, provenance and cost; a
failure becomes a failed record (not an exception), a non-finite metric a diverged one."""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import pickle
import platform
import socket
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness import cell, store
from harness.cell import workqueue
from harness.grid.spec import resolve_cell
from harness.methods import environment, images
from harness.methods.images import load_condition_samples
from harness.methods.samples import to_uint8

STUDENT = {"teacher": "toy", "method": "toy_student", "relaxation": "toy_soft", "seed": 1,
           "eval.samples": 30, "eval.grid_images": 9, "eval.metrics": ["toy_mean", "toy_fidelity"]}


def test_execute_writes_ok_record(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTDIMO_THREADS", "2")
    spec = resolve_cell(STUDENT, "mini", ("toy_lab",))
    assert cell.execute(spec.to_json(), "g", str(tmp_path)) == "ok"
    rec = store.read_record(store.record_path(tmp_path, "g", spec.run_id))
    assert rec["status"] == "ok" and rec["error"] is None and rec["spec"] == spec.to_json()
    assert rec["description"] == "toy toy_student toy_soft s1 eval.grid_images=9 eval.samples=30"
    # The metric values are what the images give: recompute them independently.
    from toy_lab import ToyTeacher, ToyTeacherConfig
    teacher = ToyTeacher(ToyTeacherConfig())
    b = torch.zeros(10, dtype=torch.float64)
    for _ in range(20):
        b = b + 0.1 * (teacher.targets - b)
    labels = torch.arange(30) % 10
    images = teacher.draw(b[labels], 1).float()
    assert rec["metrics"]["toy_mean"]["value"] == pytest.approx(float(images.double().mean()), rel=1e-12)
    gap = (images.double().mean((1, 2, 3)) - teacher.targets[labels]).abs().mean()
    assert rec["metrics"]["toy_fidelity"]["value"] == pytest.approx(float(gap), rel=1e-12)
    assert rec["metrics"]["toy_mean"]["protocol"] == {"name": "toy-mean", "implementation": "toy_lab",
                                                      "version": 1, "samples": 30}
    assert rec["metrics"]["toy_mean"]["protocol_id"].startswith("toy-mean:")
    assert [p[0] for p in rec["curves"]["toy_gap"]] == [4, 8, 12, 16, 20]
    # Sample grid: 9 images of 8x8 upscaled (nearest) to 64x64 in a 3x3 grid with 2px borders.
    assert rec["samples"] == {"grid_png": "samples.png", "count": 9, "per_condition": "condition_samples.npz",
                              "per_condition_count": 9}
    with Image.open(store.run_dir(tmp_path, "g", spec.run_id) / "samples.png") as im:
        assert im.size == (3 * 66 + 2, 3 * 66 + 2) and im.mode == "L"
    # The same first images at their own resolution, with their conditions (class i mod 10).
    kept, conditions, indices = load_condition_samples(store.run_dir(tmp_path, "g", spec.run_id)
                                                       / "condition_samples.npz")
    assert kept.shape == (9, 8, 8, 3) and kept.dtype == np.uint8
    assert conditions == [i % 10 for i in range(9)] and indices == list(range(9))
    assert np.array_equal(kept[..., 0], to_uint8(images[:9])[..., 0])
    prov = rec["provenance"]
    assert prov["executor"] == "none" and prov["job_id"] is None     # called directly
    assert prov["python"] == platform.python_version() and prov["host"] == socket.gethostname()
    assert prov["accelerator"] == ("cpu" if not torch.cuda.is_available() else
                                   f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")
    assert prov["packages"]["torch"] == importlib.metadata.version("torch")
    root = Path(cell.__file__).resolve().parents[2]
    if (root / ".git").exists():                   # a git checkout (CI may copy files only)
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        assert prov["git_commit"] == head and isinstance(prov["git_dirty"], bool)
    else:
        assert prov["git_commit"] is None and prov["git_dirty"] is None
    cost = rec["cost"]
    assert cost["wall_s"] > 0 and cost["peak_mem_mb"] > 10 and cost["accelerator_hours"] == 0.0
    assert set(cost["stages"]) == {"distill_s", "sample_s", "eval_s"}
    assert "2 thread(s)" in (store.run_dir(tmp_path, "g", spec.run_id) / "log.txt").read_text()
    # Running the same cell again leaves the ok record alone.
    before = store.record_path(tmp_path, "g", spec.run_id).read_bytes()
    assert cell.execute(spec.to_json(), "g", str(tmp_path)) == "ok"
    assert store.record_path(tmp_path, "g", spec.run_id).read_bytes() == before


def test_execute_failure_is_a_failed_record(tmp_path, monkeypatch):
    monkeypatch.setenv("TOY_LAB_FAIL", "1")
    spec = resolve_cell({"teacher": "toy", "method": "toy_flaky", "seed": 0}, "mini", ("toy_lab",))
    assert cell.execute(spec.to_json(), "g", str(tmp_path)) == "failed"
    rec = store.read_record(store.record_path(tmp_path, "g", spec.run_id))
    err = rec["error"]
    assert err["type"] == "RuntimeError"
    assert err["message"] == "toy_flaky failed because TOY_LAB_FAIL is set"
    assert "run_flaky" in err["traceback"] and err["log"].endswith("log.txt")
    assert "toy_flaky failed" in open(err["log"]).read()
    monkeypatch.delenv("TOY_LAB_FAIL")
    assert cell.execute(spec.to_json(), "g", str(tmp_path)) == "ok"     # a retry replaces it
    d = store.run_dir(tmp_path, "g", spec.run_id)
    assert store.read_record(d / "attempts" / "1.json")["status"] == "failed"


def test_execute_nan_metric_is_diverged(tmp_path):
    spec = resolve_cell({"teacher": "toy", "method": "toy_sampler", "seed": 0, "teacher.diverge": True,
                         "eval.metrics": ["toy_mean"]}, "mini", ("toy_lab",))
    assert cell.execute(spec.to_json(), "g", str(tmp_path)) == "diverged"
    rec = store.read_record(store.record_path(tmp_path, "g", spec.run_id))
    assert rec["metrics"]["toy_mean"]["value"] is None


def test_execute_queue_runs_unclaimed_cells_in_order_and_survives_failures(tmp_path, monkeypatch):
    monkeypatch.setenv("TOY_LAB_FAIL", "1")
    specs = [resolve_cell({"teacher": "toy", "method": m, "seed": s}, "mini", ("toy_lab",))
             for m, s in (("toy_sampler", 0), ("toy_flaky", 0), ("toy_sampler", 1))]
    queue = tmp_path / "queue"
    queue.mkdir()
    assert workqueue.claim(queue, specs[0].run_id, "another-worker")   # taken by another worker
    statuses = cell.execute_queue([s.to_json() for s in specs], "g", str(tmp_path), str(queue))
    assert statuses == ["failed", "ok"]
    assert store.statuses(tmp_path, "g", [specs[0].run_id])[specs[0].run_id] is None
    me = str(os.getpid())                  # outside a submitit job the claim names the process
    assert [workqueue.claimant(queue, s.run_id) for s in specs] == ["another-worker", me, me]
    assert cell.execute_queue([s.to_json() for s in specs], "g", str(tmp_path), str(queue)) == []


def test_submitted_callable_is_small_and_picklable(tmp_path):
    spec = resolve_cell(STUDENT, "mini", ("toy_lab",))
    payload = pickle.dumps((cell.execute, (spec.to_json(), "g", str(tmp_path))))
    assert len(payload) < 4000


def test_cache_dir_and_threads(monkeypatch, tmp_path):
    assert environment.cache_dir(tmp_path) == tmp_path / ".cache"
    monkeypatch.setenv("SOFTDIMO_CACHE", str(tmp_path / "c"))
    assert environment.cache_dir(tmp_path) == tmp_path / "c"
    monkeypatch.setenv("SOFTDIMO_THREADS", "3")
    assert environment.threads() == 3
    monkeypatch.setenv("SOFTDIMO_THREADS", "x")
    assert environment.threads() == 1


# The record lists every asset the run resolved, with its sha256; the cache folder is private.
def test_record_provenance_lists_the_assets_the_run_used(tmp_path, monkeypatch):
    from harness.contracts import registry
    from harness.contracts.entries import MetricEntry
    from harness.store import assets
    from harness.store.assets import pinning
    root = tmp_path / "assets"
    (root / "toy").mkdir(parents=True)
    (root / "toy" / "weights.bin").write_bytes(b"toy weights")
    monkeypatch.setenv("SOFTDIMO_ASSETS", str(root))
    monkeypatch.setitem(assets.manifest._entries, "toy-weights",
                        assets.Asset("toy-weights", "toy/weights.bin", "the toy lab's page"))
    assert pinning.pin([assets.manifest.get("toy-weights")]).pinned == ["toy/weights.bin"]

    def weighed(inp, ctx):
        weights = assets.resolve("toy-weights").read_bytes()
        return {"toy_weighed": registry.metrics.get("toy_mean").compute(inp, ctx)["toy_mean"]} if weights else {}
    monkeypatch.setitem(registry.metrics._entries, "toy_weighed", MetricEntry("toy_weighed", weighed))
    assets.resolve("toy-weights")                                  # before the cell: not part of its record
    monkeypatch.setitem(assets.manifest._entries, "toy-other", assets.Asset("toy-other", "toy/weights.bin", "x"))
    assets.resolve("toy-other")
    spec = resolve_cell({"teacher": "toy", "method": "toy_sampler", "seed": 0, "eval.samples": 10,
                         "eval.metrics": ["toy_weighed"]}, "mini", ("toy_lab",))
    assert cell.execute(spec.to_json(), "g", str(tmp_path / "r")) == "ok"
    rec = store.read_record(store.record_path(tmp_path / "r", "g", spec.run_id))
    digest = hashlib.sha256(b"toy weights").hexdigest()
    assert rec["provenance"]["assets"] == {"toy-weights": {"path": str(root / "toy" / "weights.bin"),
                                                           "sha256": digest, "verified_by": ["pinned"]}}
    assert stat.S_IMODE((tmp_path / "r" / ".cache").stat().st_mode) == 0o700


def test_image_grid_rgb_large_downscaled(tmp_path):
    x = torch.rand(5, 3, 256, 256)
    images.save_image_grid(x, tmp_path / "s.png")
    with Image.open(tmp_path / "s.png") as im:
        assert im.mode == "RGB" and im.size == (3 * 130 + 2, 2 * 130 + 2)

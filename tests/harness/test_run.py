"""End to end through `python -m harness.run`'s main with submitit's debug and local executors."""
from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest

from harness import executors, launch, run, store
from harness.grid import load_grid
from harness.spec import resolve_cell

GRID = """
name: e2e
plugins: [toy_lab]
matrix:
  - teacher: [toy]
    method: [toy_student]
    relaxation: [toy_hard, toy_soft]
    seed: [0, 1]
  - teacher: [toy]
    method: [toy_sampler]
    seed: [0]
    sample.steps: [1, 4]
include:
  - {teacher: toy, method: toy_flaky, seed: 0}
params:
  eval.samples: 20
"""


def main(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = run.main(list(args), out, err)
    return rc, out.getvalue(), err.getvalue()


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("record.json"))}


def test_debug_executor_end_to_end(write_grid, tmp_path, monkeypatch):
    grid = write_grid(GRID)
    results = tmp_path / "results"
    common = ("--grid", str(grid), "--results", str(results), "--executor", "debug")

    rc, out, _ = main(*common, "--dry-run")
    assert rc == 0 and out.count(" pending ") == 7 and out.splitlines()[-1] == "7 pending"
    assert "id                state     description" in out

    monkeypatch.setenv("TOY_LAB_FAIL", "1")
    rc, out, err = main(*common)
    assert rc == 1
    assert "summary: 6 ok, 1 failed, 0 diverged, 0 skipped (done before)" in out
    flaky = load_grid(grid).specs[-1]
    assert f"failed {flaky.run_id} toy toy_flaky s0" in out
    assert "RuntimeError: toy_flaky failed because TOY_LAB_FAIL is set" in out
    log = store.run_dir(results, "e2e", flaky.run_id) / "log.txt"
    assert f"log: {log}" in out
    assert "[##############################] 7/7 cells" in err          # the progress bar
    records, problems = store.scan(results)
    assert len(records) == 7 and problems == []
    assert {r["provenance"]["executor"] for r in records} == {"debug"}
    assert all(r["provenance"]["job_id"].startswith("DEBUG_") for r in records)
    before = snapshot(results)

    rc, out, _ = main(*common)                                      # nothing left to do
    assert rc == 1 and out.startswith("nothing to do: all 7 cells of grid 'e2e' have records "
                                      "(6 ok, 0 diverged, 1 failed); failed cells are retried "
                                      "only with --rerun-failed")
    assert snapshot(results) == before

    rc, out, _ = main(*common, "--rerun-failed")                    # still failing: retried
    assert rc == 1 and "summary: 0 ok, 1 failed, 0 diverged, 6 skipped" in out
    monkeypatch.delenv("TOY_LAB_FAIL")
    rc, out, _ = main(*common, "--rerun-failed")
    assert rc == 0 and "summary: 1 ok, 0 failed, 0 diverged, 6 skipped (done before)" in out
    after = snapshot(results)
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {f"e2e/{flaky.run_id}/record.json"}           # ok records untouched
    attempts = sorted((store.run_dir(results, "e2e", flaky.run_id) / "attempts").glob("*.json"))
    assert [store.read_record(a)["status"] for a in attempts] == ["failed", "failed"]

    rc, out, _ = main(*common)
    assert rc == 0 and out.startswith("nothing to do: all 7 cells")
    rc, out, _ = main(*common, "--dry-run")
    assert out.count(" done ") == 7 and out.splitlines()[-1] == "7 done"


def test_local_executor_lanes_crash_and_no_wait(write_grid, tmp_path, monkeypatch):
    grid_path = write_grid(GRID.replace("seed: [0, 1]", "seed: [0]"))  # 5 cells, the flaky one last
    results = tmp_path / "results"
    common = ("--grid", str(grid_path), "--results", str(results), "--executor", "local",
              "--max-parallel", "2")
    grid = load_grid(grid_path)
    assert [s.method for s in grid.specs][-1] == "toy_flaky" and len(grid.specs) == 5

    monkeypatch.setenv("TOY_LAB_CRASH", "1")                         # the flaky cell kills its job
    rc, out, err = main(*common)
    assert rc == 1
    assert "summary: 4 ok, 1 failed, 0 diverged, 0 skipped" in out
    jobs = sorted(p.name for p in (results / "e2e" / ".submitit").iterdir() if p.name != "%j")
    assert len(jobs) == 2                                             # two lanes, two jobs
    records, _ = store.scan(results)
    ok = [r for r in records if r["status"] == "ok"]
    assert {r["provenance"]["executor"] for r in ok} == {"local"}
    assert {r["provenance"]["job_id"] for r in ok} == set(jobs)
    threads = max(1, executors._cores() // 2)
    for r in ok:
        log = (store.run_dir(results, "e2e", r["run_id"]) / "log.txt").read_text()
        assert f"{threads} thread(s)" in log
    crashed = store.read_record(store.record_path(results, "e2e", grid.specs[-1].run_id))
    assert crashed["error"]["type"] == "JobEnded"
    assert "ended without a record for this cell" in crashed["error"]["message"]
    assert Path(crashed["error"]["log"]).parent.name in jobs          # the job's own log
    assert not list(results.rglob(launch.MARKER))                    # markers cleared after waiting

    monkeypatch.delenv("TOY_LAB_CRASH")
    rc, out, _ = main(*common, "--rerun-failed", "--no-wait")
    assert rc == 0 and "submitted 1 cells in 1 job(s)" in out
    deadline = time.time() + 120
    while store.statuses(results, "e2e", [grid.specs[-1].run_id])[grid.specs[-1].run_id] != "ok":
        assert time.time() < deadline, "the --no-wait job did not finish"
        time.sleep(0.5)
    rc, out, _ = main(*common)
    assert rc == 0 and out.startswith("nothing to do: all 5 cells")


def test_marker_of_a_live_job_means_running(write_grid, tmp_path):
    grid = load_grid(write_grid(GRID))
    spec = grid.specs[0]
    d = store.run_dir(tmp_path, "e2e", spec.run_id)
    d.mkdir(parents=True)
    marker = {"executor": "local", "job_id": str(os.getpid()), "host": os.uname().nodename}
    (d / launch.MARKER).write_text(json.dumps(marker))
    states = {c.run_id: c.state for c in launch.plan(grid, tmp_path)}
    assert states[spec.run_id] == "running"
    assert spec not in launch.to_submit(launch.plan(grid, tmp_path), rerun_failed=True)
    (d / launch.MARKER).write_text(json.dumps({**marker, "job_id": "999999999"}))   # a dead pid
    assert {c.run_id: c.state for c in launch.plan(grid, tmp_path)}[spec.run_id] == "pending"


def test_lanes_deal_round_robin():
    specs = [resolve_cell({"teacher": "toy", "method": "toy_sampler", "seed": i}, "mini")
             for i in range(7)]
    lanes = executors.lanes(specs, 3)
    assert [[s.seed for s in lane] for lane in lanes] == [[0, 3, 6], [1, 4], [2, 5]]
    assert len(executors.lanes(specs[:2], 8)) == 2


def test_resource_profiles(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTDIMO_PROFILES", str(tmp_path))
    (tmp_path / "gpu1.yaml").write_text("timeout_min: 30\ngpus_per_node: 1\narray_limit: 50\n")
    (tmp_path / "bad.yaml").write_text("timeout: 30\n")
    r = executors.load_resources("gpu1")
    assert (r.name, r.timeout_min, r.gpus_per_node, r.array_limit) == ("gpu1", 30, 1, 50)
    assert executors.load_resources(None) == executors.Resources()
    with pytest.raises(executors.LaunchError, match="unknown key\\(s\\) timeout; allowed"):
        executors.load_resources("bad")
    with pytest.raises(executors.LaunchError, match="'nope' not found .* available: bad, gpu1"):
        executors.load_resources("nope")


def test_missing_profile_stops_before_submitting(write_grid, tmp_path, monkeypatch, record_files):
    monkeypatch.setenv("SOFTDIMO_PROFILES", str(tmp_path / "profiles"))
    grid = write_grid(GRID + "scales:\n  mini:\n    resources: cluster9\n")
    rc, _, err = main("--grid", str(grid), "--results", str(tmp_path / "r"), "--executor", "debug")
    assert rc == 2 and "resource profile 'cluster9' not found" in err
    assert record_files(tmp_path / "r") == []


class RecordingExecutor:
    # Stands in for submitit.AutoExecutor(cluster="slurm") where no SLURM is installed: records
    # the parameters and the job arrays (one per `batch()` block) instead of calling sbatch.
    instances: list["RecordingExecutor"] = []

    def __init__(self, folder, cluster):
        self.folder, self.cluster, self.params, self.arrays = folder, cluster, {}, []
        self._batch = None
        RecordingExecutor.instances.append(self)

    def update_parameters(self, **kwargs):
        self.params.update(kwargs)

    def batch(self):
        from contextlib import contextmanager

        @contextmanager
        def ctx():
            self._batch = []
            yield
            self.arrays.append(self._batch)
            self._batch = None
        return ctx()

    def submit(self, fn, *args):
        assert self._batch is not None, "slurm cells must be submitted inside executor.batch()"
        self._batch.append((fn, args))
        return type("Job", (), {"job_id": f"1_{len(self._batch) - 1}"})()


def test_slurm_submission_arrays_chunked_with_explicit_timeout(monkeypatch, tmp_path):
    import submitit
    from harness import job as job_module
    monkeypatch.setattr(submitit, "AutoExecutor", RecordingExecutor)
    RecordingExecutor.instances.clear()
    specs = [resolve_cell({"teacher": "toy", "method": "toy_sampler", "seed": i}, "mini")
             for i in range(7)]
    resources = executors.Resources(name="gpu", timeout_min=90, cpus_per_task=4, gpus_per_node=1,
                                    array_limit=3, slurm={"partition": "gpu"})
    subs = executors.submit_slurm(executors.SubmitRequest(specs, "g", tmp_path, tmp_path / "%j",
                                                          resources, max_parallel=5))
    (ex,) = RecordingExecutor.instances
    assert ex.cluster == "slurm"
    assert [len(a) for a in ex.arrays] == [3, 3, 1]                   # chunked to the array limit
    assert ex.params["timeout_min"] == 90 and ex.params["cpus_per_task"] == 4
    assert ex.params["gpus_per_node"] == 1 and ex.params["slurm_partition"] == "gpu"
    assert ex.params["slurm_array_parallelism"] == 5
    assert ex.params["slurm_setup"] == ["export SOFTDIMO_THREADS=4"]
    fn, args = ex.arrays[0][0]
    assert fn is job_module.execute and args == (specs[0].to_json(), "g", str(tmp_path))
    assert [s.run_ids for s in subs] == [[s.run_id] for s in specs]


def test_slurm_marker_alive_until_result(tmp_path):
    # A finished SLURM job leaves submitit's result pickle: its cells are no longer "running".
    folder = tmp_path / "%j"
    marker = {"executor": "slurm", "job_id": "4242", "folder": str(folder)}
    done_dir = tmp_path / "4242"
    done_dir.mkdir()
    (done_dir / "4242_0_result.pkl").write_bytes(b"")
    assert executors.slurm_alive(marker) is False
    assert executors.slurm_alive({"executor": "slurm", "job_id": "1"}) is False   # no folder known

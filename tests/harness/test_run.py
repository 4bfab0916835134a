"""End to end through `python -m harness.run`'s main with submitit's debug and local executors."""
from __future__ import annotations

import io
import json
import os
import pickle
import time
from pathlib import Path

import pytest

from harness import launch, run, store
from harness.cell import workqueue
from harness.grid import load_grid
from harness.grid.spec import RunSpec, resolve_cell
from harness.launch import executors
from harness.methods.numerics import pinned_environment

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
    # In-process jobs inherit this process's loaded libraries: never pinned, and their records say so.
    assert not any(r["provenance"]["numerics"]["pinned"] for r in records if r["status"] != "failed")
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


@pytest.mark.slow                 # real local-executor workers running cells
def test_local_executor_workers_crash_and_no_wait(write_grid, tmp_path, monkeypatch):
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
    jobs = sorted(p.name for p in (results / "e2e" / ".submitit").iterdir()
                  if p.name not in ("%j", executors.QUEUES_DIR))
    assert len(jobs) == 2                                             # two workers, two jobs
    records, _ = store.scan(results)
    ok = [r for r in records if r["status"] == "ok"]
    assert {r["provenance"]["executor"] for r in ok} == {"local"}
    assert {r["provenance"]["job_id"] for r in ok} <= set(jobs)
    # Mini cells run pinned (harness.methods.numerics): one thread and the fixed kernel levels, whatever
    # the machine's cores; the record says so and carries the machine and the stage hashes.
    pinned = bool(pinned_environment("mini"))
    for r in ok:
        log = (store.run_dir(results, "e2e", r["run_id"]) / "log.txt").read_text()
        assert f"{1 if pinned else max(1, executors._cores() // 2)} thread(s)" in log
        assert r["provenance"]["numerics"]["pinned"] is pinned, r["provenance"]["numerics"]
        assert r["provenance"]["machine"]["threads"]["torch"] == 1 if pinned else True
        assert set(r["stage_hashes"]) == {"samples"}                  # the toy teacher has no weights
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


# A launcher that died while writing a marker (the writer before markers were written atomically, or
# a damaged disk) leaves half of one: the cell is not taken for "never submitted" silently, the
# marker is named and kept aside, and the cell's next launch writes a whole marker and runs it.
@pytest.mark.slow                 # a real local-executor job runs the cell again
def test_a_half_written_marker_is_detected_and_repaired(write_grid, tmp_path, capsys):
    grid = load_grid(write_grid(GRID))
    spec = grid.specs[0]
    d = store.run_dir(tmp_path, "e2e", spec.run_id)
    d.mkdir(parents=True)
    whole = json.dumps({"executor": "local", "job_id": str(os.getpid()), "host": os.uname().nodename})
    (d / launch.MARKER).write_text(whole[:len(whole) // 2])
    assert {c.run_id: c.state for c in launch.plan(grid, tmp_path)}[spec.run_id] == "pending"
    err = capsys.readouterr().err
    assert f"{d / launch.MARKER}: unreadable submission marker" in err
    assert not (d / launch.MARKER).exists()
    assert (d / launch.MARKER_CORRUPT).read_text() == whole[:len(whole) // 2]    # kept aside
    scheduled = launch.schedule(grid, launch.plan(grid, tmp_path), [spec], tmp_path)
    submitted = launch.submit(grid, scheduled, tmp_path, "local", max_parallel=1)
    job_id = str(submitted.submissions[0].job.job_id)
    assert launch.read_marker(tmp_path, "e2e", spec.run_id)["job_id"] == job_id   # whole again
    assert launch.wait(submitted)[spec.run_id] == "ok"
    assert capsys.readouterr().err == "" and not (d / launch.MARKER).exists()


@pytest.mark.slow                 # real local-executor workers running cells
def test_local_workers_share_one_queue(write_grid, tmp_path, monkeypatch):
    # A long cell first: the worker that takes it runs nothing else, the other worker takes every
    # short cell (fixed lanes would leave half of them queued behind the long one).
    grid_path = write_grid("name: q\nplugins: [toy_lab]\nmatrix:\n"
                           "  - {teacher: [toy], method: [toy_slow], seed: [0]}\n"
                           "  - {teacher: [toy], method: [toy_sampler], seed: [0, 1, 2, 3]}\n")
    results = tmp_path / "results"
    monkeypatch.setenv("TOY_LAB_SLOW_S", "15")
    rc, out, err = main("--grid", str(grid_path), "--results", str(results), "--executor", "local",
                        "--max-parallel", "2")
    assert rc == 0 and "summary: 5 ok" in out, out + err
    slow, *short = load_grid(grid_path).specs
    job_of = {r["run_id"]: r["provenance"]["job_id"] for r in store.scan(results)[0]}
    assert {job_of[s.run_id] for s in short} == {job_of[s.run_id] for s in short[:1]} != {job_of[slow.run_id]}
    queue, = (results / "q" / ".submitit" / executors.QUEUES_DIR).iterdir()
    assert {workqueue.claimant(queue, rid) for rid in job_of} == set(job_of.values())


@pytest.mark.slow                 # real local-executor workers running cells
def test_status_and_cancel_of_a_local_queue(write_grid, tmp_path, monkeypatch):
    grid_path = write_grid("name: qs\nplugins: [toy_lab]\nmatrix:\n"
                           "  - {teacher: [toy], method: [toy_slow], seed: [0]}\n"
                           "  - {teacher: [toy], method: [toy_sampler], seed: [0]}\n")
    common = ("--grid", str(grid_path), "--results", str(tmp_path / "results"))
    monkeypatch.setenv("TOY_LAB_SLOW_S", "20")
    rc, out, _ = main(*common, "--executor", "local", "--max-parallel", "2", "--no-wait")
    assert rc == 0 and "submitted 2 cells in 2 job(s)" in out
    workers = out.split("job(s): ")[1].split("\n")[0].split(", ")
    slow, quick = load_grid(grid_path).specs
    deadline = time.time() + 60
    while True:                            # the quick cell done, the slow one claimed and running
        rc, out, _ = main(*common, "--status")
        lines = {line.split()[0]: line.split() for line in out.splitlines()
                 if line[:16] in (slow.run_id, quick.run_id)}
        if lines.get(quick.run_id, [""] * 2)[1] == "ok" and lines.get(slow.run_id, [""] * 2)[1] == "running":
            break
        assert time.time() < deadline, out
        time.sleep(0.5)
    assert lines[slow.run_id][2] in workers  # the worker that claimed it, not just the first job
    rc, out, err = main(*common, "--cancel")
    assert rc != 0 and "cannot be cancelled from here" in err and all(w in err for w in workers)
    deadline = time.time() + 120
    while store.statuses(tmp_path / "results", "qs", [slow.run_id])[slow.run_id] != "ok":
        assert time.time() < deadline, "the slow cell did not finish"
        time.sleep(0.5)
    assert store.read_record(store.record_path(tmp_path / "results", "qs", slow.run_id))[
        "provenance"]["job_id"] == lines[slow.run_id][2]


def test_a_queue_cell_runs_while_any_worker_of_its_queue_does():
    dead = "999999999"
    marker = {"executor": "local", "job_id": dead, "host": os.uname().nodename}
    assert executors.local_states([{**marker, "workers": [dead, str(os.getpid())]}])[0].alive
    assert not executors.local_states([{**marker, "workers": [dead, dead]}])[0].alive
    assert not executors.local_states([marker])[0].alive


def _dimo(relaxation: str, seed: int, teacher: str = "digits") -> RunSpec:
    return resolve_cell({"teacher": teacher, "method": "dimo", "relaxation": relaxation, "seed": seed}, "mini")


def test_queue_order_interleaves_teachers_and_puts_shared_work_last():
    specs = [_dimo(r, s, t) for t in ("digits", "shapes") for r in ("hard", "gumbel", "soft") for s in (0, 1)]
    order = workqueue.queue_order(specs, executors.work_key)
    assert [(s.teacher[0], s.relaxation[0], s.seed) for s in order] == [
        ("d", "h", 0), ("s", "h", 0), ("d", "h", 1), ("s", "h", 1),   # gumbel and soft repeat hard's
        ("d", "g", 0), ("s", "g", 0), ("d", "g", 1), ("s", "g", 1),   # student (phi and psi read the
        ("d", "s", 0), ("s", "s", 0), ("d", "s", 1), ("s", "s", 1)]   # sample): last, once it is trained
    toy = [resolve_cell({"teacher": "toy", "method": "toy_sampler", "seed": i, "teacher.size": dim},
                        "mini", ("toy_lab",)) for dim in (4, 6) for i in range(2)]
    assert [(s.param("teacher.size"), s.seed) for s in workqueue.queue_order(toy, executors.work_key)] == [
        (4, 0), (6, 0), (4, 1), (6, 1)]                              # no work key: grid order per teacher
    assert workqueue.queue_order([], executors.work_key) == []


def test_missing_profile_stops_before_submitting(write_grid, tmp_path, monkeypatch, record_files):
    monkeypatch.setenv("SOFTDIMO_SLURM_PROFILES", str(tmp_path / "profiles"))
    grid = write_grid(GRID + "scales:\n  mini:\n    resources: cluster9\n")
    rc, _, err = main("--grid", str(grid), "--results", str(tmp_path / "r"), "--executor", "debug")
    assert rc == 2 and "no SLURM profile named 'cluster9'" in err
    assert record_files(tmp_path / "r") == []


def test_slurm_needs_a_profile(write_grid, tmp_path, record_files):
    rc, _, err = main("--grid", str(write_grid(GRID)), "--results", str(tmp_path / "r"),
                      "--executor", "slurm")
    assert rc == 2 and "--executor slurm needs a resource profile: pass --slurm-profile NAME" in err
    assert "available: " in err and "localhost" in err
    assert record_files(tmp_path / "r") == []


def test_flag_profile_wins_over_the_grid_and_bad_profiles_stop(write_grid, tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTDIMO_SLURM_PROFILES", str(tmp_path))
    (tmp_path / "gpu1.yaml").write_text("timeout_min: 30\ngpus_per_node: 1\nmax_array_size: 50\n")
    (tmp_path / "bad.yaml").write_text("timeout: 30\n")
    grid = load_grid(write_grid(GRID + "scales:\n  mini:\n    resources: bad\n"))
    assert launch.resource_profiles(grid, "gpu1")["gpu1"].max_array_size == 50
    rc, _, err = main("--grid", str(grid.path), "--results", str(tmp_path / "r"), "--dry-run")
    assert rc == 2 and f"{tmp_path / 'bad.yaml'}:1: timeout: unknown key" in err
    rc, out, _ = main("--grid", str(grid.path), "--results", str(tmp_path / "r"), "--dry-run",
                      "--slurm-profile", "gpu1")
    assert rc == 0 and out.splitlines()[-1] == "7 pending"


class RecordingExecutor:
    # Stands in for submitit.AutoExecutor(cluster="slurm") where no SLURM is installed: records
    # the parameters and the job arrays (one per `batch()` block) instead of calling sbatch.
    instances: list["RecordingExecutor"] = []

    def __init__(self, folder, cluster, **kwargs):
        self.folder, self.cluster, self.kwargs, self.params, self.arrays = folder, cluster, kwargs, {}, []
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
        array, task = len(self.arrays) + 1, len(self._batch) - 1
        paths = type("Paths", (), {"stderr": Path(f"/logs/{array}_{task}_0_log.err")})()
        return type("Job", (), {"job_id": f"{array}_{task}", "paths": paths})()


def test_slurm_submission_arrays_chunked_with_explicit_timeout(monkeypatch, tmp_path):
    import dataclasses

    import submitit
    from harness.cell import JobTerms, SlurmCell
    from harness.grid.profiles import load_profile
    from harness.launch import JOBS
    from harness.store.provenance import CodeVersion
    monkeypatch.setattr(submitit, "AutoExecutor", RecordingExecutor)
    RecordingExecutor.instances.clear()
    specs = [resolve_cell({"teacher": "toy", "method": "toy_sampler", "seed": i}, "mini")
             for i in range(7)]
    profile = dataclasses.replace(load_profile("generic_gpu"), max_array_size=3, max_num_timeout=4)
    code = CodeVersion("abc123", True, "d1ff")
    subs = executors.submit_slurm(executors.SubmitRequest(specs, "g", tmp_path, tmp_path / "%j",
                                                          profile, None, JOBS, code, False))
    (ex,) = RecordingExecutor.instances
    assert ex.cluster == "slurm" and ex.kwargs == {"slurm_max_num_timeout": 4}
    assert [len(a) for a in ex.arrays] == [3, 3, 1]                   # chunked to the array limit
    assert ex.params["timeout_min"] == 240 and ex.params["cpus_per_task"] == 8
    assert ex.params["gpus_per_node"] == 1 and ex.params["slurm_partition"] == "gpu"
    assert ex.params["slurm_array_parallelism"] == 32                  # the profile's
    # mini cells run pinned (harness.methods.numerics): one thread and the fixed kernel levels, exported
    # after the profile's own settings, so they win in the job's shell
    pins = pinned_environment("mini")
    assert ex.params["slurm_setup"] == ["export OMP_NUM_THREADS=8", f"export SOFTDIMO_THREADS={1 if pins else 8}",
                                        *(f"export {k}={v}" for k, v in pins.items()),
                                        "export SOFTDIMO_COLLECTIVE_TIMEOUT_S=600"]
    assert ex.params["slurm_srun_args"] == ["--kill-on-bad-exit=1"]
    fn, args = ex.arrays[0][0]
    assert isinstance(fn, SlurmCell) and args == ()
    assert (fn.spec_json, fn.grid, fn.results_root) == (specs[0].to_json(), "g", str(tmp_path))
    assert fn.terms == JobTerms(
        {"git_commit": "abc123", "git_dirty": True, "diff_sha256": "d1ff"}, False, "generic_gpu", 4, 120)
    assert len(pickle.dumps(fn)) < 4000                               # JSON values, no model
    assert [s.run_ids for s in subs] == [[s.run_id] for s in specs]
    assert [(s.marker["array_id"], s.marker["task"]) for s in subs[2:4]] == [("1", 2), ("2", 0)]
    RecordingExecutor.instances.clear()
    executors.submit_slurm(executors.SubmitRequest(specs[:1], "g", tmp_path, tmp_path / "%j",
                                                   profile, 5, JOBS, code, False))
    assert RecordingExecutor.instances[0].params["slurm_array_parallelism"] == 5  # --max-parallel


def test_slurm_states_from_result_files_without_sacct(tmp_path, monkeypatch):
    # Where sacct cannot be asked, a finished SLURM job is one that left submitit's result pickle.
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    folder = tmp_path / "%j"
    done_dir = tmp_path / "4242"
    done_dir.mkdir()
    (done_dir / "4242_0_result.pkl").write_bytes(b"")
    markers = [{"executor": "slurm", "job_id": "4242", "folder": str(folder)},
               {"executor": "slurm", "job_id": "4243", "folder": str(folder)},
               {"executor": "slurm", "job_id": "1"}]                  # no folder known
    assert executors.slurm_states(markers) == [
        executors.JobState(False, "ended"), executors.JobState(True, "submitted"),
        executors.JobState(False, "unknown")]

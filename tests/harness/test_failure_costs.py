"""What failures cost: sacct's usage of every start of a job, the task srun saw fail first, the
launcher's record of a job that ended without one (naming that task and counting sacct's GPU
hours), and the report's table of failed attempts (waste), kept attempts included."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import submitit

from harness import launch, store
from harness.cell import slurm
from harness.grid.spec import resolve_cell
from harness.launch import executors
from harness.launch.executors import JobEnd, SubmittedJob
from harness.report import costs

# sacct -X -n -P -D -o JobID,State,ElapsedRaw,AllocTRES for a job requeued once, then failed.
SACCT_ROWS = ("17_3|REQUEUED|7200|billing=16,cpu=16,gres/gpu=8,mem=512G,node=2\n"
              "17_3|FAILED|1800|billing=16,cpu=16,gres/gpu=8,mem=512G,node=2\n")
# srun's own lines in the job's log when task 1 was killed (as the localhost cluster writes them).
SRUN_LOG = ("srun: error: vm: task 1: Killed\n"
            "srun: launch/slurm: _step_signal: Terminating StepId=2.0\n"
            "slurmstepd-vm: error: *** STEP 2.0 ON vm CANCELLED AT 2026-12-07T18:17:30 ***\n"
            "srun: error: vm: task 0: Killed\n")


def test_sacct_usage_counts_every_start(monkeypatch) -> None:
    monkeypatch.setattr(slurm, "_sacct", lambda args: SACCT_ROWS if "-D" in args else None)
    usage = slurm.job_usage("17_3")
    assert usage == {"elapsed_s": 9000, "runs": 2, "gpus": 8, "accelerator_hours": 20.0, "starts": [
        {"state": "REQUEUED", "elapsed_s": 7200, "gpus": 8, "accelerator_hours": 16.0},
        {"state": "FAILED", "elapsed_s": 1800, "gpus": 8, "accelerator_hours": 4.0}]}
    assert slurm.first_bad_task(SRUN_LOG) == (1, "Killed")
    assert slurm.first_bad_task("srun: error: n3: tasks 4-7: Exited with exit code 1\n") == (4, "Exited with exit code 1")
    assert slurm.first_bad_task("all good\n") is None


# A job that ended without writing its cell's record: the launcher's JobEnded record names the task
# the executor reports and takes its cost from accounting; the report's waste table counts it with
# the attempt it replaced.
def test_a_job_ended_without_a_record_is_recorded_with_its_task_and_accounted_cost(tmp_path: Path) -> None:
    spec = resolve_cell({"teacher": "toy", "method": "toy_sampler", "seed": 0}, "mini")
    job = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="debug").submit(print)
    usage = {"elapsed_s": 9000, "runs": 2, "gpus": 8, "accelerator_hours": 20.0, "starts": []}
    executor = dataclasses.replace(executors.registered.get("local"),
                                   job_end=lambda j: JobEnd(1, "srun: task 1: Killed", usage))
    run_dir = store.run_dir(tmp_path, "g", spec.run_id)
    earlier = {"schema_version": store.SCHEMA_VERSION, "run_id": spec.run_id, "grid": "g", "spec": spec.to_json(),
               "status": "failed", "error": {"type": "RuntimeError", "message": "first", "traceback": "", "log": ""},
               "cost": {"wall_s": 60.0, "peak_mem_mb": 1.0, "accelerator_hours": 0.5, "stages": {}}}
    store.write_record(run_dir, earlier)
    started = launch.Launch("g", tmp_path, executor, [SubmittedJob(job, [spec])], tmp_path / "jobs",
                            earlier={spec.run_id: store.record_stamp(store.record_path(tmp_path, "g", spec.run_id))})
    assert started.statuses() == {spec.run_id: None}       # the earlier record is not this launch's outcome
    launch._settle(started, started.submissions[0], "FAILED", None, "")
    record = store.read_record(store.record_path(tmp_path, "g", spec.run_id))
    assert record["error"]["type"] == "JobEnded" and record["error"]["rank"] == 1
    assert record["error"]["message"] == (f"job {job.job_id} ended without a record for this cell "
                                          f"(FAILED; srun: task 1: Killed)")
    assert record["cost"]["accelerator_hours"] == 20.0 and record["cost"]["wall_s"] == 9000.0
    assert record["cost"]["sacct"] == usage
    assert started.statuses() == {spec.run_id: "failed"}

    failed = [record, *store.kept_attempts(tmp_path, ["g"])]
    assert [r["error"]["message"] for r in failed[1:]] == ["first"]
    table = costs.render_failures(failed)
    assert "| toy | Toy sampler, 16 step(s) | 2 | 9060.0 | 20.5 | JobEnded x1, RuntimeError x1 |" in table
    assert costs.render_failures([]) == ""

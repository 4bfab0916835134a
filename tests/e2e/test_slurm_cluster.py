"""submitit against a real one-node SLURM cluster (slurm/localhost/cluster.py), configured from
slurm/profiles/localhost.yaml: round trip, one array per map_array, failures with their logs,
cancel, checkpoint/requeue/resume and the requeue cap."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import submitit

from tests import slurm_jobs
from harness.grid.profiles import load_profile
from tests.slurm_cluster import LocalCluster, executor_for, poll

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def profile():
    return load_profile("localhost")


# The sbatch scripts submitit wrote under `folder`: one per sbatch call (array or single job).
def submissions(folder: Path) -> list[Path]:
    return sorted(folder.glob("*_submission.sh"))


#----------------------------------------------------------------------------


def test_profile_matches_the_running_cluster(slurm_cluster: LocalCluster, profile) -> None:
    assert profile.max_array_size == slurm_cluster.max_array_size()
    partitions = slurm_cluster.client("sinfo", "-h", "-o", "%P").split()
    assert f"{profile.partition}*" in partitions  # the default partition


def test_submit_and_result_round_trip(slurm_cluster: LocalCluster, profile, tmp_path: Path) -> None:
    job = executor_for(profile, tmp_path).submit(slurm_jobs.add, 2, 3)
    out = job.result()
    assert out["sum"] == 5
    assert out["partition"] == profile.partition
    assert out["cpus_per_task"] == str(profile.cpus_per_task)
    assert out["job_id"] == job.job_id
    # The profile reached sbatch: time limit, signal, extra options.
    [script] = submissions(tmp_path)
    text = script.read_text()
    assert f"#SBATCH --time={profile.timeout_min}\n" in text
    assert f"#SBATCH --signal=USR2@{profile.signal_delay_s}\n" in text
    assert "#SBATCH --requeue\n" in text
    assert poll("sacct COMPLETED", lambda: slurm_cluster.sacct_states(job.job_id).get(job.job_id)
                == "COMPLETED", 30)


def test_map_array_is_one_array_job(slurm_cluster: LocalCluster, profile, tmp_path: Path) -> None:
    xs, ys = [1, 2, 3, 4], [10, 20, 30, 40]
    jobs = executor_for(profile, tmp_path).map_array(slurm_jobs.add, xs, ys)
    results = [j.result() for j in jobs]
    assert [r["sum"] for r in results] == [11, 22, 33, 44]
    # One sbatch call: one submission script holding the whole array, throttled to the profile.
    [script] = submissions(tmp_path)
    assert f"#SBATCH --array=0-3%{profile.array_parallelism}\n" in script.read_text()
    array_id = jobs[0].job_id.split("_")[0]
    assert [j.job_id for j in jobs] == [f"{array_id}_{i}" for i in range(4)]
    assert {r["array_job_id"] for r in results} == {array_id}
    assert sorted(r["array_task_id"] for r in results) == ["0", "1", "2", "3"]
    states = poll("sacct rows of the array", lambda: (s := slurm_cluster.sacct_states(array_id))
                  and len(s) == 4 and set(s.values()) == {"COMPLETED"} and s, 30)
    assert sorted(states) == [f"{array_id}_{i}" for i in range(4)]


def test_array_beyond_the_cluster_limit_is_refused(slurm_cluster: LocalCluster, profile,
                                                   tmp_path: Path) -> None:
    # submitit does not split arrays; the launcher must chunk to max_array_size.
    n = profile.max_array_size + 1
    with pytest.raises(submitit.core.utils.FailedJobError, match="Invalid job array specification"):
        executor_for(profile, tmp_path).map_array(slurm_jobs.square_or_fail, range(n))


def test_failing_task_surfaces_error_and_log_while_others_complete(
        slurm_cluster: LocalCluster, profile, tmp_path: Path) -> None:
    jobs = executor_for(profile, tmp_path).map_array(slurm_jobs.square_or_fail, [3, -2, 5])
    assert jobs[0].result() == 9 and jobs[2].result() == 25
    error = jobs[1].exception()
    assert isinstance(error, submitit.core.utils.FailedJobError)
    message = str(error)
    assert "ValueError: cell -2 diverged" in message
    stderr_path = jobs[1].paths.stderr
    assert str(stderr_path) in message
    assert "ValueError: cell -2 diverged" in stderr_path.read_text()
    poll("sacct FAILED for the failing task",
         lambda: slurm_cluster.sacct_states(jobs[1].job_id).get(jobs[1].job_id) == "FAILED", 30)


def test_cancel(slurm_cluster: LocalCluster, profile, tmp_path: Path) -> None:
    marker = tmp_path / "running"
    job = executor_for(profile, tmp_path).submit(slurm_jobs.wait_to_be_cancelled, marker, 120)
    poll("the job to start", marker.exists, 60)
    job.cancel()
    poll("submitit to see the job done", lambda: job.done(force_check=True), 60)
    state = poll("sacct CANCELLED", lambda: (s := slurm_cluster.sacct_states(job.job_id)
                                             .get(job.job_id, "")).startswith("CANCELLED") and s, 30)
    assert state.startswith("CANCELLED")
    error = job.exception()
    assert isinstance(error, submitit.core.utils.UncompletedJobError)
    assert not isinstance(error, submitit.core.utils.FailedJobError)


def test_checkpointed_job_resumes_after_usr2_with_the_uninterrupted_result(
        slurm_cluster: LocalCluster, profile, tmp_path: Path) -> None:
    steps = 16
    work = tmp_path / "work"
    work.mkdir()
    job = executor_for(profile, tmp_path / "logs").submit(slurm_jobs.ResumableChain(work, steps, 0.25))
    poll("the chain to reach step 4", lambda: slurm_jobs.checkpointed_step(work) >= 4, 60)
    # Preemption as SLURM does it: SIGTERM (submitit bypasses it), then USR2. Sent back to back
    # (submitit's `job._interrupt()`), slurmd may deliver the SIGTERM after the USR2 and kill the
    # `scontrol requeue` its handler runs, so the USR2 waits until the job has seen the SIGTERM.
    slurm_cluster.client("scancel", "--signal=SIGTERM", job.job_id)
    poll("the job to bypass SIGTERM", lambda: job.paths.stderr.exists()
         and "Bypassing signal SIGTERM" in job.paths.stderr.read_text(), 30)
    slurm_cluster.client("scancel", "--signal=USR2", job.job_id)
    out = job.result()
    assert out["digest"] == slurm_jobs.chain_value(steps)
    (first_step, first_restart), (resumed_step, resumed_restart) = out["starts"]
    assert (first_step, first_restart) == (0, 0)
    assert resumed_restart == 1 and 4 <= resumed_step < steps


def test_requeue_cap_stops_a_job_that_keeps_timing_out(
        slurm_cluster: LocalCluster, profile, tmp_path: Path) -> None:
    # timeout_min <= 10: submitit counts every USR2 as a time-out, which uses up max_num_timeout.
    capped = dataclasses.replace(profile, max_num_timeout=1)
    work = tmp_path / "work"
    work.mkdir()
    job = executor_for(capped, tmp_path / "logs").submit(slurm_jobs.ResumableChain(work, 10_000, 0.1))
    poll("the chain to start", lambda: slurm_jobs.checkpointed_step(work) >= 2, 60)
    job._interrupt(timeout=True)
    poll("the requeued run to make progress",
         lambda: len(slurm_jobs.read_starts(work)) == 2
         and slurm_jobs.checkpointed_step(work) > slurm_jobs.read_starts(work)[1][0], 90)
    job._interrupt(timeout=True)
    error = job.exception()
    assert isinstance(error, submitit.core.utils.UncompletedJobError)
    assert "timed-out too many times" in str(error)
    assert [restart for _, restart in slurm_jobs.read_starts(work)] == [0, 1]


@pytest.mark.slow
def test_checkpointed_job_survives_a_real_time_limit(slurm_cluster: LocalCluster, profile,
                                                     tmp_path: Path) -> None:
    # A 1-minute limit with the signal 50 s early: SLURM's periodic time checks deliver USR2
    # anywhere in the first ~30 s of each run, so a run may even be signalled at step 0.
    limited = dataclasses.replace(profile, timeout_min=1, signal_delay_s=50, max_num_timeout=6)
    steps = 40
    work = tmp_path / "work"
    work.mkdir()
    job = executor_for(limited, tmp_path / "logs").submit(slurm_jobs.ResumableChain(work, steps, 1.0))
    out = job.result()
    assert out["digest"] == slurm_jobs.chain_value(steps)
    starts = out["starts"]
    assert len(starts) >= 2
    assert [r for _, r in starts] == list(range(len(starts)))
    assert all(a <= b for (a, _), (b, _) in zip(starts, starts[1:])) and starts[-1][0] > 0

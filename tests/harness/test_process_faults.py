"""A cell over 2 local processes (`--procs-per-cell 2`, gloo) when one of them fails: the failure
record names the process that failed first, whichever it is and however it failed (a Python
exception, killed, gone with the group's store, hung past the collective timeout), with its
traceback's last lines; a cell whose rank 1 is SIGKILLed mid-distillation is resumed by the same
command with --rerun-failed, which reports the new job's outcome and ends with the metrics of an
uninterrupted run; and a wait for another job's cache lock longer than the collective timeout
happens outside collectives, logged, and the cell completes.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness import launch, store
from harness.grid import load_grid
from harness.methods.students import student_key
from tests.harness.test_slurm_launch import LONG_STEPS, digits_block, main, records, run_log, write_grid
from tests.slurm_cluster import poll

pytestmark = pytest.mark.slow

TOY = {"teacher": ["toy"], "method": ["toy_flaky"], "seed": [0]}
RECORD_WITHIN_S = 300              # the acceptance bound: a failure record within 5 minutes


# Run the launcher in a thread; `outcome` gets (rc, out, err) when it returns.
def launch_in_thread(*args: str) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.update(zip(("rc", "out", "err"), main(*args))))
    thread.start()
    return thread, outcome


# The log (stdout) of process `rank` of the job(s) running a submitted cell, "" before there is one.
def task_log_text(results: Path, grid: str, run_id: str, rank: int) -> str:
    marker = launch.read_marker(results, grid, run_id) or {}
    logs = [results / grid / launch.SUBMITIT_DIR / str(job) / f"{job}_{rank}_log.out"
            for job in marker.get("workers") or [marker.get("job_id")] if job]
    return "".join(log.read_text() for log in logs if log.exists())


# The pid of process `rank` of the job running a submitted cell, from the line its task logs
# ("process 1 of 2 (pid N on host)"), once it is there.
def rank_pid(results: Path, grid: str, run_id: str, rank: int, timeout_s: float = 300) -> int:
    def find() -> int | None:
        found = re.search(rf"process {rank} of \d+ \(pid (\d+) on ", task_log_text(results, grid, run_id, rank))
        return int(found.group(1)) if found else None
    return int(poll(f"the pid of rank {rank}", find, timeout_s))


def failed_record(results: Path, grid: str, run_id: str) -> dict[str, Any]:
    record = store.read_record(store.record_path(results, grid, run_id))
    assert record["status"] == "failed", record
    return record

#----------------------------------------------------------------------------


# toy_flaky fails (raises) or crashes (exits at once) on one rank; toy_mean fails while rank 0
# scores the samples alone, after rank 1 has done its share and left (not a failure of rank 1).
@pytest.mark.parametrize("knob, rank, kind", [("TOY_LAB_FAIL_RANK", 1, "raised"), ("TOY_LAB_CRASH_RANK", 1, "stopped"),
                                              ("TOY_LAB_CRASH_RANK", 0, "stopped"), ("TOY_LAB_FAIL_SCORING", 0, "raised")])
def test_the_failure_record_names_the_process_that_failed_first(knob: str, rank: int, kind: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(knob, str(rank))
    grid_path = write_grid(tmp_path / "grid.yaml", "rank_fails", [TOY])
    [spec] = load_grid(grid_path).specs
    results = tmp_path / "results"
    rc, out, _ = main("--grid", str(grid_path), "--results", str(results), "--executor", "local",
                      "--procs-per-cell", "2", "--collective-timeout", "120")
    assert rc == 1 and "summary: 0 ok, 1 failed" in out
    error = failed_record(results, "rank_fails", spec.run_id)["error"]
    assert error["rank"] == rank and error["world_size"] == 2
    assert error["message"].startswith(f"rank {rank} of 2: ")
    assert f"    {error['type']}: rank {rank} of 2: " in out
    if knob == "TOY_LAB_FAIL_SCORING":
        assert error["type"] == "RuntimeError"
        assert error["traceback_tail"].endswith("RuntimeError: toy_mean failed because TOY_LAB_FAIL_SCORING is set")
        assert error["log"] == str(store.run_dir(results, "rank_fails", spec.run_id) / "log.txt")
    elif kind == "raised":                # rank 1 wrote it: its own traceback's tail and log
        assert error["type"] == "RuntimeError"
        assert error["traceback_tail"].endswith("RuntimeError: toy_flaky failed on rank 1 because TOY_LAB_FAIL_RANK is set")
        assert "      | RuntimeError: toy_flaky failed on rank 1 because" in out
        assert error["log"].endswith("_1_log.out") and "toy_flaky failed on rank 1" in Path(error["log"]).read_text()
        log = run_log(results, "rank_fails", spec.run_id)
        assert f"[rank 1] recorded the failure: rank 1 of 2: toy_flaky failed on rank 1" in log
    else:                                 # no exception to tell: the survivor names the silent one
        assert error["type"] == "ProcessStopped" and error["traceback_tail"] == ""
        how = ("stopped without a Python error (no heartbeat for 2 s)" if rank == 1 else
               "gone: the group's store, which rank 0 hosts, is unreachable")
        assert error["message"].startswith(f"rank {rank} of 2: {how}")
        assert error["rank_log"].endswith(f"_{rank}_log.out") and Path(error["rank_log"]).exists()


# Rank 1 stopped (SIGSTOP: alive, silent, its socket open) while rank 0 waits in a collective: the
# collective fails after the launch's timeout, and the record names rank 1. toy_slow sleeps, then
# gathers the processes' devices (the collective).
def test_a_hung_process_is_named_after_the_collective_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    timeout_s = 20
    monkeypatch.setenv("TOY_LAB_SLOW_S", "15")
    grid_path = write_grid(tmp_path / "grid.yaml", "rank_hangs", [{**TOY, "method": ["toy_slow"]}])
    [spec] = load_grid(grid_path).specs
    results = tmp_path / "results"
    thread, outcome = launch_in_thread("--grid", str(grid_path), "--results", str(results), "--executor", "local",
                                       "--procs-per-cell", "2", "--collective-timeout", str(timeout_s))
    pid = rank_pid(results, "rank_hangs", spec.run_id, 1)
    try:
        os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        poll("the failure record", lambda: store.record_path(results, "rank_hangs", spec.run_id).exists(),
             RECORD_WITHIN_S)
        elapsed = time.monotonic() - stopped
        thread.join(timeout=60)
    finally:
        os.kill(pid, signal.SIGKILL)          # the local worker ends once all its processes have
    assert outcome["rc"] == 1
    record = failed_record(results, "rank_hangs", spec.run_id)
    assert record["provenance"]["collective_timeout_s"] == timeout_s
    assert record["error"]["rank"] == 1 and record["error"]["type"] == "ProcessStopped"
    assert "rank 0 then failed with RuntimeError: " in record["error"]["message"]
    assert "Timed out waiting 20000ms" in record["error"]["message"]
    # Rank 0 enters the gather at most the rest of its 15-s sleep after the stop, fails timeout_s
    # later and names rank 1 after SILENT_S (2 s) of silence: well before any 2-hour default.
    assert elapsed < 15 + timeout_s + 60, elapsed


def test_rank_1_killed_mid_step_then_the_same_command_resumes_to_the_uninterrupted_result(
        tiny_teacher, teacher_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOFTDIMO_CACHE", str(teacher_cache))
    grid_path = write_grid(tmp_path / "grid.yaml", "local_kill", [     # seed 44: a student of its own
        digits_block("soft", LONG_STEPS, seed=[44], **{"distill.checkpoint_every": 50})])
    [spec] = load_grid(grid_path).specs
    results = tmp_path / "local"
    command = ("--grid", str(grid_path), "--results", str(results), "--executor", "local", "--procs-per-cell", "2",
               "--collective-timeout", "60")
    failed, rerun = kill_rank_1_then_rerun(command, results, "local_kill", spec.run_id)
    assert failed["provenance"]["collective_timeout_s"] == 60

    # The same cell over 2 local processes, its student trained again without interruption.
    shutil.rmtree(teacher_cache / "students" / student_key(spec, 2))
    straight_root = tmp_path / "straight"
    rc, out, err = main("--grid", str(grid_path), "--results", str(straight_root), "--executor", "local",
                        "--procs-per-cell", "2")
    assert rc == 0, out + err
    assert_same_result(rerun, records(straight_root, "local_kill")[spec.run_id], results, straight_root,
                       "local_kill")


# Launch `command` (a one-cell grid of LONG_STEPS distillation steps checkpointed every 50), SIGKILL
# rank 1 after step 75, check the failure record (within RECORD_WITHIN_S, naming rank 1), then run
# the same command with --rerun-failed: it resumes from the last checkpoint and reports the new
# job's outcome. Returns the failed and the final record.
def kill_rank_1_then_rerun(command: tuple[str, ...], results: Path, grid: str,
                           run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    thread, outcome = launch_in_thread(*command)
    poll("distillation past step 75", lambda: f"distill step 75/{LONG_STEPS}" in run_log(results, grid, run_id), 600)
    os.kill(rank_pid(results, grid, run_id, 1), signal.SIGKILL)
    killed = time.monotonic()
    poll("the failure record", lambda: store.record_path(results, grid, run_id).exists(), RECORD_WITHIN_S)
    assert time.monotonic() - killed < RECORD_WITHIN_S
    thread.join(timeout=120)
    assert not thread.is_alive(), "the launch did not finish"
    assert outcome["rc"] == 1, outcome
    failed = failed_record(results, grid, run_id)
    assert failed["error"]["rank"] == 1 and failed["error"]["message"].startswith("rank 1 of 2: ")
    assert f"rank 1 of 2: " in outcome["out"]
    checkpoint = store.run_dir(results, grid, run_id) / "checkpoints" / "distill.pt"
    assert checkpoint.is_file()

    rc, out, err = main(*command, "--rerun-failed")
    assert rc == 0, out + err
    assert "summary: 1 ok, 0 failed, 0 diverged, 0 skipped (done before)" in out
    log = run_log(results, grid, run_id)
    resumed = int(re.search(r"resumed distillation at step (\d+) from", log).group(1))
    assert resumed % 50 == 0 and 50 <= resumed < LONG_STEPS
    final = store.read_record(store.record_path(results, grid, run_id))
    assert final["status"] == "ok" and final["provenance"]["attempt"] != failed["provenance"]["attempt"]
    kept = store.read_record(store.run_dir(results, grid, run_id) / store.ATTEMPTS_DIR / "1.json")
    assert kept == failed                                   # nothing recorded is lost
    return failed, final


# A resumed run ends as the uninterrupted one: metrics, info (but the student's timing) and samples.
def assert_same_result(resumed: dict[str, Any], straight: dict[str, Any], resumed_root: Path,
                       straight_root: Path, grid: str) -> None:
    assert resumed["metrics"] == straight["metrics"]
    assert {**resumed["info"], "student": None} == {**straight["info"], "student": None}
    rid = resumed["run_id"]
    png = (store.run_dir(resumed_root, grid, rid) / "samples.png").read_bytes()
    assert png == (store.run_dir(straight_root, grid, rid) / "samples.png").read_bytes()


# Another job holds the lock of the cell's student entry for longer than the collective timeout:
# rank 0 waits for the lock and says who holds it, rank 1 waits for rank 0's word outside
# collectives and says what it waits for, and the cell then completes: no collective timed out.
def test_a_long_wait_for_another_jobs_cache_lock_happens_outside_collectives(
        tiny_teacher, teacher_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    timeout_s = 20
    monkeypatch.setenv("SOFTDIMO_CACHE", str(teacher_cache))
    grid_path = write_grid(tmp_path / "grid.yaml", "lock_wait", [digits_block("hard", 4, seed=[46])])
    [spec] = load_grid(grid_path).specs
    entry = teacher_cache / "students" / student_key(spec, 2)
    results = tmp_path / "results"
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.parent / f".{entry.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write("the test's stand-in for another job\n")
        lock.flush()
        held = time.monotonic()
        thread, outcome = launch_in_thread("--grid", str(grid_path), "--results", str(results), "--executor",
                                           "local", "--procs-per-cell", "2", "--collective-timeout", str(timeout_s))
        poll("rank 0 waiting for the lock", lambda: f"waiting for cache entry {entry}: another process builds it "
             f"(the test's stand-in for another job; lock" in run_log(results, "lock_wait", spec.run_id), 300)
        poll("rank 1 waiting for rank 0", lambda: f"[rank 1] waiting for rank 0 (whether cache entry {entry} exists; "
             f"it may wait for another job's lock)" in task_log_text(results, "lock_wait", spec.run_id, 1), 120)
        time.sleep(max(0.0, 2 * timeout_s - (time.monotonic() - held)))
    thread.join(timeout=300)
    assert outcome["rc"] == 0, outcome
    record = store.read_record(store.record_path(results, "lock_wait", spec.run_id))
    assert record["status"] == "ok" and record["provenance"]["collective_timeout_s"] == timeout_s
    assert f"cache entry {entry}: lock free after " in run_log(results, "lock_wait", spec.run_id)

"""A cell over 2 SLURM tasks (profile `tasks_per_node: 2`) on the localhost cluster: interrupted by
USR2 mid-distillation, every process stops at the same step, rank 0 saves one checkpoint and
requeues, the requeued job resumes over 2 processes again and ends with the metrics of an
uninterrupted 2-process run (the same cell over 2 local processes). With its rank 1 SIGKILLed
mid-step, srun ends the step, the failure record names rank 1 and carries sacct's usage, and the
same command with --rerun-failed resumes the cell to the uninterrupted result.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from harness import store
from harness.grid import load_grid
from tests.harness.test_slurm_launch import (LONG_STEPS, digits_block, env, launch_and_interrupt,  # noqa: F401
                                             main, profile_variant, records, run_log, sbatch_scripts,
                                             write_grid)
from tests.harness.test_process_faults import assert_same_result, kill_rank_1_then_rerun
from tests.slurm_cluster import LocalCluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]      # about 70 s and 3 min with the cluster's start


def test_two_task_cell_requeued_after_usr2_ends_as_an_uninterrupted_two_process_run(
        env: LocalCluster, teacher_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profiles = tmp_path / "profiles"
    profile_variant(profiles, "two_tasks", tasks_per_node=2)
    monkeypatch.setenv("SOFTDIMO_SLURM_PROFILES", str(profiles))
    # seed 43: a student (and Di[M]O prefix) of its own, so no cache entry starts it past step 25
    grid_path = write_grid(tmp_path / "grid.yaml", "slurm_two_tasks", [
        digits_block("soft", LONG_STEPS, seed=[43], **{"distill.checkpoint_every": 0})])
    [spec] = load_grid(grid_path).specs
    results = tmp_path / "slurm"
    outcome, _ = launch_and_interrupt(env, grid_path, spec.run_id, results, "two_tasks", start_s=240, join_s=300)
    assert outcome["rc"] == 0, outcome

    [script] = sbatch_scripts(results, "slurm_two_tasks")
    assert "#SBATCH --ntasks-per-node=2\n" in script.read_text()
    record = records(results, "slurm_two_tasks")[spec.run_id]
    assert record["status"] == "ok"
    assert record["provenance"]["world_size"] == record["cost"]["world_size"] == 2
    assert record["provenance"]["devices"] == ["cpu", "cpu"]
    assert record["provenance"]["slurm"]["restart_count"] == 1
    assert [(r["restart"], r["end"]) for r in record["cost"]["runs"]] == [(0, "requeued"), (1, "ok")]
    log = run_log(results, "slurm_two_tasks", spec.run_id)
    [saved] = re.findall(r"checkpoint saved at distill step (\d+); requeueing", log)
    assert 25 <= int(saved) < LONG_STEPS
    assert f"resumed distillation at step {saved} from" in log

    # The same cell over 2 local processes, its student trained again without interruption.
    shutil.rmtree(teacher_cache / "students" / record["info"]["student"]["cache_key"])
    local = tmp_path / "local"
    rc, out, err = main("--grid", str(grid_path), "--results", str(local), "--executor", "local",
                        "--procs-per-cell", "2")
    assert rc == 0, out + err
    straight = records(local, "slurm_two_tasks")[spec.run_id]
    assert straight["provenance"]["world_size"] == 2 and not straight["info"]["student"]["cache_hit"]
    assert record["metrics"] == straight["metrics"]
    assert {**record["info"], "student": None} == {**straight["info"], "student": None}
    png = (store.run_dir(results, "slurm_two_tasks", spec.run_id) / "samples.png").read_bytes()
    assert png == (store.run_dir(local, "slurm_two_tasks", spec.run_id) / "samples.png").read_bytes()


def test_two_task_cell_with_rank_1_killed_mid_step_is_recorded_and_resumed_by_the_same_command(
        env: LocalCluster, teacher_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profiles = tmp_path / "profiles"
    profile_variant(profiles, "two_tasks_fast_fail", tasks_per_node=2, collective_timeout_s=60)
    monkeypatch.setenv("SOFTDIMO_SLURM_PROFILES", str(profiles))
    # seed 45: a student of its own; a checkpoint every 50 steps to resume from
    grid_path = write_grid(tmp_path / "grid.yaml", "slurm_kill", [
        digits_block("soft", LONG_STEPS, seed=[45], **{"distill.checkpoint_every": 50})])
    [spec] = load_grid(grid_path).specs
    results = tmp_path / "slurm"
    command = ("--grid", str(grid_path), "--results", str(results), "--executor", "slurm",
               "--slurm-profile", "two_tasks_fast_fail")
    failed, rerun = kill_rank_1_then_rerun(command, results, "slurm_kill", spec.run_id)
    first, second = sbatch_scripts(results, "slurm_kill")
    assert " --kill-on-bad-exit=1 " in first.read_text() and "export SOFTDIMO_COLLECTIVE_TIMEOUT_S=60\n" in first.read_text()
    # The failure record (rank 0's, or the launcher's when srun ended rank 0 first) counts what
    # SLURM accounting charged the failed job (no GPUs on this cluster).
    assert failed["cost"]["sacct"]["elapsed_s"] >= 1 and failed["cost"]["sacct"]["gpus"] == 0
    assert failed["cost"]["accelerator_hours"] == 0.0
    assert rerun["provenance"]["world_size"] == 2 and rerun["provenance"]["collective_timeout_s"] == 60

    shutil.rmtree(teacher_cache / "students" / rerun["info"]["student"]["cache_key"])
    local = tmp_path / "local"
    rc, out, err = main("--grid", str(grid_path), "--results", str(local), "--executor", "local",
                        "--procs-per-cell", "2")
    assert rc == 0, out + err
    assert_same_result(rerun, records(local, "slurm_kill")[spec.run_id], results, local, "slurm_kill")

"""Shared work scheduled on a real one-node SLURM cluster (harness.grid.dependencies): the mini
`soft_vs_hard` grid goes out with its refined cells depending (`--dependency=afterok:`) on their
Di[M]O cell, which trains the teacher and the shared Di[M]O prefix first; no cell waits on a cache
lock. A cell whose leader failed is recorded as failed and its job cancelled, never left pending.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import yaml

from harness import launch, store
from harness.grid import load_grid
from softdimo.teachers.cache import LOCK_WAIT
from tests.harness.test_slurm_launch import TEACHER, main, records, run_log
from tests.slurm_cluster import LocalCluster, poll

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SHAPES_TEACHER = {"teacher.d_model": [16], "teacher.layers": [1], "teacher.heads": [2], "teacher.train_steps": [30],
                  "teacher.batch_size": [32], "teacher.warmup_steps": [5]}
BUDGET = {"distill.steps": [20], "distill.refine_start": [10], "distill.batch_size": [8], "eval.samples": [100]}


# ablations/soft_vs_hard.yaml with tiny teachers and budgets: the same cells, teachers and sharing.
def tiny_soft_vs_hard(path: Path) -> Path:
    doc = yaml.safe_load((ROOT / "ablations" / "soft_vs_hard.yaml").read_text())
    for block in doc["matrix"]:
        block.update({**(TEACHER if block["teacher"] == ["digits"] else SHAPES_TEACHER), **BUDGET})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# {job id: (start, end)} from sacct for the given array ids, once every job has ended.
def sacct_times(env: LocalCluster, arrays: set[str]) -> dict[str, tuple[dt.datetime, dt.datetime]]:
    out = env.client("sacct", "-X", "-n", "-P", "-o", "JobID,Start,End", "-j", ",".join(sorted(arrays)))
    rows = [line.split("|") for line in out.splitlines() if line]
    return {jid: (dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end))
            for jid, start, end in rows if start != "Unknown" and end != "Unknown"}


# Whether a job is still in the queue (pending or running); a cancelled one that never became
# eligible is in neither the queue nor accounting.
def queued(env: LocalCluster, job_id: str) -> bool:
    return job_id in env.client("squeue", "-h", "-r", "-o", "%i").split()


def test_soft_vs_hard_refined_cells_depend_on_their_dimo_cell_and_nobody_waits_on_a_lock(
        slurm_cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = slurm_cluster
    monkeypatch.setenv("SOFTDIMO_CACHE", str(tmp_path / "cache"))   # fresh: the leaders train both teachers
    grid_path = tiny_soft_vs_hard(tmp_path / "soft_vs_hard.yaml")
    specs = load_grid(grid_path).specs
    results = tmp_path / "results"
    common = ("--grid", str(grid_path), "--results", str(results))
    rc, out, _ = main(*common, "--executor", "slurm", "--slurm-profile", "localhost", "--no-wait")
    assert rc == 0 and "submitted 18 cells in 18 job(s)" in out and "(16 start after the cells they need)" in out

    # The scheduler holds every refined cell until its Di[M]O cell's job has ended ok.
    pending = {}
    for line in env.client("squeue", "-h", "-r", "-o", "%i|%E").splitlines():
        job, _, dependency = line.partition("|")
        pending[job] = dependency
    markers = {s.run_id: launch.read_marker(results, "soft_vs_hard", s.run_id) for s in specs}
    job_of = {rid: m["job_id"] for rid, m in markers.items()}
    hard = {(s.teacher, s.seed): s for s in specs if s.relaxation == "hard"}
    for spec in specs:
        after = [a["job_id"] for a in markers[spec.run_id]["after"]]
        leader = hard[(spec.teacher, spec.seed)] if spec.relaxation != "hard" else hard[(spec.teacher, 0)]
        if spec.relaxation == "hard" and spec.seed == 0:
            assert after == []
            continue
        assert after == [job_of[leader.run_id]], spec.description()
        if job_of[spec.run_id] in pending:                   # still pending (not yet started)
            assert f"afterok:{job_of[leader.run_id]}" in pending[job_of[spec.run_id]]
    assert sum(f"afterok:" in d for d in pending.values()) >= 8   # the refined cells, at least

    # --status shows what each submitted cell starts after.
    rc, out, _ = main(*common, "--status")
    gumbel = next(s for s in specs if s.teacher == "digits" and s.relaxation == "gumbel" and s.seed == 1)
    leader = hard[("digits", 1)]
    assert re.search(rf"(?m)^{gumbel.run_id}  running .*\n    after {job_of[leader.run_id]} \(run {leader.run_id}: ", out)

    poll("every record", lambda: len(store.scan(results, ["soft_vs_hard"])[0]) == 18, 900)
    found = records(results, "soft_vs_hard")
    assert {r["status"] for r in found.values()} == {"ok"}, {r["description"]: r["error"] for r in found.values()}
    for spec in specs:
        assert LOCK_WAIT not in run_log(results, "soft_vs_hard", spec.run_id), spec.description()

    # Accounting agrees: no dependent started before the job it depends on ended.
    arrays = {j.split("_")[0] for j in job_of.values()}

    def every_job_timed() -> dict[str, tuple[dt.datetime, dt.datetime]] | None:
        times = sacct_times(env, arrays)
        return times if set(job_of.values()) <= set(times) else None

    times = poll("every job's start and end in accounting (slurmdbd records them a moment later)",
                 every_job_timed, 60)
    for spec in specs:
        for need in markers[spec.run_id]["after"]:
            assert times[job_of[spec.run_id]][0] >= times[need["job_id"]][1], spec.description()
    # ... and each shared piece of work was built once, by its leader.
    for spec in specs:
        info = found[spec.run_id]["info"]
        assert info["teacher"]["cache_hit"] == (spec.seed != 0 or spec.relaxation != "hard")
        assert info["student"]["prefix"]["cache_hit"] == (spec.relaxation != "hard")


SHARED_GRID = """
name: shared
plugins: [toy_lab]
matrix:
  - {teacher: [toy], method: [toy_shared], seed: [0, 1, 2]}
params:
  eval.samples: 8
"""


def test_a_dependent_of_a_failed_cell_is_recorded_failed_and_cancelled_not_left_pending(
        slurm_cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = slurm_cluster
    monkeypatch.setenv("TOY_LAB_FAIL", "1")                       # the shared build fails (jobs inherit it)
    grid_path = tmp_path / "grid.yaml"
    grid_path.write_text(SHARED_GRID)
    leader, *dependents = load_grid(grid_path).specs
    results = tmp_path / "results"
    common = ("--grid", str(grid_path), "--results", str(results))
    slurm = (*common, "--executor", "slurm", "--slurm-profile", "localhost")

    # Submitted and left: the leader fails, its dependents pend forever (DependencyNeverSatisfied).
    rc, out, _ = main(*slurm, "--no-wait")
    assert rc == 0 and "(2 start after the cells they need)" in out
    jobs = {s.run_id: launch.read_marker(results, "shared", s.run_id)["job_id"] for s in (leader, *dependents)}
    poll("the leader's failed record", lambda: store.statuses(results, "shared", [leader.run_id])[leader.run_id]
         == "failed", 120)
    poll("sacct FAILED", lambda: env.sacct_states(jobs[leader.run_id]).get(jobs[leader.run_id]) == "FAILED", 60)
    # --status: SLURM's own word (squeue: sacct does not list a job held by a dependency) and ours.
    for spec in dependents:
        poll("--status of a cell that never starts", lambda: re.search(
            rf"(?m)^{spec.run_id}  running   {jobs[spec.run_id]} PENDING \(DependencyNeverSatisfied\) .*\n"
            rf"    after {jobs[leader.run_id]} \(run {leader.run_id}: failed\); {leader.run_id} failed, so this "
            rf"cell never starts", main(*common, "--status")[1]), 60)
    # The next launch records them failed and cancels their jobs.
    rc, out, _ = main(*slurm)
    assert rc == 1 and out.startswith("recorded 2 cell(s) of earlier launches as failed")
    for spec in dependents:
        record = store.read_record(store.record_path(results, "shared", spec.run_id))
        assert record["error"]["type"] == "DependencyFailed"
        assert f"it starts after run {leader.run_id}, which builds toy-shared/size-8, which ended failed" \
               in record["error"]["message"]
        poll("the job to leave the queue (cancelled)", lambda: not queued(env, jobs[spec.run_id]), 60)
        assert run_log(results, "shared", spec.run_id) == ""          # never started

    # Retried while it still fails, the launcher that waits does the same as it goes.
    rc, out, _ = main(*slurm, "--rerun-failed")
    assert rc == 1 and "summary: 0 ok, 3 failed" in out
    for spec in dependents:
        record = store.read_record(store.record_path(results, "shared", spec.run_id))
        assert record["error"]["type"] == "DependencyFailed" and record["provenance"]["job_id"] != jobs[spec.run_id]
        poll("the job to leave the queue (cancelled)", lambda: not queued(env, record["provenance"]["job_id"]), 60)
        assert run_log(results, "shared", spec.run_id) == ""

    # Fixed: all three run, the dependents after their leader.
    monkeypatch.delenv("TOY_LAB_FAIL")
    rc, out, _ = main(*slurm, "--rerun-failed")
    assert rc == 0 and "summary: 3 ok" in out
    found = records(results, "shared")
    for spec in dependents:
        assert found[spec.run_id]["info"]["shared"] == {"built_by": leader.run_id, "cache_hit": True}
        assert found[spec.run_id]["provenance"]["started"] >= found[leader.run_id]["provenance"]["finished"]

"""`python -m harness.run --executor slurm` against a real one-node SLURM cluster (the session
fixture `slurm_cluster`): a mini digits grid ends with records identical in metrics to a `debug`
run, in one job array; a failing cell surfaces its error and logs while the others complete; a
cell interrupted by USR2 mid-distillation is requeued, resumes from its checkpoint and ends
identical to the uninterrupted run; rerunning submits nothing; arrays are chunked to the
profile's limit; `--status` and `--cancel`; the requeue cap ends a cell with a failed record.

The digits teacher is the session's tiny one (`tests/conftest.py`), trained once in the shared
cache before any job starts, so no job trains it.
"""
from __future__ import annotations

import io
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import launch, run, store
from harness.grid import load_grid
from harness.grid.profiles import load_profile
from harness.store.provenance import code_version
from tests.conftest import TINY_TEACHER
from tests.slurm_cluster import LocalCluster, poll

pytestmark = pytest.mark.slurm

LONG_STEPS = 300                         # the interrupted cell: ~10 s of distillation on one core
TEACHER = {f"teacher.{k}": [getattr(TINY_TEACHER, k)]
           for k in ("levels", "d_model", "layers", "heads", "train_steps", "batch_size",
                     "warmup_steps")}


def digits_block(relaxation: str, steps: int, seed: list[int] | None = None,
                 **params: Any) -> dict[str, list[Any]]:
    return {"teacher": ["digits"], "method": ["dimo"], "relaxation": [relaxation], "seed": seed or [0],
            "distill.steps": [steps], "distill.batch_size": [8], **TEACHER,
            **{k: [v] for k, v in params.items()}}


def write_grid(path: Path, name: str, blocks: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"name": name, "plugins": ["toy_lab"], "matrix": blocks,
                                    "params": {"eval.samples": 100}}, sort_keys=False))
    return path


def main(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = run.main(list(args), out, err)
    return rc, out.getvalue(), err.getvalue()


# Launch a one-cell grid on SLURM in a thread, send USR2 to its job once its distillation logged
# step 25; return what the launch returned (rc, out, err) when it ends within `join_s`, and the job.
def launch_and_interrupt(env: LocalCluster, grid_path: Path, run_id: str, results: Path, profile: str,
                         start_s: float = 180, join_s: float = 120) -> tuple[dict[str, Any], str]:
    grid = load_grid(grid_path).name
    outcome: dict[str, Any] = {}
    launcher = threading.Thread(target=lambda: outcome.update(zip(("rc", "out", "err"), main(
        "--grid", str(grid_path), "--results", str(results), "--executor", "slurm",
        "--slurm-profile", profile))))
    launcher.start()
    poll("the distillation", lambda: f"distill step 25/{LONG_STEPS}" in run_log(results, grid, run_id), start_s)
    job_id = launch.read_marker(results, grid, run_id)["job_id"]
    env.client("scancel", "--signal=USR2", job_id)
    launcher.join(timeout=join_s)
    assert not launcher.is_alive(), "the launch did not finish"
    return outcome, job_id


def sbatch_scripts(results: Path, grid: str) -> list[Path]:
    return sorted((results / grid / launch.SUBMITIT_DIR).rglob("*_submission.sh"))


def records(results: Path, grid: str) -> dict[str, dict[str, Any]]:
    found, problems = store.scan(results, [grid])
    assert problems == []
    return {r["run_id"]: r for r in found}


def run_log(results: Path, grid: str, run_id: str) -> str:
    path = store.run_dir(results, grid, run_id) / "log.txt"
    return path.read_text() if path.exists() else ""


# A profile file in its own directory (SOFTDIMO_SLURM_PROFILES): localhost with some keys changed.
def profile_variant(directory: Path, name: str, **changes: Any) -> None:
    text = load_profile("localhost").path.read_text()
    for key, value in changes.items():
        text, n = re.subn(rf"(?m)^{key}:.*$", f"{key}: {value}", text)
        assert n == 1, key
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.yaml").write_text(text)


@pytest.fixture
def env(slurm_cluster: LocalCluster, tiny_teacher, teacher_cache: Path,
        monkeypatch: pytest.MonkeyPatch) -> LocalCluster:
    monkeypatch.setenv("SOFTDIMO_CACHE", str(teacher_cache))  # jobs inherit it through sbatch
    monkeypatch.setenv("TOY_LAB_FAIL", "1")                     # the toy_flaky cell fails
    return slurm_cluster


def cached_teachers(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "teachers").iterdir())

#----------------------------------------------------------------------------


def test_mini_grid_through_slurm_matches_debug_and_resumes_after_usr2(
        env: LocalCluster, teacher_cache: Path, tmp_path: Path) -> None:
    grid_path = write_grid(tmp_path / "grid.yaml", "slurm_mini", [
        digits_block("hard", 6),
        # no periodic save; seed 2: a student no other test caches a Di[M]O prefix of
        digits_block("soft", LONG_STEPS, seed=[2], **{"distill.checkpoint_every": 0}),
        {"teacher": ["toy"], "method": ["toy_flaky"], "seed": [0]}])
    hard, soft, flaky = (s.run_id for s in load_grid(grid_path).specs)
    teachers = cached_teachers(teacher_cache)
    results = tmp_path / "slurm"
    common = ("--grid", str(grid_path), "--slurm-profile", "localhost")
    slurm_args = (*common, "--executor", "slurm", "--results", str(results))

    # Launch and wait in a thread; meanwhile send USR2 (what SLURM sends before a time limit)
    # to the long cell once its distillation is under way.
    outcome: dict[str, Any] = {}
    launcher = threading.Thread(target=lambda: outcome.update(zip(("rc", "out", "err"),
                                                                  main(*slurm_args))))
    launcher.start()
    poll("the long cell's distillation", lambda: f"distill step 25/{LONG_STEPS}"
         in run_log(results, "slurm_mini", soft), 180)
    marker = launch.read_marker(results, "slurm_mini", soft)
    env.client("scancel", "--signal=USR2", marker["job_id"])
    launcher.join(timeout=300)
    assert not launcher.is_alive(), "the launch did not finish"

    # The failing cell surfaces its error and both logs; the others complete.
    rc, out = outcome["rc"], outcome["out"]
    assert rc == 1, outcome
    assert "summary: 2 ok, 1 failed, 0 diverged, 0 skipped (done before)" in out
    assert "RuntimeError: toy_flaky failed because TOY_LAB_FAIL is set" in out
    assert f"log: {store.run_dir(results, 'slurm_mini', flaky) / 'log.txt'}" in out
    job_log = re.search(r"job log: (\S+)", out).group(1)
    assert "toy_flaky failed because TOY_LAB_FAIL is set" in Path(job_log).read_text()

    # One sbatch call: one array for the profile's group, with the profile's explicit limits.
    [script] = sbatch_scripts(results, "slurm_mini")
    text = script.read_text()
    for line in ("--array=0-2%2", "--time=10", "--signal=USR2@30", "--partition=debug",
                 "--requeue"):
        assert f"#SBATCH {line}\n" in text
    assert "export SOFTDIMO_THREADS=1\n" in text

    slurm_records = records(results, "slurm_mini")
    array = marker["array_id"]
    for i, rid in enumerate((hard, soft, flaky)):
        prov = slurm_records[rid]["provenance"]
        assert prov["executor"] == "slurm" and prov["job_id"] == f"{array}_{i}"
        assert prov["slurm"]["profile"] == "localhost" and prov["slurm"]["max_num_timeout"] == 3
        assert prov["code_check"] == "same"
        assert prov["submitted_code"]["git_commit"] == code_version().git_commit
        cost = slurm_records[rid]["cost"]
        assert cost["wall_s"] > 0
        # Accounting's view is a hint: slurmdbd records a job a moment after it starts, so a cell
        # of a few seconds may end before its row exists (then the record has no "sacct").
        if "sacct" in cost or rid == soft:
            assert cost["sacct"]["elapsed_s"] >= 1 and cost["sacct"]["gpus"] == 0
    assert slurm_records[hard]["provenance"]["slurm"]["restart_count"] == 0

    # The interrupted cell saved at a step boundary, was requeued and resumed from there.
    log = run_log(results, "slurm_mini", soft)
    saved = int(re.search(r"checkpoint saved at distill step (\d+); requeueing", log).group(1))
    assert 25 <= saved < LONG_STEPS
    assert f"resumed distillation at step {saved} from" in log
    resumed = slurm_records[soft]
    assert resumed["provenance"]["slurm"]["restart_count"] == 1
    runs = resumed["cost"]["runs"]
    assert [(r["restart"], r["end"]) for r in runs] == [(0, "requeued"), (1, "ok")]
    assert resumed["cost"]["wall_s"] == pytest.approx(sum(r["wall_s"] for r in runs), abs=0.01)
    assert resumed["cost"]["sacct"]["runs"] == 2
    assert cached_teachers(teacher_cache) == teachers and "training digits teacher" not in log

    # The same grid in local worker processes, training its students again (not from the student
    # cache): identical metrics, info (but the student's timing) and samples. Local workers run
    # pinned as SLURM tasks do (harness.methods.numerics); the in-process debug executor does not, so on a
    # machine whose default kernels are not the pinned ones its numbers may differ in float32 bits.
    shutil.rmtree(teacher_cache / "students")
    debug = tmp_path / "local"
    rc, out, _ = main(*common, "--executor", "local", "--results", str(debug))
    assert rc == 1 and "summary: 2 ok, 1 failed" in out
    debug_records = records(debug, "slurm_mini")
    for rid in (hard, soft):
        assert slurm_records[rid]["status"] == debug_records[rid]["status"] == "ok"
        assert slurm_records[rid]["metrics"] == debug_records[rid]["metrics"]
        slurm_info, debug_info = slurm_records[rid]["info"], debug_records[rid]["info"]
        assert {**slurm_info, "student": None} == {**debug_info, "student": None}
        for student in (slurm_info["student"], debug_info["student"]):
            assert student["cache_key"] == slurm_info["student"]["cache_key"] and not student["cache_hit"]
        png = Path(store.run_dir(results, "slurm_mini", rid) / "samples.png").read_bytes()
        assert png == (store.run_dir(debug, "slurm_mini", rid) / "samples.png").read_bytes()
    assert "distill.pt" not in {p.name for p in (store.run_dir(debug, "slurm_mini", soft)).rglob("*")}

    # Rerunning submits nothing and changes no record.
    before = {rid: store.record_path(results, "slurm_mini", rid).read_bytes() for rid in slurm_records}
    rc, out, _ = main(*slurm_args)
    assert rc == 1 and out.startswith("nothing to do: all 3 cells of grid 'slurm_mini' have records")
    assert len(sbatch_scripts(results, "slurm_mini")) == 1
    assert {rid: store.record_path(results, "slurm_mini", rid).read_bytes() for rid in before} == before

    # --status: per cell its state, job and, for the failed one, the error and the logs.
    rc, out, _ = main(*common, "--results", str(results), "--status")
    assert rc == 1
    assert re.search(rf"(?m)^{hard}  ok        {array}_0 ", out)
    assert re.search(rf"(?m)^{flaky}  failed    {array}_2 ", out)
    assert "    RuntimeError: toy_flaky failed because TOY_LAB_FAIL is set" in out
    assert f"    job log: {job_log}" in out and out.splitlines()[-1] == "2 ok, 1 failed"


def test_arrays_chunked_to_the_profile_limit_status_and_cancel(
        env: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profiles = tmp_path / "profiles"
    profile_variant(profiles, "arrays_of_2", max_array_size=2)
    monkeypatch.setenv("SOFTDIMO_SLURM_PROFILES", str(profiles))
    # three cells that share no work (other seeds: other students), so none waits for another
    grid_path = write_grid(tmp_path / "grid.yaml", "slurm_cancel",
                           [digits_block("hard", 100_000, seed=[s]) for s in (5, 6, 7)])
    specs = load_grid(grid_path).specs
    results = tmp_path / "results"
    common = ("--grid", str(grid_path), "--results", str(results))
    rc, out, _ = main(*common, "--executor", "slurm", "--slurm-profile", "arrays_of_2", "--no-wait")
    assert rc == 0 and "submitted 3 cells in 3 job(s)" in out
    scripts = sbatch_scripts(results, "slurm_cancel")
    assert len(scripts) == 2                                     # an array of 2, then 1 job
    assert "#SBATCH --array=0-1%2\n" in scripts[0].read_text()
    job_ids = [launch.read_marker(results, "slurm_cancel", s.run_id)["job_id"] for s in specs]

    poll("a cell to start", lambda: run_log(results, "slurm_cancel", specs[0].run_id), 120)
    rc, out, _ = main(*common, "--status")
    assert rc == 0 and out.splitlines()[-1] == "3 running"
    # The scheduler state is sacct's, which slurmdbd records a moment after the job starts.
    poll("sacct RUNNING in --status", lambda: re.search(
        rf"(?m)^{specs[0].run_id}  running   {job_ids[0]} RUNNING ", main(*common, "--status")[1]), 60)
    rc, again, _ = main(*common, "--executor", "slurm", "--slurm-profile", "arrays_of_2")
    assert rc == 0 and "3 submitted earlier still running" in again   # nothing submitted twice
    assert len(sbatch_scripts(results, "slurm_cancel")) == 2

    rc, out, _ = main(*common, "--cancel")
    assert rc == 0 and out.startswith("cancelled 3 job(s) of grid 'slurm_cancel': ")
    assert sorted(out.split(": ", 1)[1].split(";")[0].split(", ")) == sorted(job_ids)
    for jid in job_ids:
        poll(f"sacct CANCELLED for {jid}",
             lambda: env.sacct_states(jid).get(jid, "").startswith("CANCELLED"), 60)
    rc, out, _ = main(*common, "--status")
    assert rc == 0 and out.splitlines()[-1] == "3 pending"
    assert not list(results.rglob("record.json"))
    rc, out, _ = main(*common, "--cancel")
    assert rc == 0 and out.startswith("nothing to cancel")


def test_requeue_cap_ends_the_cell_with_a_failed_record_keeping_its_checkpoint(
        env: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profiles = tmp_path / "profiles"
    profile_variant(profiles, "no_requeue", max_num_timeout=0)
    monkeypatch.setenv("SOFTDIMO_SLURM_PROFILES", str(profiles))
    grid_path = write_grid(tmp_path / "grid.yaml", "slurm_cap", [
        # seed 1: a student of its own, so that no cached Di[M]O prefix (the other tests', whose
        # cancelled jobs may still be writing one) starts it past step 25
        digits_block("soft", LONG_STEPS, seed=[1], **{"distill.checkpoint_every": 0})])
    [spec] = load_grid(grid_path).specs
    results = tmp_path / "results"
    outcome, job_id = launch_and_interrupt(env, grid_path, spec.run_id, results, "no_requeue")
    assert outcome["rc"] == 1, outcome
    assert "summary: 0 ok, 1 failed" in outcome["out"]
    record = store.read_record(store.record_path(results, "slurm_cap", spec.run_id))
    assert record["error"]["type"] == "UncompletedJobError"
    assert ("timed-out too many times. Requeue cap reached after 0 requeue(s) (max_num_timeout=0, "
            "profile 'no_requeue')") in record["error"]["message"]
    assert record["provenance"]["slurm"]["max_num_timeout"] == 0
    assert (store.run_dir(results, "slurm_cap", spec.run_id) / "checkpoints" / "distill.pt").is_file()
    poll("sacct FAILED", lambda: env.sacct_states(job_id).get(job_id) == "FAILED", 30)

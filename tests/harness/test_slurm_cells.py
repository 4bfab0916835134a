"""The SLURM side of a cell without a cluster: the code-version check of `SlurmCell`, deferring
the preemption signal to a step boundary (`harness.methods.preemption`), the assets check before launch,
and parsing of sacct rows."""
from __future__ import annotations

import io
import json
import os
import signal
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from harness import run, store
from harness.cell import slurm
from harness.cell import CellFailedError, JobTerms, SlurmCell
from harness.contracts import registry
from harness.contracts.entries import MetricEntry
from harness.grid.spec import RunSpec, resolve_cell
from harness.methods import preemption
from harness.store import assets
from harness.store.provenance import CodeVersion, code_version

TOY_GRID = """
name: assets_toy
plugins: [toy_lab]
matrix:
  teacher: [toy]
  method: [toy_sampler]
  seed: [0]
params:
  eval.samples: 8
  eval.metrics: [toy_mean, toy_needs_weights]
"""


def main(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = run.main(list(args), out, err)
    return rc, out.getvalue(), err.getvalue()


def toy_spec() -> dict:
    return resolve_cell({"teacher": "toy", "method": "toy_sampler", "seed": 0,
                         "eval.samples": 8}, "mini").to_json()


#----------------------------------------------------------------------------


def test_a_job_refuses_other_code_than_submitted_unless_allowed(tmp_path: Path) -> None:
    here = code_version()
    other = CodeVersion("0" * 40, False, None)
    spec = toy_spec()
    cell = SlurmCell(spec, "g", str(tmp_path), JobTerms(asdict(other), profile="localhost",
                                                          max_num_timeout=3))
    with pytest.raises(CellFailedError, match="failed; its record: "):   # the job ends FAILED (afterok)
        cell()
    run_id = RunSpec.from_json(spec).run_id
    record = store.read_record(store.record_path(tmp_path, "g", run_id))
    error = record["error"]
    assert error["type"] == "CodeChangedError"
    assert (f"submitted commit 000000000000, this job runs {here.describe()}" in error["message"]
            and "--allow-code-change" in error["message"])
    assert record["metrics"] == {} and record["provenance"]["code_check"] == "refused"
    assert record["provenance"]["submitted_code"] == asdict(other)
    log = Path(error["log"]).read_text()
    assert "device " not in log                                  # nothing ran

    allowed = SlurmCell(spec, "g", str(tmp_path), replace(cell.terms, allow_code_change=True))
    assert allowed() == "ok"                                     # replaces the failed record
    record = store.read_record(store.record_path(tmp_path, "g", run_id))
    assert record["provenance"]["code_check"] == "changed, allowed" and record["metrics"]
    assert "running anyway (--allow-code-change)" in Path(error["log"]).read_text()

    same = SlurmCell(spec, "g2", str(tmp_path), JobTerms(asdict(here)))
    assert same() == "ok"
    record = store.read_record(store.record_path(tmp_path, "g2", run_id))
    assert record["provenance"]["code_check"] == "same"
    assert record["cost"]["runs"] == [{"restart": 0, "wall_s": record["cost"]["wall_s"], "end": "ok",
                                       "accelerator_hours": 0.0}]


def test_untracked_files_are_not_a_code_change() -> None:
    here = code_version()
    assert here.same_code(replace(here, git_dirty=not here.git_dirty))
    assert not here.same_code(replace(here, diff_sha256="f" * 64))
    assert not here.same_code(replace(here, git_commit="1" * 40))

#----------------------------------------------------------------------------


@pytest.fixture
def submitit_like_handler():
    # Stands in for submitit's USR2 handler (checkpoint, requeue, exit): records its calls.
    calls: list[tuple[int, float]] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append((signum, time.monotonic())))
    yield calls
    signal.signal(signal.SIGUSR2, previous)


def test_the_signal_waits_for_the_next_step_boundary(submitit_like_handler) -> None:
    order: list[str] = []
    submitit_handler = signal.getsignal(signal.SIGUSR2)
    with preemption.safe_points() as safe_point:
        safe_point(lambda: order.append("save"))                 # no signal yet: nothing happens
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.05)                                         # "mid-step": the handler waits
        assert submitit_like_handler == [] and order == []
        safe_point(lambda: order.append(f"save, handler called {len(submitit_like_handler)}x"))
    assert order == ["save, handler called 0x"]                  # saved first, then handed over
    assert [s for s, _ in submitit_like_handler] == [signal.SIGUSR2]
    assert signal.getsignal(signal.SIGUSR2) is submitit_handler  # the original handler is back
    os.kill(os.getpid(), signal.SIGUSR2)
    time.sleep(0.05)
    assert len(submitit_like_handler) == 2                       # not deferred outside the block


def test_a_duplicate_signal_during_the_hand_over_is_ignored() -> None:
    calls: list[int] = []

    def submitit_like(signum: int, frame: object) -> None:
        calls.append(signum)
        os.kill(os.getpid(), signal.SIGUSR2)                     # e.g. the grace timer, just then
        time.sleep(0.05)

    previous = signal.signal(signal.SIGUSR2, submitit_like)
    try:
        with preemption.safe_points() as safe_point:
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.05)
            safe_point(lambda: None)
        time.sleep(0.05)
        assert calls == [signal.SIGUSR2]                         # requeued once, not twice
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_without_a_step_boundary_the_grace_period_hands_over(submitit_like_handler) -> None:
    preemption.set_grace(1.0)
    try:
        with preemption.safe_points():
            sent = time.monotonic()
            os.kill(os.getpid(), signal.SIGUSR2)
            deadline = sent + 10
            while not submitit_like_handler and time.monotonic() < deadline:
                time.sleep(0.05)                                 # a step that never ends
        assert len(submitit_like_handler) == 1
        assert 0.9 <= submitit_like_handler[0][1] - sent < 5
    finally:
        preemption.set_grace(preemption.DEFAULT_GRACE_S)


def test_a_signal_after_the_last_step_is_served_at_the_end(submitit_like_handler) -> None:
    with preemption.safe_points():
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.05)
        assert submitit_like_handler == []
    assert len(submitit_like_handler) == 1


def test_processes_stop_at_the_step_another_process_was_signalled(submitit_like_handler) -> None:
    # A process that got no signal stops where the group agrees (another was signalled), saves,
    # hands over and then runs `after_hand_over` (a follower waits for rank 0's requeue there).
    asked: list[bool] = []
    order: list[str] = []

    def agree(signalled: bool) -> bool:
        asked.append(signalled)
        return len(asked) == 2                                   # the group says stop at step 2

    with preemption.safe_points(agree=agree, after_hand_over=lambda: order.append("after")) as safe_point:
        safe_point(lambda: order.append("save 1"))
        safe_point(lambda: order.append("save 2"))
    assert asked == [False, False] and order == ["save 2", "after"]
    assert [s for s, _ in submitit_like_handler] == [signal.SIGUSR2]


def test_outside_a_submitit_job_nothing_is_deferred() -> None:
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
    with preemption.safe_points() as safe_point:
        safe_point(lambda: pytest.fail("no signal, no save"))
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL

#----------------------------------------------------------------------------


def test_paper_grid_stops_before_submitting_naming_each_missing_asset(tmp_path, isolated_assets) -> None:
    results = tmp_path / "results"
    grid = Path(__file__).resolve().parents[2] / "ablations" / "soft_vs_hard.yaml"
    common = ("--grid", str(grid), "--scale", "paper", "--results", str(results))
    rc, out, err = main(*common, "--dry-run")                   # the plan is still shown
    assert rc == 0 and "36 pending" in out.splitlines()                    # 4 teachers x 3 cells x 3 seeds
    assert "accelerator-hours for 36 cell(s)" in out                      # then the cost plan
    rc, out, err = main(*common, "--executor", "slurm")
    assert rc == 2
    for name in ("maskbit_generator_14bit", "maskbit_tokenizer_14bit", "maskgen_vq_l",  # teachers
                 "maskgit_imagenet256", "maskgit_vqgan_f16_1024",
                 "meissonic_transformer",
                 "inception-2015-12-05-tfidelity", "hps-v2.1"):                        # metrics
        line = next(ln for ln in err.splitlines() if f"asset {name!r} is missing" in ln)
        assert "Obtain it from http" in line and str(tmp_path / "assets") in line
    assert "nothing was submitted" in err
    assert not results.exists()                                  # no marker, no job folder


def test_metric_assets_of_pending_cells_only(write_grid, tmp_path, monkeypatch, isolated_assets) -> None:
    monkeypatch.setitem(assets.manifest._entries, "toy-weights", assets.Asset(
        "toy-weights", "toy/weights.bin", source="the toy lab's release page"))
    toy_mean = registry.metrics.get("toy_mean")
    monkeypatch.setitem(registry.metrics._entries, "toy_needs_weights", MetricEntry(
        "toy_needs_weights", lambda inp, ctx: {"toy_needs_weights": toy_mean.compute(inp, ctx)["toy_mean"]},
        assets=("toy-weights",)))
    grid = write_grid(TOY_GRID)
    common = ("--grid", str(grid), "--results", str(tmp_path / "r"), "--executor", "debug")
    rc, _, err = main(*common)
    assert rc == 2 and "asset 'toy-weights' is missing" in err
    assert "Obtain it from the toy lab's release page" in err
    assert not (tmp_path / "r").exists()
    weights = tmp_path / "assets" / "toy" / "weights.bin"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"w")
    assert main(*common)[0] == 0
    weights.unlink()                                             # no pending cell needs it now
    rc, out, _ = main(*common)
    assert rc == 0 and out.startswith("nothing to do")

#----------------------------------------------------------------------------


def test_sacct_rows_and_states() -> None:
    assert slurm.expand_row_id("12_[3-5,7%2]") == ["12_3", "12_4", "12_5", "12_7"]
    assert slurm.expand_row_id("12_4") == ["12_4"] and slurm.expand_row_id("13") == ["13"]
    assert slurm.is_final("CANCELLED by 0") and slurm.is_final("CANCELLED+")
    assert slurm.is_final("COMPLETED") and slurm.is_final("OUT_OF_MEMORY")
    assert not slurm.is_final("RUNNING") and not slurm.is_final("REQUEUED")
    assert not slurm.is_final("PENDING") and not slurm.is_final("")
    assert slurm._gpus("billing=8,cpu=8,gres/gpu=2,mem=64G,node=1") == 2
    assert slurm._gpus("billing=1,cpu=1,mem=1G,node=1") == 0


def test_current_job_from_the_environment(monkeypatch) -> None:
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(var, raising=False)
    assert slurm.current_job() is None
    monkeypatch.setenv("SLURM_JOB_ID", "57")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "55")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    job = slurm.current_job()
    assert job.job_id == "55_2" and job.restart_count == 0        # unset on the first run
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")
    assert slurm.current_job().restart_count == 3
    assert json.dumps(job.to_json())

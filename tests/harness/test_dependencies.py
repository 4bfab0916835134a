"""Shared work scheduled instead of waited for (harness.grid.dependencies), `--only`, and continuations
(`distill.init_from`) as the grid reads and the launcher plans them; the debug and local executors
honouring the plan. The SLURM side: tests/harness/test_slurm_dependencies.py."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import yaml

from harness import store
from harness.contracts.run_spec import ADDED_PARAMS, RunSpec
from harness.grid import dependencies
from harness.grid import GridError, load_grid
from harness.grid.spec import resolve_cell
from softdimo.teachers import cache
from tests.conftest import TINY_TEACHER as TINY
from softdimo.teachers.cache_digest import write_digest
from softdimo.teachers.digits import DigitsConfig, cache_entry as digits_entry
from tests.harness.test_run import main

ROOT = Path(__file__).resolve().parents[2]
SOFT_VS_HARD = ROOT / "ablations" / "soft_vs_hard.yaml"
CONTINUATION = ROOT / "ablations" / "softdimo_imagenet256.yaml"
SHARED = """
name: shared
plugins: [toy_lab]
matrix:
  - {teacher: [toy], method: [toy_shared], seed: [0, 1, 2]}
  - {teacher: [toy], method: [toy_shared], seed: [0], teacher.size: [6]}
params:
  eval.samples: 8
"""


def logs(results: Path) -> str:
    return "".join(p.read_text() for p in sorted(results.rglob("log.txt")))


# The plan lines of a paper-scale dry run (the cost plan follows them).
def _plan(out: str) -> list[str]:
    return out.split("\ncost plan:", 1)[0].splitlines()

#----------------------------------------------------------------------------
# Planning.


def test_each_cell_runs_after_the_first_cell_building_its_shared_work(write_grid, tmp_path):
    specs = load_grid(write_grid(SHARED)).specs
    first, second, third, other = specs
    entry = "toy-shared/size-8"
    built: set[str] = set()
    plan = dependencies.schedule(specs, [], {}, built.__contains__, 1)
    assert [s.run_id for s in plan.order] == [s.run_id for s in specs] and not plan.blocked
    assert plan.of(first.run_id) == () and plan.of(other.run_id) == ()     # size 6: its own entry
    assert plan.of(second.run_id) == plan.of(third.run_id) == (dependencies.Need(first.run_id, (entry,)),)
    built.add(entry)                                                       # complete: nothing to wait for
    assert not dependencies.schedule(specs, [], {}, built.__contains__, 1).needs
    built.clear()                                                          # the builder runs from before
    plan = dependencies.schedule([second, third], [first], {}, built.__contains__, 1)
    assert plan.of(second.run_id) == plan.of(third.run_id) == (dependencies.Need(first.run_id, (entry,)),)


def test_soft_vs_hard_refined_cells_start_after_their_dimo_cell(tmp_path, monkeypatch):
    # The mini main grid in a fresh cache: per teacher, the seed-0 Di[M]O cell trains the teacher;
    # every refined cell starts after the Di[M]O cell of its seed, whose prefix it continues.
    monkeypatch.setenv("SOFTDIMO_CACHE", str(tmp_path / "cache"))
    grid = load_grid(SOFT_VS_HARD)
    results = tmp_path / "results"
    rc, out, _ = main("--grid", str(SOFT_VS_HARD), "--results", str(results), "--dry-run")
    assert rc == 0
    for teacher in ("digits", "shapes"):
        hard = {s.seed: s for s in grid.specs if s.teacher == teacher and s.relaxation == "hard"}
        for spec in grid.specs:
            if spec.teacher != teacher:
                continue
            block = out.split(spec.run_id, 1)[1].split("\n")[1]
            if spec.relaxation != "hard":
                assert block.startswith(f"    after {hard[spec.seed].run_id} ({teacher} dimo hard s{spec.seed}), "
                                        f"which builds ") and "prefixes/dimo-prefix-" in block
            elif spec.seed:
                assert block.startswith(f"    after {hard[0].run_id} ") and "teachers/" in block
            else:
                assert not block.startswith("    after")
    # A cached teacher, sealed, is nobody's work: the Di[M]O cells of seeds 1 and 2 then start at once.
    teacher_dir = tmp_path / "cache" / digits_entry(grid.specs[0].stage("teacher", DigitsConfig))
    teacher_dir.mkdir(parents=True)
    (teacher_dir / cache.DONE_MARKER).write_text("{}")
    rc, out, _ = main("--grid", str(SOFT_VS_HARD), "--results", str(results), "--dry-run", "--only",
                      "teacher=digits,relaxation=hard")
    digits_hard_s0 = next(s for s in grid.specs if s.teacher == "digits" and s.relaxation == "hard" and s.seed == 0)
    assert rc == 0 and f"    after {digits_hard_s0.run_id} " in out    # unsealed (an older version's): built again
    write_digest(teacher_dir)
    rc, out, _ = main("--grid", str(SOFT_VS_HARD), "--results", str(results), "--dry-run", "--only",
                      "teacher=digits,relaxation=hard")
    assert rc == 0 and "    after" not in out and out.splitlines()[-1] == "3 pending"


def test_a_waiting_process_says_so_in_its_log(tmp_path):
    # What the SLURM and local tests look for: a cell that waits on another's cache build logs it.
    started, lines = threading.Event(), []

    def slow_build(tmp: Path) -> dict:
        started.set()
        time.sleep(1.0)
        return {}

    builder = threading.Thread(target=cache.cached_dir, args=(tmp_path, "entry", slow_build))
    builder.start()
    started.wait(10)
    directory, hit = cache.cached_dir(tmp_path, "entry", lambda tmp: {}, lines.append)
    builder.join()
    assert hit and lines[0].startswith(f"waiting for cache entry {tmp_path / 'entry'}: {cache.LOCK_WAIT}")

#----------------------------------------------------------------------------
# The debug executor: a cell whose need failed is not run.


def test_a_cell_whose_need_failed_is_recorded_not_run_and_reruns_after_it(write_grid, tmp_path, monkeypatch):
    grid_path = write_grid(SHARED)
    first, second, third, other = load_grid(grid_path).specs
    results = tmp_path / "results"
    common = ("--grid", str(grid_path), "--results", str(results), "--executor", "debug")
    monkeypatch.setenv("TOY_LAB_FAIL", "1")
    rc, out, _ = main(*common)
    assert rc == 1 and "summary: 0 ok, 4 failed" in out
    records = {r["run_id"]: r for r in store.scan(results)[0]}
    assert records[first.run_id]["error"]["type"] == "RuntimeError"
    for spec in (second, third):
        error = records[spec.run_id]["error"]
        assert error["type"] == "DependencyFailed"
        assert error["message"].startswith(f"not run: it starts after run {first.run_id}, which builds "
                                           f"toy-shared/size-8, which ended failed (RuntimeError: toy_shared "
                                           f"failed because TOY_LAB_FAIL is set); `harness.run --rerun-failed`")
        assert not (store.run_dir(results, "shared", spec.run_id) / "log.txt").exists()    # never started
    assert records[other.run_id]["error"]["type"] == "RuntimeError"          # its own work: it ran

    monkeypatch.delenv("TOY_LAB_FAIL")
    rc, out, _ = main(*common, "--rerun-failed")
    assert rc == 0 and "summary: 4 ok" in out
    records = {r["run_id"]: r for r in store.scan(results)[0]}
    assert [records[s.run_id]["info"]["shared"] for s in (first, second, third)] == [
        {"built_by": first.run_id, "cache_hit": False}, *[{"built_by": first.run_id, "cache_hit": True}] * 2]
    assert cache.LOCK_WAIT not in logs(results)


def test_a_need_recorded_before_the_launch_planned_is_still_to_run(write_grid, tmp_path):
    # A failed cell run again keeps its old record until its new one replaces it: the cells after it
    # wait for the new one instead of failing on the old.
    first, second, *_ = load_grid(write_grid(SHARED)).specs
    results = tmp_path / "results"
    record = store.failure_record(first.run_id, "shared", "old", first.to_json(),
                                  {"type": "RuntimeError", "message": "old", "traceback": "", "log": ""}, {})
    path = store.write_record(store.run_dir(results, "shared", first.run_id), record)
    os.utime(path, (1000.0, 1000.0))
    needs = (dependencies.Need(first.run_id, ("toy-shared/size-8",)),)
    assert dependencies.need_statuses(results, "shared", needs, since=999.0) == {first.run_id: "failed"}
    assert dependencies.need_statuses(results, "shared", needs, since=1001.0) == {first.run_id: None}
    assert dependencies.record_if_blocked(results, "shared", second, needs, 1001.0, {}) is None
    assert not (store.run_dir(results, "shared", second.run_id) / "record.json").exists()
    assert dependencies.record_if_blocked(results, "shared", second, needs, 999.0, {}) == needs[0]
    assert store.read_record(store.record_path(results, "shared", second.run_id))["error"]["type"] == \
        "DependencyFailed"


@pytest.mark.slow                 # real local-executor workers running cells
def test_local_workers_take_a_cell_once_what_it_needs_is_recorded(write_grid, tmp_path, monkeypatch):
    # Two workers, the shared entry taking 2 s to build: without the plan the second worker would
    # take seed 1 at once and wait on seed 0's cache lock; with it, it waits for seed 0's record.
    monkeypatch.setenv("TOY_LAB_SLOW_S", "2")
    grid_path = write_grid(SHARED.split("  - {teacher: [toy], method: [toy_shared], seed: [0], teacher.size")[0]
                           + "params:\n  eval.samples: 8\n")
    first, second, third = load_grid(grid_path).specs
    results = tmp_path / "results"
    rc, out, _ = main("--grid", str(grid_path), "--results", str(results), "--executor", "local",
                      "--max-parallel", "2")
    assert rc == 0 and "summary: 3 ok" in out
    records = {r["run_id"]: r for r in store.scan(results)[0]}
    assert cache.LOCK_WAIT not in logs(results)
    for spec in (second, third):
        assert records[spec.run_id]["provenance"]["started"] >= records[first.run_id]["provenance"]["finished"]
        assert records[spec.run_id]["info"]["shared"] == {"built_by": first.run_id, "cache_hit": True}

#----------------------------------------------------------------------------
# --only.


def test_only_selects_cells_and_checks_only_their_assets(tmp_path, isolated_assets):
    common = ("--grid", str(SOFT_VS_HARD), "--scale", "paper", "--results", str(tmp_path / "results"))
    rc, out, err = main(*common, "--only", "teacher=maskbit", "--dry-run")
    assert rc == 0 and _plan(out)[-1] == "9 pending"
    assert "note: --only teacher=maskbit: 9 of the grid's 36 cells" in out
    assert all(" maskbit dimo " in line for line in out.splitlines() if " pending " in line)
    missing = [line.split("asset ")[1].split(" is missing")[0] for line in err.splitlines()
               if "the launch would stop" in line]
    assert {"'maskbit_generator_14bit'", "'maskbit_tokenizer_14bit'", "'adm-imagenet256-ref-batch'"} <= set(missing)
    assert not [m for m in missing if any(t in m for t in ("maskgit", "maskgen", "meissonic", "clip", "hps"))]
    rc, out, _ = main(*common, "--only", "teacher=maskbit,teacher=maskgit", "--only", "seed=0", "--dry-run")
    assert rc == 0 and _plan(out)[-1] == "6 pending"                        # a key twice: either value
    rc, out, _ = main(*common, "--only", "teacher=maskbit,relaxation=soft,seed=1", "--status")
    assert rc == 0 and out.splitlines()[-1] == "1 pending"


@pytest.mark.parametrize("selector, message", [
    ("teachr=maskbit", "--only teachr=maskbit (grid 'soft_vs_hard', paper scale): unknown key 'teachr' "
                       "(did you mean 'teacher'?); allowed: teacher, method, relaxation, refinement, seed, scale, "
                       "or a <stage>.<field> parameter the cells read (--list params)"),
    ("teacher=maskbt", "no cell has teacher = 'maskbt' (did you mean 'maskbit'?); the cells' values: maskbit, "
                       "maskgen, maskgit, meissonic"),
    ("teacher=maskbit,refinement=reward", "each value is some cell's, but no cell has them all"),
    ("seed", "expected KEY=VALUE[,KEY=VALUE...]"),
])
def test_bad_only_selectors_name_the_key_and_what_is_allowed(tmp_path, selector, message):
    rc, out, err = main("--grid", str(SOFT_VS_HARD), "--scale", "paper", "--results", str(tmp_path / "r"),
                        "--only", selector, "--dry-run")
    assert rc == 2 and out == "" and err.startswith("error: ") and message in err

#----------------------------------------------------------------------------
# Continuations: distill.init_from.


def _tiny(**cell) -> dict:
    return {"teacher": ["digits"], "method": ["dimo"], "seed": [0], **{k: [v] for k, v in cell.items()}}


def write_continuation(write_grid, child: dict, parent_steps: int = 20, name: str = "grid.yaml") -> Path:
    return write_grid(yaml.safe_dump({
        "name": "cont", "matrix": [_tiny(relaxation="soft", refinement="gan", **{"distill.steps": parent_steps}),
                                   _tiny(relaxation="hard", **{"distill.steps": 20}),
                                   _tiny(relaxation="soft", refinement="gan", **child)],
        "params": {"distill.refine_start": 10, "distill.batch_size": 8, "eval.samples": 100,
                   **{f"teacher.{k}": v for k, v in TINY_TEACHER.items()}}}, sort_keys=False), name)


TINY_TEACHER = {k: getattr(TINY, k) for k in ("levels", "d_model", "layers", "heads", "train_steps", "batch_size",
                                              "warmup_steps")}
CHILD = {"distill.init_from": "relaxation=soft,distill.optimizer=adam", "distill.steps": 40,
         "distill.optimizer": "adamw", "distill.weight_decay": 0.01, "distill.lr_generator": 1e-4}


def test_init_from_names_its_parent_by_run_id_and_the_child_id_follows_the_parent(write_grid):
    parent, hard, child = load_grid(write_continuation(write_grid, CHILD)).specs
    assert child.param("distill.init_from") == parent.run_id
    _, _, longer_parent = load_grid(write_continuation(write_grid, CHILD, parent_steps=25, name="g2.yaml")).specs
    assert longer_parent.run_id != child.run_id                   # the child's id hashes its parent's
    by_id = load_grid(write_continuation(write_grid, {**CHILD, "distill.init_from": parent.run_id},
                                         name="g3.yaml")).specs[2]
    assert by_id == child                                         # a run id or a selector: the same cell
    assert RunSpec.from_json(child.to_json()) == child
    assert child.to_json()["params"]["distill.init_from"] == parent.run_id
    # Added parameters keep every other cell's run id: left out of the spec at their defaults.
    assert {"distill.init_from", "distill.init_optimizer"} <= set(ADDED_PARAMS)
    assert "distill.init_from" not in parent.to_json()["params"]
    assert parent.run_id == resolve_cell({"teacher": "digits", "method": "dimo", "relaxation": "soft",
                                          "refinement": "gan", "seed": 0, "distill.steps": 20,
                                          "distill.refine_start": 10, "distill.batch_size": 8, "eval.samples": 100,
                                          **{f"teacher.{k}": v for k, v in TINY_TEACHER.items()}}, "mini").run_id


@pytest.mark.parametrize("change, message", [
    ({"distill.init_from": "relaxation=soft,distill.optimizer=adamw"},      # only the child itself has it
     "no cell has distill.optimizer = 'adamw' (did you mean 'adam'?); the cells' values: adam; expected a run "
     "id or a selector of one other cell of this grid (of seed 0 unless it names one)"),
    ({"distill.init_from": "relaxation=hard,refinement=gan"}, "picks 0 cells, not one: none"),
    ({"distill.init_from": "seed=0"}, "picks 2 cells, not one"),
    ({"distill.init_from": "relaxaton=soft"}, "unknown key 'relaxaton' (did you mean 'relaxation'?)"),
    ({"distill.init_from": "relaxation=hard", "distill.steps": 20},
     "distill.steps: 20 does not go past the 20 steps of the cell it continues"),
])
def test_bad_init_from_names_the_cell_line_and_key(write_grid, change, message):
    path = write_continuation(write_grid, {**CHILD, **change})
    with pytest.raises(GridError) as e:
        load_grid(path)
    [problem] = e.value.problems
    key = "distill.steps" if "distill.steps" in change else "distill.init_from"
    assert problem.startswith(f"{path}:") and f": matrix[2].{key}: " in problem and message in problem


def test_init_from_cycles_and_other_teachers_are_refused(write_grid):
    grid = write_grid("""
        name: cycle
        matrix:
          - {teacher: [digits], method: [dimo], relaxation: [hard], seed: [0], distill.steps: [30],
             distill.init_from: ["relaxation=soft"]}
          - {teacher: [digits], method: [dimo], relaxation: [soft], seed: [0], distill.steps: [40],
             distill.init_from: ["relaxation=hard"]}
        """)
    with pytest.raises(GridError, match="parents form a cycle"):
        load_grid(grid)
    grid = write_grid("""
        name: other
        matrix:
          - {teacher: [digits], method: [dimo], relaxation: [hard], seed: [0], teacher.levels: [8]}
          - {teacher: [digits], method: [dimo], relaxation: [soft], seed: [0], distill.steps: [400],
             distill.init_from: ["relaxation=hard"]}
        """, "other.yaml")
    with pytest.raises(GridError, match=r"whose teacher differs \(mini digits vs mini digits; teacher.levels\)"):
        load_grid(grid)


def test_list_params_shows_init_from():
    rc, out, _ = main("--list", "params")
    assert rc == 0
    assert any(line.split()[0] == "distill.init_from" for line in out.splitlines() if line.strip())
    assert any(line.split()[0] == "distill.init_optimizer" for line in out.splitlines() if line.strip())


def test_the_continuation_paper_grid_lists_the_1_56_row_after_its_parent(tmp_path):
    grid = load_grid(CONTINUATION, scale="paper")
    assert len(grid.specs) == 6 and {s.teacher for s in grid.specs} == {"maskbit", "maskgit"}
    longer = next(s for s in grid.specs if dict(s.params).get("distill.optimizer") == "adamw")
    parent = next(s for s in grid.specs if s.run_id == longer.param("distill.init_from"))
    assert (parent.teacher, parent.relaxation, parent.refinement) == ("maskbit", "soft", "gan")
    assert (longer.param("distill.lr_generator"), longer.param("distill.weight_decay"),
            longer.param("gan.weight")) == (5e-7, 0.01, 200.0)
    rc, out, _ = main("--grid", str(CONTINUATION), "--scale", "paper", "--results", str(tmp_path / "r"), "--dry-run")
    assert rc == 0 and _plan(out)[-1] == "6 pending"
    line = next(ln for ln in out.splitlines() if ln.startswith(longer.run_id))
    assert f"distill.init_from={parent.run_id}" in line and "distill.optimizer=adamw" in line
    after = out.split(line, 1)[1].splitlines()[1]
    assert after == f"    after {parent.run_id} (maskbit dimo soft +gan s0), its parent (the run it continues)"
    # The same Di[M]O and Soft-Di[M]O runs as the paper soft_vs_hard grid's seed 0 (their records are shared).
    soft_vs_hard = {s.run_id for s in load_grid(SOFT_VS_HARD, scale="paper").specs}
    assert sum(s.run_id in soft_vs_hard for s in grid.specs) == 4


def test_a_child_whose_parent_is_neither_ok_nor_run_is_not_submitted(write_grid, tmp_path):
    grid_path = write_continuation(write_grid, CHILD)
    parent, _, child = load_grid(grid_path).specs
    rc, out, err = main("--grid", str(grid_path), "--results", str(tmp_path / "r"), "--executor", "debug",
                        "--only", "distill.optimizer=adamw")
    assert rc == 1 and f"error: cell {child.run_id} (" in err
    assert f"is not submitted: its parent run {parent.run_id} (whose student it continues) has no record" in err
    assert not list((tmp_path / "r").rglob("record.json"))


@pytest.mark.slow                 # trains three tiny students
def test_a_continuation_runs_after_its_parent_and_records_it(write_grid, tmp_path, monkeypatch, tiny_teacher,
                                                             teacher_cache):
    monkeypatch.setenv("SOFTDIMO_CACHE", str(teacher_cache))    # the session's tiny teacher, trained once
    grid_path = write_continuation(write_grid, CHILD)
    parent, _, child = load_grid(grid_path).specs
    results = tmp_path / "results"
    rc, out, _ = main("--grid", str(grid_path), "--results", str(results), "--executor", "debug")
    assert rc == 0 and "summary: 3 ok" in out
    records = {r["run_id"]: r for r in store.scan(results)[0]}
    mine, theirs = records[child.run_id], records[parent.run_id]
    assert mine["spec"]["params"]["distill.init_from"] == parent.run_id
    lineage = mine["provenance"]["init_from"]
    assert (lineage["run_id"], lineage["grid"], lineage["step"], lineage["refinement"]) == (parent.run_id, "cont", 20, "gan")
    assert lineage["cache_key"] == theirs["info"]["student"]["cache_key"]
    assert mine["info"]["student"]["init_from"] == lineage and mine["info"]["steps"] == 40
    assert mine["provenance"]["started"] >= theirs["provenance"]["finished"]
    log = (store.run_dir(results, "cont", child.run_id) / "log.txt").read_text()
    assert f"continuing run {parent.run_id}'s student from its step 20 (fresh optimiser states)" in log
    assert "distill step 25/40" in log and "distill step 25/20" not in log
    assert mine["metrics"]["digits_fd"]["value"] != theirs["metrics"]["digits_fd"]["value"]
    # The child alone, later: its parent's ok record is found, nothing waits.
    rc, out, _ = main("--grid", str(grid_path), "--results", str(results), "--dry-run", "--only",
                      "distill.optimizer=adamw")
    assert rc == 0 and out.splitlines()[-1] == "1 done" and "    after" not in out

"""What a user touches outside a grid file: `--set` overrides, the Python API (`harness.api`), the
console scripts, and plugins found through the `softdimo_harness.plugins` entry-point group."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import api, run, store
from harness.grid import GridError, load_grid
from softdimo.config import DistillConfig
from softdimo.params import schema

ROOT = Path(__file__).resolve().parents[2]

GRID = """
name: surface
plugins: [toy_lab]
params:
  distill.steps: 3
matrix:
  teacher: [toy]
  method: [toy_student]
  relaxation: [toy_hard, toy_soft]
  seed: [0]
"""


def test_set_overrides_params_and_changes_the_run_ids(write_grid):
    path = write_grid(GRID)
    plain = load_grid(path)
    over = load_grid(path, overrides={"distill.steps": 7, "teacher.noise": 0.1})
    assert [s.param("distill.steps") for s in over.specs] == [7, 7]
    assert [s.param("teacher.noise") for s in over.specs] == [0.1, 0.1]
    assert {s.run_id for s in over.specs}.isdisjoint({s.run_id for s in plain.specs})


def test_set_errors_name_the_key_and_what_is_allowed(write_grid, tmp_path):
    path = write_grid(GRID)
    with pytest.raises(GridError) as e:
        load_grid(path, overrides={"relaxation": "toy_soft"})
    assert any("--set.relaxation" in p for p in e.value.problems), e.value.problems
    with pytest.raises(GridError) as e:
        load_grid(path, overrides={"distill.steps": -2})
    assert any("--set.distill.steps" in p for p in e.value.problems), e.value.problems
    with pytest.raises(GridError) as e:
        load_grid(path, overrides={"distill.stesp": 3})
    assert [p.split(": ", 1)[1] for p in e.value.problems] == [
        "--set.distill.stesp: unknown parameter of stage 'distill' (did you mean 'steps'?); allowed: "
        + ", ".join(sorted(schema(DistillConfig)))]

    out, err = io.StringIO(), io.StringIO()
    rc = run.main(["--grid", str(path), "--results", str(tmp_path / "r"), "--set", "distill.steps"], out, err)
    assert rc == 2 and "expected KEY=VALUE" in err.getvalue()
    assert not (tmp_path / "r").exists()


def test_set_reaches_a_matrix_axis_only_with_a_clear_error(write_grid):
    path = write_grid(GRID.replace("relaxation: [toy_hard, toy_soft]",
                                   "relaxation: [toy_hard]\n  distill.steps: [2, 3]"))
    with pytest.raises(GridError) as e:
        load_grid(path, overrides={"distill.steps": 5})
    assert any("--set.distill.steps" in p and "also an axis" in p for p in e.value.problems), e.value.problems


def test_api_runs_a_grid_and_reads_its_table(write_grid, tmp_path):
    path = write_grid(GRID)
    results = tmp_path / "results"
    planned = api.run(path, results, dry_run=True)
    assert planned.exit_code == 0 and planned.launched == [] and set(planned.statuses.values()) == {None}
    assert not list(results.rglob("record.json"))
    done = api.run(path, results, set={"distill.steps": 4}, executor="debug")
    assert done.exit_code == 0 and sorted(done.launched) == sorted(done.run_ids)
    assert set(done.statuses.values()) == {"ok"}
    records, problems = store.scan(results)
    assert problems == [] and len(records) == 2
    assert {r["spec"]["params"]["distill.steps"] for r in records} == {4}

    frame = api.load_frame(results, grids=["surface"])          # one row per (run, metric)
    assert set(frame["status"]) == {"ok"} and frame["run_id"].nunique() == 2
    means = frame[frame["metric"] == "toy_mean"].set_index("relaxation")["value"]
    assert sorted(means.index) == ["toy_hard", "toy_soft"] and means.notna().all()
    assert set(frame["distill.steps"]) == {4}
    assert done.frame.equals(frame)                             # the run's own rows are the grid's

    built = api.report(results, grids=["surface"], out=tmp_path / "report", formats=("md", "csv"),
                       plots=False, reference={"relaxation": "toy_hard"})
    assert built.index.exists() and "toy_soft" in built.index.read_text()
    with pytest.raises(GridError) as e:
        api.run(tmp_path / "missing.yaml", results)
    assert str(tmp_path / "missing.yaml") in e.value.problems[0]


def test_console_scripts_are_installed_and_run():
    bindir = Path(sys.executable).parent
    scripts = {name: bindir / name for name in ("softdimo-run", "softdimo-report", "softdimo-evaluate")}
    missing = [n for n, p in scripts.items() if not p.exists()]
    if missing:
        pytest.skip(f"the project is not pip-installed in this interpreter's environment ({missing} absent)")
    for name, script in scripts.items():
        done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (name, done.stderr)
        assert "usage:" in done.stdout


def test_an_installed_package_registers_its_entries_through_the_entry_point_group(tmp_path):
    # A package installed the way pip installs one: a module and a dist-info folder whose
    # entry_points.txt names the module in the harness's group.
    site = tmp_path / "site"
    (site / "acme_lab-0.1.dist-info").mkdir(parents=True)
    (site / "acme_lab-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-lab\nVersion: 0.1\n")
    (site / "acme_lab-0.1.dist-info" / "entry_points.txt").write_text(
        "[softdimo_harness.plugins]\nacme = acme_lab\n")
    (site / "acme_lab.py").write_text(textwrap.dedent("""
        from harness.contracts import registry
        from harness.contracts.entries import MetricEntry, MetricValue

        # The mean pixel of the generated images.
        def acme_mean(inp, ctx):
            return {"acme_mean": MetricValue(float(inp.images.mean()), False, None)}

        registry.metrics.register("acme_mean", MetricEntry("acme_mean", acme_mean, description="mean pixel"))
        """))
    probe = ("from harness.builtin import plugins\nfrom harness.contracts import registry\n"
             "loaded = plugins.load_builtins()\n"
             "print('acme_lab' in loaded, 'acme_mean' in registry.metrics, 'digits_fd' in registry.metrics)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "True"]

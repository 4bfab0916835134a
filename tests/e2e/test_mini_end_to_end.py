"""The real mini pipeline end to end through the two commands users type, at a tiny budget:
`harness.run` with submitit's debug and local executors (same metrics), the re-run that does
nothing, `harness.report`, and the worked plugin example of docs/usage.md."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import run, store
from harness.report import build as report
from harness.methods.numerics import pinned_environment
from harness.report.baselines import main as baselines_main
from tests.conftest import TINY_TEACHER

pytestmark = pytest.mark.slow                     # whole grids through both commands: minutes

ROOT = Path(__file__).resolve().parents[2]
TINY = {f"teacher.{k}": v for k, v in TINY_TEACHER.__dict__.items()}
TINY.update({"distill.steps": 4, "distill.batch_size": 8, "distill.checkpoint_every": 2,
             "eval.samples": 60, "eval.grid_images": 16})
GRID = {
    "name": "mini_e2e",
    "description": "tiny real pipeline",
    "matrix": [
        {"teacher": ["digits"], "method": ["dimo"], "relaxation": ["hard", "gumbel", "soft"], "seed": [0]},
        {"teacher": ["digits"], "method": ["teacher_sampler"], "sample.steps": [1, 4], "seed": [0]},
        {"teacher": ["digits"], "method": ["real", "marginals_class"], "seed": [0]},
    ],
    "params": TINY,
    "compare": {"reference": {"method": "dimo", "relaxation": "hard"}},
}


def _main(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = run.main(list(args), out, err)
    return rc, out.getvalue() + err.getvalue()


# `harness.run` in a fresh process with the mini pins, as the launcher gives its workers: the debug
# executor runs cells in the launching process, so an unpinned one may take other kernels.
def _pinned_main(*args: str) -> tuple[int, str]:
    env = {**os.environ, **pinned_environment("mini")}
    done = subprocess.run([sys.executable, "-m", "harness.run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


def _write(path: Path, grid: dict) -> Path:
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def _metrics(results: Path) -> dict[str, dict[str, float]]:
    records, problems = store.scan(results)
    assert problems == []
    return {r["run_id"]: {k: v["value"] for k, v in r["metrics"].items()} for r in records}


@pytest.fixture
def shared_cache(teacher_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SOFTDIMO_CACHE", str(teacher_cache))  # the session's tiny teacher
    return teacher_cache


def test_debug_and_local_runs_agree_and_report(tmp_path: Path, shared_cache: Path, tiny_teacher) -> None:
    grid = _write(tmp_path / "grid.yaml", GRID)
    debug, local = tmp_path / "debug", tmp_path / "local"
    rc, out = _pinned_main("--grid", str(grid), "--results", str(debug), "--executor", "debug")
    assert rc == 0, out
    assert "summary: 7 ok, 0 failed" in out
    rc, out = _main("--grid", str(grid), "--results", str(local), "--executor", "local", "--max-parallel", "2")
    assert rc == 0, out
    a, b = _metrics(debug), _metrics(local)
    assert len(a) == 7 and a == b               # same cells, same metrics, whatever the executor
    assert all(r["provenance"]["numerics"]["pinned"] for r in store.scan(local)[0])

    records, _ = store.scan(debug)
    for r in records:
        assert r["status"] == "ok" and r["provenance"]["git_commit"]
        assert all(v["protocol"]["name"].startswith("digits-") for v in r["metrics"].values())
        assert (debug / "mini_e2e" / r["run_id"] / "samples.png").is_file()
        if r["spec"]["method"] == "dimo":
            student = r["info"]["student"]
            assert r["cost"]["stages"]["distill_s"] > 0
            assert (debug / "mini_e2e" / r["run_id"] / "checkpoints" / "distill.pt").is_file() == \
                (not student["cache_hit"])
    students = {r["spec"]["relaxation"]: r["info"]["student"] for r in records if r["spec"]["method"] == "dimo"}
    for relaxation in ("gumbel", "soft"):      # without a refinement they train exactly hard's student
        assert students[relaxation]["trained_as"] == "hard"
        assert students[relaxation]["cache_key"] == students["hard"]["cache_key"]
    assert sum(not s["cache_hit"] for s in students.values()) == 1

    rc, out = _main("--grid", str(grid), "--results", str(debug), "--executor", "debug")
    assert rc == 0 and out.startswith("nothing to do")

    # Another grid holding two of these runs: their ok records are reused, not recomputed.
    other = _write(tmp_path / "other.yaml", {**GRID, "name": "mini_e2e_other", "matrix": [
        {"teacher": ["digits"], "method": ["dimo"], "relaxation": ["soft"], "seed": [0, 1]},
        {"teacher": ["digits"], "method": ["uniform"], "seed": [0]}],
        "compare": {"reference": {"method": "uniform"}}})
    rc, out = _main("--grid", str(other), "--results", str(debug), "--executor", "debug")
    assert rc == 0 and "reused 1 ok record(s) of the same runs from other grids" in out, out
    assert "summary: 2 ok" in out
    reused = [r for r in store.scan(debug, ["mini_e2e_other"])[0] if "reused_from" in r]
    assert len(reused) == 1 and reused[0]["spec"]["relaxation"] == "soft" and reused[0]["spec"]["seed"] == 0
    original = store.read_record(debug / reused[0]["reused_from"] / "record.json")
    assert reused[0]["metrics"] == original["metrics"] and reused[0]["grid"] == "mini_e2e_other"

    out_dir = tmp_path / "report"
    assert report.main(["--results", str(debug), "--out", str(out_dir)]) == 0
    table = (out_dir / "tables" / "results.md").read_text()
    for label in ("Di[M]O (hard)", "Di[M]O (gumbel)", "Di[M]O (soft)", "teacher K=4", "real (train split)"):
        assert label in table, label
    assert "digits_fd" in table and (out_dir / "report.md").is_file()
    cost = (out_dir / "tables" / "cost.md").read_text()
    assert "| digits | Di[M]O (soft) | 2 |" in cost      # seed 0 (reused once) and seed 1
    gumbel_row = next(line for line in cost.splitlines() if "Di[M]O (gumbel)" in line)
    assert gumbel_row.endswith("| 1/1 |")             # hard's student, trained by the hard cell
    assert next(line for line in cost.splitlines() if "teacher K=4" in line).endswith("| – |")
    compared = (out_dir / "tables" / "compare.md").read_text()     # the grid's compare section
    assert "Di[M]O (gumbel) − Di[M]O (hard)" in compared and "Di[M]O (soft) − Di[M]O (hard)" in compared
    assert "teacher K=4 − Di[M]O (hard)" in compared
    assert list((out_dir).rglob("*.png")) and list((out_dir).rglob("*.pdf"))


def test_plugins_from_outside_compared_with_di_m_o_and_a_stored_baseline(
        tmp_path: Path, shared_cache: Path, tiny_teacher, monkeypatch: pytest.MonkeyPatch) -> None:
    # The worked example of docs/usage.md: a relaxation and a method from a module outside the project, beside
    # Di[M]O, compared in the report with Di[M]O (hard) of the same seeds (paired) and with a stored
    # baseline of Di[M]O (hard) from other seeds (Welch, with n).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "examples"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    example = yaml.safe_load((ROOT / "examples" / "my_lab" / "compare.yaml").read_text())
    example["params"] = {**TINY, "distill.refine_start": 2}
    results = tmp_path / "res"
    rc, out = _main("--grid", str(_write(tmp_path / "compare.yaml", example)), "--results", str(results),
                    "--executor", "debug")
    assert rc == 0, out
    records, _ = store.scan(results)
    assert sorted((r["spec"]["method"], r["spec"]["relaxation"]) for r in records if r["spec"]["seed"] == 0) == [
        ("dimo", "hard"), ("dimo", "soft"), ("dimo", "soft_top2"), ("two_step", "none")]
    two_step = next(r for r in records if r["spec"]["method"] == "two_step")
    assert two_step["info"]["student"]["cache_hit"]                  # Di[M]O (hard)'s student, reused

    # A stored baseline of Di[M]O (hard), exported from runs of other seeds.
    other = {**example, "name": "reference_runs", "plugins": [], "compare": None,
             "matrix": [{"teacher": ["digits"], "method": ["dimo"], "relaxation": ["hard"], "seed": [3, 4, 5]}]}
    del other["compare"]
    assert _main("--grid", str(_write(tmp_path / "ref.yaml", other)), "--results", str(tmp_path / "ref"),
                 "--executor", "debug")[0] == 0
    bdir = tmp_path / "baselines"
    assert baselines_main(["export", "--grid", "reference_runs", "--results", str(tmp_path / "ref"),
                           "--out", str(bdir / "mini_reference.csv")]) == 0
    monkeypatch.setenv("SOFTDIMO_BASELINES", str(bdir))

    out_dir = tmp_path / "report"
    assert report.main(["--results", str(results), "--out", str(out_dir), "--reference", "relaxation=hard"]) == 0
    paired = (out_dir / "tables" / "compare.md").read_text()
    row = next(line for line in paired.splitlines() if line.startswith("| Di[M]O (soft_top2) + gan − Di[M]O (hard)"))
    assert row.count("(paired t, n=3/3)") >= 4 and " ± " in row
    assert "| two-step Di[M]O student − Di[M]O (hard)" in paired
    assert report.main(["--results", str(results), "--out", str(tmp_path / "r2"), "--reference",
                        "source=mini_reference,label=Di[M]O (hard)"]) == 0
    welch = (tmp_path / "r2" / "tables" / "compare.md").read_text()
    assert "Di[M]O (hard) [mini_reference]" in welch
    row = next(line for line in welch.splitlines() if line.startswith("| Di[M]O (soft_top2) + gan − "))
    assert "(Welch t, n=3/3)" in row

"""`harness.api` as the library the commands call: a run returns its result (statuses, rows, exit
code), a refusal raises a typed exception naming what is wrong (nothing written), an evaluation
returns its record; and api.py builds no command line."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness import api, run, store

GRID = {
    "name": "api_grid",
    "plugins": ["toy_lab"],
    "params": {"distill.steps": 2},
    "matrix": {"teacher": ["toy"], "method": ["toy_student"], "relaxation": ["toy_hard"], "seed": [0]},
    "include": [{"teacher": "toy", "method": "toy_flaky", "seed": 0}],
}


def test_run_returns_the_statuses_rows_and_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results"
    monkeypatch.setenv("TOY_LAB_FAIL", "1")                  # toy_flaky fails: a status, not an exception
    seen: list[dict] = []
    done = api.run(GRID, results, executor="debug", progress=seen.append)
    by_method = {s.method: s.run_id for s in done.plan.grid.specs}
    assert done.statuses == {by_method["toy_student"]: "ok", by_method["toy_flaky"]: "failed"}
    assert sorted(done.launched) == sorted(done.run_ids) and done.exit_code == 1
    assert seen and seen[-1] == done.statuses
    assert set(done.frame["run_id"]) == {by_method["toy_student"]}      # rows of the ok record only
    assert set(done.frame["metric"]) >= {"toy_mean"} and done.frame["value"].notna().all()

    monkeypatch.delenv("TOY_LAB_FAIL")
    again = api.run(GRID, results, executor="debug")         # failed cells wait for rerun_failed
    assert again.launched == [] and again.exit_code == 1
    fixed = api.run(GRID, results, executor="debug", rerun_failed=True)
    assert fixed.launched == [by_method["toy_flaky"]] and fixed.exit_code == 0
    assert set(fixed.statuses.values()) == {"ok"} and fixed.frame["run_id"].nunique() == 2
    assert [r.state for r in api.status(GRID, results)] == ["ok", "ok"]


def test_a_bad_grid_raises_grid_error_naming_each_problem(tmp_path: Path) -> None:
    bad = {**GRID, "matrix": {**GRID["matrix"], "relaxation": ["toy_hrad"]}, "params": {"distill.stesp": 2}}
    with pytest.raises(api.GridError) as e:
        api.run(bad, tmp_path / "results", executor="debug")
    text = "\n".join(e.value.problems)
    assert "api_grid.yaml" in text and "toy_hrad" in text and "distill.stesp" in text, text
    assert len(e.value.problems) >= 2
    assert not (tmp_path / "results").exists()


def test_wrong_options_raise_typed_errors_before_anything_is_written(tmp_path: Path) -> None:
    results = tmp_path / "results"
    with pytest.raises(api.OptionError, match="--executor: .*nope"):
        api.run(GRID, results, executor="nope")
    with pytest.raises(api.SelectorError, match="--only"):
        api.run(GRID, results, executor="debug", only=["method=nope"])
    with pytest.raises(api.OptionError, match="needs a resource profile"):
        api.run(GRID, results, executor="slurm")
    with pytest.raises(api.ProfileError):
        api.run(GRID, results, executor="slurm", slurm_profile="no_such_profile")
    assert not results.exists()
    with pytest.raises(api.ResultsRootError, match="cannot write under /proc/softdimo-results"):
        api.run(GRID, "/proc/softdimo-results", executor="debug")      # no file can be made in /proc


def test_missing_assets_raise_asset_error_naming_each(tmp_path: Path, isolated_assets: Path) -> None:
    grid = Path(__file__).resolve().parents[2] / "ablations" / "soft_vs_hard.yaml"
    with pytest.raises(api.AssetError) as e:
        api.run(grid, tmp_path / "results", scale="paper", executor="debug", only=["teacher=maskgit"])
    assert any("asset 'maskgit_imagenet256' is missing" in p for p in e.value.problems), e.value.problems
    assert "nothing was submitted" in e.value.summary
    assert not list((tmp_path / "results").rglob("record.json"))


def test_the_command_prints_the_api_errors_with_its_exit_codes(tmp_path: Path, capsys) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**GRID, "params": {"distill.stesp": 2}}))
    assert run.main(["--grid", str(path), "--results", str(tmp_path / "r"), "--executor", "debug"]) == 2
    err = capsys.readouterr().err
    assert "distill.stesp" in err and f"problem(s) in {path}; nothing was run" in err
    assert run.main(["--grid", str(path), "--results", str(tmp_path / "r"), "--executor", "nope"]) == 2


def test_evaluate_returns_the_record_and_raises_on_a_bad_request(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((4, 8, 7), np.float32), labels=np.zeros(4, np.int64))
    with pytest.raises(api.EvaluationError) as e:
        api.evaluate(bad, "mini-digits", tmp_path / "results")
    assert any("`images`: expected [N, 8, 8]" in p for p in e.value.problems), e.value.problems
    assert not list((tmp_path / "results").rglob("record.json"))
    rng = np.random.default_rng(0)
    samples = tmp_path / "digits.npz"
    np.savez(samples, images=rng.integers(0, 4, (64, 8, 8)).astype(np.float32) / 3,
             labels=rng.integers(0, 10, 64))
    done = api.evaluate(samples, "mini-digits", tmp_path / "results", label="noise")
    assert done.status == "ok" and not done.already and done.path.is_file()
    assert done.metrics == {k: m["value"] for k, m in store.read_record(done.path)["metrics"].items()}
    again = api.evaluate(samples, "mini-digits", tmp_path / "results", label="noise")
    assert again.already and again.run_id == done.run_id and again.metrics == done.metrics


# api.py builds no command line: it calls no command's `main` or parser, imports no `main`, and
# writes no list of flags.
def test_the_api_builds_no_argv() -> None:
    tree = ast.parse(Path(api.__file__).read_text(encoding="utf-8"))
    calls = [n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
             for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert "main" not in calls and "parse_args" not in calls
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {"run", "harness.run", "main"} & imported
    argv = [n for n in ast.walk(tree) if isinstance(n, (ast.List, ast.Tuple)) and any(
        isinstance(e, ast.Constant) and isinstance(e.value, str) and e.value.startswith("--") for e in n.elts)]
    assert argv == [], [ast.unparse(n) for n in argv]

"""`python -m harness.report.verify`: each run against the stored numbers of its run id, per metric
identical / float / seed noise / different, and the first stage whose hash differs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy import stats

from harness import cell, store
from harness.grid import load_grid
from harness.report.baselines import main as baselines_main
from harness.report.verify import FLOAT_RTOL, main as verify_main, seed_noise_bound

GRID = """
name: ref
plugins: [toy_lab]
matrix: {teacher: [toy], method: [toy_student], relaxation: [toy_soft], seed: [0, 1, 2]}
params: {eval.samples: 20}
"""


@pytest.fixture
def stored(write_grid, tmp_path: Path) -> tuple[Path, Path]:
    # Three toy runs, executed for real, exported as the stored per-seed numbers.
    results = tmp_path / "results"
    for spec in load_grid(write_grid(GRID)).specs:
        cell.execute(spec.to_json(), "ref", str(results))
    csv = tmp_path / "reference.csv"
    assert baselines_main(["export", "--grid", "ref", "--results", str(results), "--out", str(csv)]) == 0
    return results, csv


def _edit(results: Path, seed: int, change) -> dict:
    # Change the record of one seed on disk, as another machine's run of the same run id would be.
    path = next(p for p in results.rglob("record.json") if json.loads(p.read_text())["spec"]["seed"] == seed)
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))
    return record


def _run(results: Path, csv: Path, capsys) -> tuple[int, str]:
    code = verify_main(["--grid", "ref", "--results", str(results), "--reference", str(csv)])
    return code, capsys.readouterr().out


def test_unchanged_runs_are_identical_and_carry_sample_hashes(stored, capsys) -> None:
    results, csv = stored
    records, _ = store.scan(results)
    assert all(len(r["stage_hashes"]["samples"]) == 16 for r in records)
    assert "stage_hashes_json" in csv.read_text().splitlines()[0]
    code, out = _run(results, csv, capsys)
    assert code == 0 and "3 identical, 0 float, 0 seed noise, 0 different of 3 run(s)" in out


def test_planted_changed_number_is_float_seed_noise_or_different(stored, capsys) -> None:
    results, csv = stored
    records, _ = store.scan(results)
    values = sorted(r["metrics"]["toy_mean"]["value"] for r in records)
    bound = seed_noise_bound(values)
    assert bound == pytest.approx(stats.t.ppf(0.975, 2) * math.sqrt(2) * float(
        sum((v - sum(values) / 3) ** 2 for v in values) / 2) ** 0.5)

    def shift(by: float):
        return lambda r: r["metrics"]["toy_mean"].__setitem__("value", r["metrics"]["toy_mean"]["value"] + by)
    # Same samples (hash unchanged), a value off in its last bits: the metric's arithmetic.
    _edit(results, 0, shift(1e-12))
    code, out = _run(results, csv, capsys)
    assert code == 0 and "| float | - |" in out
    # Other samples: within the seed-noise bound, then beyond it.
    _edit(results, 0, lambda r: r["stage_hashes"].__setitem__("samples", "0" * 16))
    _edit(results, 0, shift(bound / 2))
    code, out = _run(results, csv, capsys)
    assert code == 0 and "| seed noise | samples |" in out
    _edit(results, 0, shift(2 * bound))
    code, out = _run(results, csv, capsys)
    assert code == 1 and "| different | samples |" in out and "toy_mean: stored" in out


def test_planted_changed_teacher_hash_is_named_as_the_first_stage(stored, capsys) -> None:
    results, csv = stored
    # Both sides carry a teacher hash; this run's differs, and so do its samples: the runs parted
    # at the teacher, which the verdict names before the samples.
    rows = csv.read_text().splitlines()
    records, _ = store.scan(results)
    rid = next(r["run_id"] for r in records if r["spec"]["seed"] == 1)
    csv.write_text("\n".join(rows[:1] + [row.replace('{""samples""', '{""teacher"": ""aaaaaaaaaaaaaaaa"", ""samples""')
                                         if rid in row else row for row in rows[1:]]) + "\n")

    def change(record: dict) -> None:
        record["stage_hashes"] = {"teacher": "b" * 16, "samples": "c" * 16}
        record["metrics"]["toy_mean"]["value"] *= 1 + 10 * FLOAT_RTOL
    _edit(results, 1, change)
    code, out = _run(results, csv, capsys)
    line = next(ln for ln in out.splitlines() if rid in ln and ln.startswith("|"))
    assert "| teacher |" in line and ("| seed noise |" in line or "| different |" in line)


def test_bad_reference_and_no_stored_runs_are_refused(stored, tmp_path: Path, capsys) -> None:
    results, _ = stored
    assert verify_main(["--grid", "ref", "--results", str(results), "--reference", str(tmp_path / "no.csv")]) == 2
    assert "--reference" in capsys.readouterr().err
    assert verify_main(["--grid", "other", "--results", str(results), "--reference",
                        str(tmp_path / "reference.csv")]) == 2
    assert "no ok run of grid(s) other" in capsys.readouterr().err

"""Baselines: the paper numbers as cited data with protocols, and the mini reference export."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import cell, store
from harness.grid import load_grid
from harness.report import tables
from harness.report.baselines import main as _baselines_main  # the command line
from harness.store import baselines
from harness.store.results import frame, record_rows

ROOT = Path(__file__).resolve().parents[2]


def test_build_script_reproduces_committed_csv(tmp_path):
    out = tmp_path / "paper_results.csv"
    subprocess.run([sys.executable, str(ROOT / "baselines" / "build_paper_baselines.py"),
                    "--out", str(out)], check=True, capture_output=True, cwd=ROOT)
    assert out.read_bytes() == (ROOT / "baselines" / "paper_results.csv").read_bytes()


def test_paper_baselines_carry_citation_quality_protocol():
    rows = baselines.registered.get("papers").load()
    raw = (ROOT / "baselines" / "sources" / "paper_results_raw.csv").read_text().splitlines()
    assert len(rows) == len(raw) - 1 == 265                     # every number, none dropped
    soft = [b for b in rows if b.paper.startswith("Soft-DiMO")]
    assert len(soft) == 52 and {b.source_quality for b in soft} == {"secondary"}
    assert {b.arxiv for b in soft} == {"2509.22925"}
    dimo = [b for b in rows if b.paper.startswith("DiMO")]
    assert {b.source_quality for b in dimo} == {"primary"} and {b.arxiv for b in dimo} == {"2503.15457"}
    fid = next(b for b in dimo if b.metric == "fid" and b.method == "Di[M]O")
    assert (fid.value, fid.steps, fid.teacher_key, fid.higher_is_better) == (6.91, 1, "maskgit", False)
    assert fid.protocol["name"] == "imagenet256-fid50k-adm"
    assert fid.protocol["features"] == "clean-fid/legacy_tensorflow" and fid.protocol["num_samples"] == 50000
    assert fid.protocol["reference"] == "adm-imagenet256-ref-batch"        # the asset a run records
    hps = [b for b in dimo if b.metric_original.startswith("HPSv2.0")]
    assert hps and all(b.protocol["name"] == "hpsv2-benchmark-v2.0" and b.protocol["hps_version"] == "v2.0"
                       for b in hps)
    assert {b.metric for b in hps} == {"hps_v2.0", "hps_v2.0_anime", "hps_v2.0_concept-art", "hps_v2.0_paintings",
                                       "hps_v2.0_photo"}
    gen = next(b for b in dimo if b.metric == "geneval")
    assert (gen.protocol["num_prompts"], gen.protocol["images_per_prompt"]) == (553, 4)
    soft_hps = next(b for b in soft if b.metric_original == "HPS_avg")
    assert soft_hps.metric == "hps" and soft_hps.protocol["hps_version"] == "v2.1"
    assert soft_hps.protocol["assumed"] is True and "inferred" in soft_hps.protocol["notes"]
    assert all(b.citation and b.protocol.get("name") for b in rows)
    # HPS v2.0 vs v2.1 is refused (different metrics and protocols).
    from harness.contracts.protocol import protocol_mismatch
    assert protocol_mismatch(hps[0].protocol, soft_hps.protocol) == \
        "different protocols (hpsv2-benchmark-v2.0 vs hpsv2-benchmark-v2.1)"


def test_bad_baseline_file_names_file_and_line(tmp_path):
    path = tmp_path / "b.csv"
    text = (ROOT / "baselines" / "paper_results.csv").read_text().splitlines()
    text[3] = text[3].replace(",primary,", ",tertiary,", 1)
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(baselines.BaselineError, match=rf"{path}:4: source_quality 'tertiary'"):
        baselines.read_csv(path, "x")


GRID = """
name: ref
plugins: [toy_lab]
matrix: {teacher: [toy], method: [toy_student], relaxation: [toy_hard, toy_soft], seed: [0, 1]}
params: {eval.samples: 20}
"""


def test_export_mini_reference_and_compare(write_grid, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    for spec in load_grid(write_grid(GRID)).specs:
        cell.execute(spec.to_json(), "ref", str(results))
    bdir = tmp_path / "baselines"
    out = bdir / "mini_reference.csv"
    assert _baselines_main(["export", "--grid", "ref", "--results", str(results), "--out", str(out)]) == 0
    records, _ = store.scan(results)
    n_values = sum(len(r["metrics"]) for r in records)
    assert f"wrote {n_values} baseline rows from 4 ok records" in capsys.readouterr().out
    monkeypatch.setenv("SOFTDIMO_BASELINES", str(bdir))
    base, summary, problems = baselines.load_all()
    assert problems == [] and f"mini_reference: {n_values} numbers from {out.name}" in summary
    # One row per run and metric: the per-seed values, with their run ids and protocols.
    soft = [b for b in base if b.method == "Toy student (toy_soft)" and b.metric == "toy_mean"]
    assert sorted(b.seed for b in soft) == [0, 1] and all(b.n == 1 and b.std is None for b in soft)
    assert {b.run_id for b in soft} == {r["run_id"] for r in records
                                        if r["spec"]["relaxation"] == "toy_soft"}
    assert soft[0].source_quality == "primary"
    assert soft[0].protocol == {"name": "toy-mean", "implementation": "toy_lab", "version": 1, "samples": 20}
    t = tables.build_tables(frame(record_rows(records) + [b.row() for b in base]))
    row = next(r for r in t.blocks[0].rows if r.label == "Toy student (toy_soft)")
    assert row.cells["toy_mean"].delta == pytest.approx(0.0, abs=1e-12)   # compared with itself
    assert row.cells["toy_mean"].delta_source == "mini_reference"
    assert _baselines_main(["export", "--grid", "nope", "--results", str(results), "--out",
                           str(tmp_path / "x.csv")]) == 2

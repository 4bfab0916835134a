"""Report: tables (golden Markdown), deltas only under matching protocols, LaTeX/CSV, plots, and
corrupt records listed instead of crashing."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest

from harness import cell, plots, report, store, tables
from harness.baselines import Baseline
from harness.grid import load_grid
from harness.results import frame, method_label, record_rows, sampling_steps

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "toy_table.md"
P_MEAN = {"name": "toy-mean", "samples": 20}
P_FID = {"name": "toy-fidelity", "samples": 20}


def run_row(label: str, seed: int, metric: str, value: float | None, protocol: dict,
            steps: int | None = 1, teacher: str = "toy", higher: bool = False) -> dict:
    from harness.protocol import protocol_id
    return {"kind": "run", "source": "grid", "grid": "grid", "teacher": teacher, "label": label,
            "group": f"{teacher}:{label}", "metric": metric, "value": value, "higher_is_better": higher,
            "protocol": protocol, "protocol_id": protocol_id(protocol), "steps": steps, "seed": seed,
            "run_id": f"{label}-{seed}", "relaxation": "none" if steps != 1 else "soft", "status": "ok",
            "optimised": False}


def baseline(label: str, metric: str, value: float, protocol: dict, source: str = "papers",
             steps: int | None = 1, std: float | None = None, n: int | None = None) -> dict:
    return Baseline(source, "Paper (arXiv 0000.00000)", "0000.00000", "Paper, Table 1", "primary",
                    "Table 1", "Toy", "toy", "mini", "", label, steps, metric, metric, value, std,
                    n, False, protocol, "").row()


def golden_rows():
    rows = []
    for seed, (m, f) in enumerate([(0.40, 0.050), (0.42, 0.070), (0.44, 0.060)]):
        rows += [run_row("Soft student", seed, "toy_mean", m, P_MEAN),
                 run_row("Soft student", seed, "toy_fidelity", f, P_FID)]
    for seed, (m, f) in enumerate([(0.30, 0.20), (None, None)]):
        rows += [run_row("Hard student", seed, "toy_mean", m, P_MEAN),
                 run_row("Hard student", seed, "toy_fidelity", f, P_FID)]
    rows += [run_row("Sampler (8 steps)", 0, "toy_mean", 0.455, P_MEAN, steps=8),
             run_row("Real data", 0, "toy_mean", 0.5, P_MEAN, steps=None)]
    rows += [baseline("Soft student", "toy_mean", 0.41, P_MEAN, "mini_reference", std=0.01, n=3),
             baseline("Hard student", "toy_mean", 0.29, {"name": "toy-mean", "samples": 50000}),
             baseline("Soft student", "toy_fidelity", 0.055, {"name": "other-fidelity"}),
             baseline("Other method", "toy_mean", 0.35, {"name": "toy-mean"}, steps=4),
             baseline("Unrelated metric", "fid", 3.0, {"name": "x"})]
    rows.append(run_row("Other teacher", 0, "toy_mean", 0.1, P_MEAN, teacher="aaa"))
    return frame(rows)


def test_golden_markdown_table():
    text = tables.render_markdown(tables.build_tables(golden_rows()))
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_table_numbers_and_deltas():
    t = tables.build_tables(golden_rows())
    assert [b.teacher for b in t.blocks] == ["aaa", "toy"]
    block = t.blocks[1]
    assert block.metrics == ["toy_fidelity", "toy_mean"]
    rows = {r.label: r for r in block.rows}
    soft = rows["Soft student"].cells["toy_mean"]
    assert (soft.mean, soft.n) == (pytest.approx(0.42), 3) and soft.std == pytest.approx(0.02)
    assert soft.delta == pytest.approx(0.01) and soft.delta_source == "mini_reference"
    hard = rows["Hard student"].cells["toy_mean"]
    assert (hard.n, hard.diverged, hard.delta) == (1, 1, None)         # samples differ: no delta
    assert "samples differs (20 vs 50000)" in t.footnotes[hard.notes[-1] - 1]
    assert rows["Soft student"].cells["toy_fidelity"].delta is None
    assert "different protocols (toy-fidelity vs other-fidelity)" in " ".join(t.footnotes)
    assert "Unrelated metric [papers]" not in rows                       # metric not in this block
    assert [r.label for r in block.rows][:4] == ["Sampler (8 steps)", "Hard student",
                                                 "Soft student", "Real data"]


def test_latex_and_csv_render():
    t = tables.build_tables(golden_rows())
    tex = tables.render_latex(t)
    assert tex.count(r"\begin{tabular}") == 2 and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"toy\_mean $\downarrow$" in tex and r"0.420 $\pm$ 0.020 (n=3) $\Delta$+0.010" in tex
    rows = list(csv.DictReader(io.StringIO(tables.render_csv(t))))
    soft = next(r for r in rows if r["method"] == "Soft student" and r["metric"] == "toy_mean")
    assert float(soft["mean"]) == pytest.approx(0.42) and soft["n"] == "3"
    assert float(soft["delta"]) == pytest.approx(0.01) and soft["delta_source"] == "mini_reference"


def test_labels_fall_back_when_method_unknown():
    spec = {"teacher": "x", "method": "not_registered", "relaxation": "soft", "refinement": "gan",
            "seed": 0, "params": {}}
    assert method_label(spec) == "not_registered soft +gan"
    assert method_label({**spec, "method": "toy_student", "relaxation": "toy_soft",
                         "refinement": "none", "params": {}, "scale": "mini",
                         "plugins": []}) == "Toy student (toy_soft)"
    assert sampling_steps({"method": "teacher_sampler", "params": {"sample.steps": 8}}) == 8
    assert sampling_steps(spec) == 1 and sampling_steps({**spec, "relaxation": "none"}) is None


def test_same_label_different_params_get_distinct_rows():
    recs = []
    for beta in (0.0, 0.5):
        spec = {"scale": "mini", "teacher": "toy", "method": "toy_student", "relaxation": "toy_soft",
                "refinement": "none", "seed": 0, "params": {"distill.beta": beta}, "plugins": []}
        recs.append({"run_id": f"r{beta}", "grid": "g", "status": "ok", "spec": spec,
                     "metrics": {"toy_mean": {"value": beta, "higher_is_better": False,
                                              "protocol": P_MEAN}}})
    labels = sorted(r["label"] for r in record_rows(recs))
    assert labels == ["Toy student (toy_soft) (distill.beta=0.0)",
                      "Toy student (toy_soft) (distill.beta=0.5)"]


def test_best_of_n_plot_a_line_per_tteo_steps(tmp_path):
    recs = []
    for n in (1, 4, 16):
        for k in (0, 2):
            spec = {"scale": "mini", "teacher": "toy", "method": "toy_student", "relaxation": "toy_soft",
                    "refinement": "none", "seed": 0, "plugins": [],
                    "params": {"sample.best_of_n": n, "sample.tteo_steps": k}}
            recs.append({"run_id": f"n{n}k{k}", "grid": "g", "status": "ok", "spec": spec,
                         "metrics": {"toy_mean": {"value": float(n + k), "higher_is_better": True}}})
    paths = plots.plot_best_of_n(frame(record_rows(recs)), tmp_path)
    assert sorted(p.name for p in paths) == ["best_of_n_toy_toy_mean.pdf", "best_of_n_toy_toy_mean.png"]
    assert plots.plot_best_of_n(frame(record_rows([r for r in recs if r["spec"]["params"]["sample.best_of_n"] == 4])),
                                tmp_path / "one") == []     # one N: no curve to draw


GRID = """
name: rep
plugins: [toy_lab]
matrix:
  - {teacher: [toy], method: [toy_student], relaxation: [toy_hard, toy_soft], seed: [0, 1]}
  - {teacher: [toy], method: [toy_sampler], seed: [0], sample.steps: [1, 2, 4]}
params: {eval.samples: 20}
"""


def test_report_end_to_end_with_corrupt_record(write_grid, tmp_path):
    results = tmp_path / "results"
    grid = load_grid(write_grid(GRID))
    for spec in grid.specs:
        assert cell.execute(spec.to_json(), "rep", str(results)) == "ok"
    failed = store.run_dir(results, "rep", "f" * 16)
    store.write_record(failed, {"schema_version": 1, "run_id": "f" * 16, "grid": "rep", "spec": {
        "teacher": "toy", "method": "toy_flaky", "seed": 0, "params": {}}, "status": "failed",
        "error": {"type": "RuntimeError", "message": "boom", "traceback": "", "log": "/x/log.txt"}})
    broken = store.run_dir(results, "rep", "b" * 16)
    broken.mkdir()
    (broken / "record.json").write_text('{"schema_version": 1, "run_id": ')   # truncated
    out = tmp_path / "report"
    rep = report.build_report(results, None, out)
    index = rep.index.read_text()
    assert f"`{broken / 'record.json'}`: invalid JSON" in index
    assert "- `rep/ffffffffffffffff` : RuntimeError: boom (log: `/x/log.txt`)" in index
    assert "| rep | 7 | 0 | 1 |" in index
    assert "Toy student (toy_hard)" in index and "Toy sampler, 4 step(s)" in index
    for rel in ("tables/results.md", "tables/results.tex", "tables/results.csv",
                "plots/relaxations_toy_toy_mean.png", "plots/relaxations_toy_toy_mean.pdf",
                "plots/steps_toy_toy_mean.png", "plots/curves_toy_toy_gap.pdf",
                "samples/samples_rep_p1.png"):
        assert (out / rel).is_file() and (out / rel).stat().st_size > 0, rel
    assert "(tables/results.csv)" in index and "(plots/steps_toy_toy_mean.png)" in index

    rc = report.main(["--results", str(results), "--grid", "rep", "--out", str(tmp_path / "r2"),
                      "--format", "md"])
    assert rc == 0 and (tmp_path / "r2" / "tables" / "results.md").exists()
    assert not (tmp_path / "r2" / "tables" / "results.tex").exists()
    assert report.main(["--results", str(tmp_path / "nope")]) == 2
    assert report.main(["--results", str(results), "--format", "md,html"]) == 2

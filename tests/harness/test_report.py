"""Report: tables (golden Markdown), deltas only under matching protocols, LaTeX/CSV, plots, and
corrupt records listed instead of crashing."""
from __future__ import annotations

import csv
import io
import os
import re
import shutil
from pathlib import Path

import pytest

from harness import cell, store
from harness.report import build as report
from harness.grid import load_grid
from harness.report import plots, tables
from harness.store.baselines import Baseline
from harness.store.results import frame, method_label, record_rows, sampling_steps

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "toy_table.md"
P_MEAN = {"name": "toy-mean", "samples": 20}
P_FID = {"name": "toy-fidelity", "samples": 20}


def run_row(label: str, seed: int, metric: str, value: float | None, protocol: dict,
            steps: int | None = 1, teacher: str = "toy", higher: bool = False) -> dict:
    from harness.contracts.protocol import protocol_id
    return {"kind": "run", "source": "grid", "grid": "grid", "teacher": teacher, "label": label,
            "group": f"{teacher}:{label}", "metric": metric, "value": value, "higher_is_better": higher,
            "protocol": protocol, "protocol_id": protocol_id(protocol), "steps": steps, "seed": seed,
            "run_id": f"{label}-{seed}", "relaxation": "none" if steps != 1 else "soft", "status": "ok",
            "optimised": False, "method": "toy_sampler" if steps and steps > 1 else "toy_student"}


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
    # Cells hold mean ± std only; n goes to the caption, the delta under the table.
    assert r"toy\_mean $\downarrow$" in tex and "Soft student & 1 & " in tex
    assert r"0.420{\scriptsize\,$\pm$\,0.020} \\" in tex and "(n=" not in tex
    assert r"n: Sampler (8 steps) 1; Hard student 1; Soft student 3; Real data 1." in tex
    assert r"Soft student toy\_mean +0.010 (mini\_reference)" in tex
    # Best per column in bold, lower is better; the baseline under another protocol (0.290) and
    # cells of other protocols do not compete.
    assert r"\textbf{0.300}" in tex and r"\textbf{0.060{\scriptsize\,$\pm$\,0.010}}" in tex
    assert r"\textbf{0.290}" not in tex
    narrowed = tables.render_latex(tables.select_metrics(t, ["toy_mean"]))
    assert "toy\\_fidelity" not in narrowed and narrowed.count(r"\begin{tabular}") == 2
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
    rep = report.build_report(results, None, out, layout_names=["mini_c2i"])
    index = rep.index.read_text()
    assert "`rep/bbbbbbbbbbbbbbbb/record.json`: invalid JSON" in index      # relative to the results root
    assert "- `rep/ffffffffffffffff` : RuntimeError: boom (log: `x/log.txt`)" in index
    assert "| rep | 7 | 0 | 1 |" in index
    assert "Toy student (toy_hard)" in index and "Toy sampler, 4 step(s)" in index
    for rel in ("tables/results.md", "tables/results.tex", "tables/results.csv", "tables/layout_mini_c2i.tex",
                "plots/methods_toy.png", "plots/methods_toy.pdf", "plots/steps_toy.png", "plots/steps_toy.pdf",
                "plots/curves_toy.png", "plots/curves_toy.pdf", "samples/side_by_side_toy.png",
                "samples/side_by_side_toy.pdf", "samples/samples_rep_p1.png"):
        assert (out / rel).is_file() and (out / rel).stat().st_size > 0, rel
    assert "(tables/results.csv)" in index and "![steps_toy](plots/steps_toy.png)" in index
    assert "![side_by_side_toy](samples/side_by_side_toy.png)" in index and "## Paper tables" in index
    assert not list((out / "plots").glob("relaxations_*"))            # per-metric plots: on request
    assert (out / "plots" / "methods_toy.pdf").read_bytes().startswith(b"%PDF")
    _check_report_travels(out, tmp_path / "elsewhere", forbidden=[str(tmp_path), str(Path.cwd()), str(Path.home())])

    rc = report.main(["--results", str(results), "--grid", "rep", "--out", str(tmp_path / "r2"),
                      "--format", "md", "--per-metric-plots"])
    assert rc == 0 and (tmp_path / "r2" / "tables" / "results.md").exists()
    assert not (tmp_path / "r2" / "tables" / "results.tex").exists()
    assert {"relaxations_toy_toy_mean.png", "steps_toy_toy_mean.pdf", "curves_toy_toy_gap.png",
            "methods_toy.png"} <= {p.name for p in (tmp_path / "r2" / "plots").iterdir()}
    assert report.main(["--results", str(tmp_path / "nope")]) == 2
    assert report.main(["--results", str(results), "--format", "md,html"]) == 2


ORDERED = """
name: order
plugins: [toy_lab]
matrix:
  - {teacher: [toy], method: [toy_student], relaxation: [toy_soft], refinement: [toy_sharpen], seed: [0, 1]}
  - {teacher: [toy], method: [toy_student], relaxation: [toy_soft, toy_hard], seed: [0, 1]}
params: {eval.samples: 20}
compare: {reference: {relaxation: toy_hard}}
"""


# The report lists methods in the order the grid's matrix names them (here the reverse of the
# alphabetical one) in its tables, comparisons, figures and side-by-side samples.
def test_the_report_keeps_the_grids_method_order(write_grid, tmp_path):
    from harness import run
    from harness.report import compare, side_by_side
    from harness.store.results import labels_in_order
    results = tmp_path / "results"
    assert run.main(["--grid", str(write_grid(ORDERED)), "--results", str(results), "--executor", "debug"],
                    io.StringIO(), io.StringIO()) == 0
    rep = report.build_report(results, None, tmp_path / "report", formats=("md",))
    sharpen, soft, hard = ("Toy student (toy_soft) (refinement=toy_sharpen, toyref.strength=0.5)",
                           "Toy student (toy_soft) (refinement=none)", "Toy student (toy_hard)")
    assert [r.label for r in rep.tables.blocks[0].rows] == [sharpen, soft, hard]
    assert sorted([sharpen, soft, hard]) == [hard, soft, sharpen]           # alphabetical is the reverse
    table = (tmp_path / "report" / "tables" / "results.md").read_text()
    assert table.index(sharpen) < table.index(f"| {soft}") < table.index(f"| {hard}")
    compared = compare.compare(rep.frame, {"relaxation": "toy_hard"})
    assert list(dict.fromkeys(c.label for c in compared)) == [sharpen, soft]
    text = (tmp_path / "report" / "tables" / "compare.md").read_text()
    assert text.index(f"| {sharpen} − {hard}") < text.index(f"| {soft} − {hard}")
    assert labels_in_order(rep.frame[rep.frame["kind"] == "run"]) == [sharpen, soft, hard]
    runs = rep.frame[rep.frame["kind"] == "run"].drop_duplicates("run_id").copy()
    runs["file"] = [side_by_side.condition_file(results, g, r, None) for g, r in zip(runs["grid"], runs["run_id"])]
    assert [r["label"] for r in side_by_side.choose_runs(runs)[1]] == [sharpen, soft, hard]


# Move a report folder: no file in it names a forbidden (absolute) path, and every link of its
# Markdown pages resolves inside the moved folder.
def _check_report_travels(folder: Path, target: Path, forbidden: list[str]) -> None:
    moved = Path(shutil.move(str(folder), str(target)))
    files = [p for p in moved.rglob("*") if p.is_file()]
    for path in files:
        data = path.read_bytes()
        for text in forbidden:
            assert text.encode() not in data, f"{path.relative_to(moved)} names {text}"
    links = 0
    for page in (p for p in files if p.suffix == ".md"):
        for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            assert not Path(link).is_absolute() and "://" not in link, f"{page.name}: {link}"
            assert (page.parent / link).resolve().is_file(), f"{page.name}: broken link {link}"
            links += 1
    assert links > 10


def test_side_by_side_takes_one_seed_and_one_run_per_method(tmp_path):
    from harness.grid import conditions
    from harness.methods.images import save_condition_samples
    from harness.report import side_by_side
    import torch
    rows = []
    for label, seeds in (("B student", (0, 1)), ("A student", (1,)), ("Sampler (8 steps)", (0,))):
        for seed in seeds:
            row = run_row(label, seed, "toy_mean", 0.5, P_MEAN, steps=8 if "Sampler" in label else 1)
            rows.append({**row, "run_id": f"{label[0]}{seed}", "grid": "g", "reused_from": None})
            images = torch.full((12, 1, 4, 4), 0.1 * seed + 0.01 * len(label))
            save_condition_samples(images, [i % 10 for i in range(12)], tmp_path / "g" / f"{label[0]}{seed}" /
                                   "condition_samples.npz")
    runs = frame(rows).drop_duplicates("run_id").copy()
    runs["file"] = [side_by_side.condition_file(tmp_path, g, r, None) for g, r in zip(runs["grid"], runs["run_id"])]
    seed, chosen = side_by_side.choose_runs(runs)
    assert seed == 0 and [r["label"] for r in chosen] == ["Sampler (8 steps)", "B student"]   # 2 methods have seed 0
    paths = side_by_side.side_by_side_pages(frame(rows), tmp_path, tmp_path / "out")
    assert sorted(p.name for p in paths) == ["side_by_side_toy.pdf", "side_by_side_toy.png"]
    assert conditions.caption("digits", 3) == "class 3" and conditions.caption("shapes", "a red bar") == "a red bar"
    if conditions.imagenet_class_names() is not None:          # torchvision (the metrics extra)
        assert conditions.caption("maskbit", 207) == "207: golden retriever"


def test_steps_figure_marks_stored_numbers_only_under_the_runs_protocol(tmp_path):
    from harness.report import figures
    df = golden_rows()
    points = figures._reference_points(df, "toy", "toy_mean", [P_MEAN])
    assert sorted(points) == [("Other method", "papers", 4, 0.35), ("Soft student", "mini_reference", 1, 0.41)]
    style = plots.Style.of(df)
    assert list(style.colors)[:2] == ["toy_sampler, K steps", "Sampler (8 steps)"]      # the teacher curve first
    assert style.color("Soft student") == style.colors["Soft student"] != style.color("Hard student")
    # a stored number of the same method takes its runs' colour (figures mark it with another symbol)
    assert style.reference_color("Soft student", "mini_reference") == style.color("Soft student")
    assert style.reference_color("Other method", "papers") == style.colors["Other method [papers]"]
    paths = figures.report_figures(df, tmp_path, style, metrics=["toy_mean"])
    assert sorted(p.name for p in paths) == ["methods_aaa.pdf", "methods_aaa.png", "methods_toy.pdf",
                                             "methods_toy.png", "steps_toy.pdf", "steps_toy.png"]

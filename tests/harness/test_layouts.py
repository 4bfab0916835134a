"""Paper table layouts (`harness.report.layouts`): files that load or say what is wrong, the papers' rows
with every matching run beside them, "no run" where none matches, deltas only under matching
protocols, best values in bold by direction, `--metrics`; and the LaTeX of every layout and of the
default tables compiled by a real LaTeX engine."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.report import build as report
from harness.contracts.protocol import protocol_id
from harness.grid.yaml_lines import YamlFileError
from harness.report import latex, layouts, tables
from harness.store.baselines import Baseline, load_all
from harness.store.results import frame

P_GOOD = {"name": "toy-fd", "samples": 100}
P_ACC = {"name": "toy-acc"}

TOY_LAYOUT = """
name: toy_table
title: A toy table
paper: Toy paper (arXiv 0000.00000)
table: Table 2
baselines: {source: papers, table: Table 2}
columns:
  - {header: FD, metric: toy_fd, protocol: toy-fd, precision: 2, direction: lower}
  - {header: Acc., metric: toy_acc, paper_metric: acc, protocol: toy-acc, precision: 3, direction: higher}
rows:
  - section: Students
  - {label: Method A, steps: 1, paper: {method: A}, runs: {teacher: toy, method: student, relaxation: soft}}
  - {label: Method B, steps: 1, paper: {method: B}, runs: {teacher: toy, method: student, relaxation: hard}}
  - {label: Method C, steps: 4, paper: {method: C}, runs: {teacher: toy, method: sampler, steps: 4}}
  - {label: Method D, steps: 1, paper: {method: D}, note: no grid reproduces D}
"""


def base(method: str, metric: str, value: float, protocol: dict, quality: str = "primary",
         table: str = "Table 2") -> Baseline:
    return Baseline("papers", "Toy paper", "0000.00000", f"Toy paper, {table}", quality, table, "Toy", "toy",
                    "toy-task", "", method, 1, metric, metric, value, None, None, metric != "toy_fd", protocol, "")


def run(relaxation: str, seed: int, metric: str, value: float, protocol: dict, method: str = "student",
        steps: int = 1, teacher: str = "toy") -> dict:
    return {"kind": "run", "source": "g", "grid": "g", "teacher": teacher, "method": method,
            "relaxation": relaxation, "refinement": "none", "label": f"{method} ({relaxation})",
            "group": f"{teacher}:{method}:{relaxation}", "metric": metric, "value": value,
            "higher_is_better": metric != "toy_fd", "protocol": protocol, "protocol_id": protocol_id(protocol),
            "steps": steps, "seed": seed, "run_id": f"{relaxation}-{seed}", "status": "ok", "optimised": False}


@pytest.fixture
def toy_layout(tmp_path: Path) -> layouts.Layout:
    path = tmp_path / "toy_table.yaml"
    path.write_text(TOY_LAYOUT)
    return layouts.load_layout(path)


def toy_baselines() -> list[Baseline]:
    return [base("A", "toy_fd", 2.00, P_GOOD, "secondary"), base("A", "acc", 0.900, P_ACC),
            base("B", "toy_fd", 3.00, {"name": "toy-fd", "samples": 50000}),
            base("C", "toy_fd", 1.50, P_GOOD), base("D", "toy_fd", 1.00, P_GOOD),
            base("A", "toy_fd", 9.99, P_GOOD, table="Table 3")]          # another table: never shown


def toy_runs():
    rows = []
    for seed, (fd, acc) in enumerate([(2.10, 0.95), (2.30, 0.97)]):
        rows += [run("soft", seed, "toy_fd", fd, P_GOOD), run("soft", seed, "toy_acc", acc, P_ACC)]
    rows += [run("hard", 0, "toy_fd", 2.50, P_GOOD), run("hard", 0, "toy_acc", 0.99, {"name": "other-acc"})]
    return frame(rows)


def test_rows_runs_no_runs_and_deltas(toy_layout):
    t = layouts.build_layout(toy_layout, toy_runs(), toy_baselines())
    kinds = [(line.kind, line.label) for line in t.lines]
    assert kinds == [("section", "Students"), ("paper", "Method A"), ("run", "ours"), ("paper", "Method B"),
                     ("run", "ours"), ("paper", "Method C"), ("no_run", "ours"), ("paper", "Method D")]
    a, a_runs = t.lines[1], t.lines[2]
    assert (a.cells["FD"].value, a.cells["FD"].secondary, a.cells["Acc."].value) == (2.00, True, 0.900)
    assert a_runs.cells["FD"].value == pytest.approx(2.20) and a_runs.cells["FD"].n == 2
    assert a_runs.cells["FD"].std == pytest.approx(0.1414, abs=1e-4) and a_runs.seeds == [0, 1]
    # Deltas where protocols match (A: both columns); B's FD protocol differs in samples: no delta.
    assert t.deltas == ["Method A: FD +0.20, Acc. +0.060"]
    notes = "\n".join(t.footnotes)
    assert "no Δ to the stored FD: samples differs (100 vs 50000)" in notes
    assert "run evaluated under other-acc; the column's protocol is toy-acc" in notes
    assert "no run matches teacher=toy, method=sampler, steps=4" in notes
    assert "no grid reproduces D" in notes
    md = layouts.render_markdown(t)
    assert "| Method A | 1 | 2.00† | 0.900 |" in md and "| ↳ ours [3] |  | no run | no run |" in md
    assert "9.99" not in md and "† a secondary transcription" in md
    # Best per column by direction: FD lower (D's 1.00), Acc. higher (0.960; B's 0.990 is under
    # another protocol and does not compete).
    assert "| ↳ ours | 1 | 2.20 ± 0.14 | **0.960 ± 0.014** |" in md and "| ↳ ours | 1 | 2.50 [1] | 0.990 [2] |" in md
    assert "| Method D [4] | 1 | **1.00** | – |" in md
    tex = layouts.render_latex(t)
    assert r"\multicolumn{2}{c}{\textit{no run}}" in tex and r"2.00$^\dagger$" in tex
    assert r"\quad ours & 1 & 2.20{\scriptsize\,$\pm$\,0.14} & \textbf{0.960{\scriptsize\,$\pm$\,0.014}} \\" in tex
    assert "(n=" not in tex and r"Method A: FD +0.20, Acc. +0.060" in tex


def test_metrics_choose_and_order_columns(toy_layout):
    t = layouts.build_layout(toy_layout, toy_runs(), toy_baselines(), metrics=["toy_acc", "FD"])
    assert [c.header for c in t.columns] == ["Acc.", "FD"]
    assert "| method | steps | Acc. ↑ | FD ↓ |" in layouts.render_markdown(t)
    with pytest.raises(ValueError, match="unknown column.*nope.*allowed: toy_fd, toy_acc"):
        layouts.build_layout(toy_layout, toy_runs(), toy_baselines(), metrics=["nope"])


GOOD = {"title": "t", "paper": "p", "columns": "[{header: X, metric: x, direction: lower}]", "rows": "[{label: A}]"}


@pytest.mark.parametrize("key, value, message", [
    ("colour", "red", ":5: layout: unknown key 'colour'; allowed: name, title"),
    ("columns", "[{header: X, metric: x, direction: up}]", ":3: columns[0]: direction: 'up'; allowed: higher, lower"),
    ("rows", "[{label: A, runs: {teachr: toy}}]", ":4: rows[0].runs: unknown key 'teachr'; allowed: kind, source"),
    ("rows", "[{label: A, paper: {metod: A}}]", ":4: rows[0].paper: unknown key 'metod'; allowed: source, paper"),
])
def test_layout_errors_name_file_line_and_allowed(tmp_path, key, value, message):
    path = tmp_path / "bad.yaml"
    path.write_text("".join(f"{k}: {value if k == key else v}\n" for k, v in {**GOOD, key: value}.items()))
    with pytest.raises(YamlFileError) as e:
        layouts.load_layout(path)
    assert str(e.value).startswith(str(path)) and message in str(e.value)
    with pytest.raises(KeyError, match="unknown layout 'nope'; known: .*softdimo_imagenet256"):
        layouts.load_layout("nope")


def test_softdimo_imagenet256_at_paper_scale_without_runs():
    t = layouts.build_layout(layouts.load_layout("softdimo_imagenet256"), frame([]), load_all(["papers"])[0])
    paper = [line for line in t.lines if line.kind == "paper"]
    assert [line.label for line in paper] == [
        "MaskBit (teacher)", "Di[M]O-MaskBit", "Soft-Di[M]O-MaskBit (Di[M]O + GAN)",
        "Soft-Di[M]O-MaskBit + longer training", "Di[M]O", "Soft-Di[M]O"]
    assert [paper[2].cells[h].value for h in ("FID", "IS", "Prec.", "Rec.")] == [1.96, 281.4, 0.84, 0.55]
    assert all(c.secondary for line in paper for c in line.cells.values())
    assert sum(line.kind == "no_run" for line in t.lines) == 6 and not t.deltas
    md = layouts.render_markdown(t)
    assert "| Soft-Di[M]O-MaskBit + longer training | 1 | **1.56†** | 273.2† |" in md   # the continuation
    assert "no run matches teacher=maskbit, method=dimo, relaxation=soft, refinement=gan, distill.optimizer=adamw" in md
    assert md.count("| ↳ ours [") == 6 and "no run matches teacher=maskbit, method=teacher_sampler, steps=64" in md



# A re-export of baselines/mini_reference.csv must not orphan a row of the mini layouts: every row
# that the main job (ablations/soft_vs_hard.yaml) fills finds its 3 stored seeds for every column.
def test_the_main_jobs_rows_of_the_mini_layouts_find_the_stored_mini_reference():
    stored = load_all(["mini_reference"])[0]
    for name in ("mini_c2i", "mini_t2i"):
        layout = layouts.load_layout(name)
        for row in (r for r in layout.rows if r.runs is not None and r.runs.get("method") == "dimo"):
            found = layouts.select_baselines(stored, {**layout.baselines, **row.paper})
            for col in layout.columns:
                assert len([b for b in found if b.metric == col.paper_metric]) == 3, (name, row.label, col.header)


#----------------------------------------------------------------------------
# LaTeX compiled by pdflatex: every layout (with runs for some of its rows) and the default tables.


def _runs_for(layout: layouts.Layout, baselines: list[Baseline]) -> list[dict]:
    # Three seeds of a group of runs for every other row with a run selector, each metric under the
    # protocol of the row's stored number (so that deltas are drawn), else the column's.
    rows = []
    for i, row in enumerate(r for r in layout.rows if r.runs is not None):
        if i % 2:
            continue
        found = layouts.select_baselines(baselines, {**layout.baselines, **(row.paper or {})})
        for col in layout.columns:
            stored = next((b for b in found if b.metric == col.paper_metric), None)
            protocol = dict(stored.protocol) if stored else {"name": col.protocol or col.metric}
            for seed in range(3):
                value = (stored.value if stored else 1.0) * (1 + 0.01 * (seed + i))
                r = run(str(row.runs.get("relaxation", "none")), seed, col.metric, value, protocol,
                        method=str(row.runs.get("method", "m")), steps=int(row.runs.get("steps", 1)),
                        teacher=str(row.runs["teacher"]))
                rows.append({**r, **row.runs, "group": f"{layout.name}:{i}", "label": f"{row.label} run",
                             "higher_is_better": col.higher_is_better})
    return rows


def _generated_tex(tmp_path: Path) -> dict[str, str]:
    from tests.harness.test_report import golden_rows
    stored = load_all()[0]
    out = {"default_toy": tables.render_latex(tables.build_tables(golden_rows()))}
    for name in layouts.layout_files():
        layout = layouts.load_layout(name)
        t = layouts.build_layout(layout, frame(_runs_for(layout, stored) + [b.row() for b in stored]), stored)
        assert any(line.kind == "run" for line in t.lines), name
        out[f"layout_{name}"] = layouts.render_latex(t)
        df = frame(_runs_for(layout, stored) + [b.row() for b in stored])
        out[f"default_{name}"] = tables.render_latex(tables.build_tables(df))
    return out


def _pdflatex() -> str:
    exe = shutil.which("pdflatex")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("pdflatex is not on PATH under CI=true; .ci/run installs texlive-latex-base and "
                        "texlive-latex-recommended")
        pytest.skip("pdflatex is not on PATH (apt-get install texlive-latex-base texlive-latex-recommended)")
    return exe


# One document \input-ting every generated table (each after a marker in the log), compiled once:
# it must compile, and no table may be wider than \textwidth (an overfull box after its marker).
def test_every_generated_table_compiles_and_fits(tmp_path):
    exe = _pdflatex()
    generated = _generated_tex(tmp_path)
    body = []
    for name, tex in generated.items():
        (tmp_path / f"{name}.tex").write_text(tex)
        body += [f"\\typeout{{TABLE {name}}}", f"\\input{{{name}.tex}}", "\\clearpage"]
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n" + latex.PREAMBLE + "\n\\begin{document}\n"
                                      + "\n".join(body) + "\n\\end{document}\n")
    done = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"pdflatex failed:\n{done.stdout[-3000:]}"
    log = (tmp_path / "doc.log").read_text(errors="replace")
    for part in log.split("TABLE ")[1:]:
        name = part.split()[0]
        assert "Overfull \\hbox" not in part, f"{name}: wider than \\textwidth:\n{generated[name]}"
    assert log.count("TABLE ") == len(generated) >= 11
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


def test_width_estimate_resizes_only_wide_tables():
    narrow = latex.booktabs_table("c", "l", ["A", "B"], "lr", [latex.TexLine(["x", "1.00"])])
    wide = latex.booktabs_table("c", "l", ["A"] * 12, "l" * 12, [latex.TexLine(["0.123 $\\pm$ 0.004"] * 12)])
    assert r"\resizebox" not in narrow and r"\resizebox{\textwidth}{!}{%" in wide
    assert latex.best_indices([1.0, None, 0.5, 0.5], higher=False) == {2, 3}
    assert latex.best_indices([1.04, 1.03], higher=True, precision=1) == {0, 1}      # a tie when printed
    assert [latex.note_mark(i) for i in (1, 26, 27)] == ["a", "z", "aa"]


def test_report_list_and_layout_options(tmp_path, capsys):
    assert report.main(["--list-layouts"]) == 0
    listed = capsys.readouterr().out
    assert "softdimo_imagenet256: Soft-Di[M]O (arXiv 2509.22925)" in listed and "mini_c2i" in listed
    results = tmp_path / "results"
    results.mkdir()
    out = tmp_path / "rep"
    assert report.main(["--results", str(results), "--out", str(out), "--layout", "softdimo_imagenet256",
                        "--metrics", "FID,inception_score"]) == 0
    md = (out / "tables" / "layout_softdimo_imagenet256.md").read_text()
    assert "| method | steps | FID ↓ | IS ↑ |" in md and "no run" in md
    assert (out / "tables" / "layout_softdimo_imagenet256.tex").is_file()
    assert "## Paper tables" in (out / "report.md").read_text()
    assert report.main(["--results", str(results), "--out", str(out), "--layout", "nope"]) == 2
    assert report.main(["--results", str(results), "--out", str(out), "--layout", "softdimo_imagenet256",
                        "--metrics", "nope"]) == 2
    assert "unknown metric(s) nope" in capsys.readouterr().err


def test_a_broken_layout_file_is_listed_not_fatal(tmp_path, monkeypatch):
    folder = tmp_path / "baselines"
    shutil.copytree(Path(layouts.__file__).resolve().parents[2] / "baselines", folder)
    (folder / "layouts" / "broken.yaml").write_text("title: t\npaper: p\ncolumns: []\nrows: [{label: A}]\n")
    monkeypatch.setenv("SOFTDIMO_BASELINES", str(folder))
    df = frame([run("hard", 0, "digits_fd", 20.0, {"name": "digits-fd"}, method="dimo", teacher="digits")])
    chosen, problems = report.chosen_layouts(df, [])
    assert [layout.name for layout in chosen] == ["mini_c2i"]
    assert problems == ["layout broken (layouts/broken.yaml, line 3): columns: expected a non-empty list"]

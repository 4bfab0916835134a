"""Grid files: expansion (products, lists of products, exclude, include, scales) and validation."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from harness import run
from harness.contracts import registry
from harness.grid import GridError, load_grid

HEAD = """
name: g
plugins: [toy_lab]
"""


def test_expansion_products_exclude_include_dedup(write_grid):
    path = write_grid(HEAD + """
matrix:
  - teacher: [toy]
    method: [toy_student]
    relaxation: [toy_hard, toy_soft]
    seed: [0, 1, 0]                 # the repeated seed collapses
    distill.steps: [5, 10]
  - teacher: [toy]
    method: [toy_sampler]
    seed: [0]
    sample.steps: [1, 2, 4]
params:
  eval.samples: 20
  relax.gumbel_tau: 1e-1            # YAML 1.2 float without a dot
exclude:
  - {relaxation: toy_hard, distill.steps: 10}
include:
  - {teacher: toy, method: toy_student, relaxation: toy_soft, refinement: toy_sharpen, seed: 7}
  - {teacher: toy, method: toy_sampler, seed: 0, sample.steps: 2}   # already in the matrix
""")
    grid = load_grid(path)
    cells = [(s.method, s.relaxation, s.refinement, s.seed, dict(s.params).get("distill.steps"),
              dict(s.params).get("sample.steps")) for s in grid.specs]
    assert cells == [
        ("toy_student", "toy_hard", "none", 0, 5, 16), ("toy_student", "toy_hard", "none", 1, 5, 16),
        ("toy_student", "toy_soft", "none", 0, 5, 16), ("toy_student", "toy_soft", "none", 0, 10, 16),
        ("toy_student", "toy_soft", "none", 1, 5, 16), ("toy_student", "toy_soft", "none", 1, 10, 16),
        ("toy_sampler", "none", "none", 0, None, 1), ("toy_sampler", "none", "none", 0, None, 2),
        ("toy_sampler", "none", "none", 0, None, 4),
        ("toy_student", "toy_soft", "toy_sharpen", 7, 20, 16)]
    assert len({s.run_id for s in grid.specs}) == len(grid.specs)
    student = grid.specs[0]
    assert student.param("relax.gumbel_tau") == 0.1
    assert student.param("eval.samples") == 20                  # grid params beat teacher defaults
    assert "distill.steps" not in dict(grid.specs[6].params)     # sampler cells do not read distill
    assert grid.specs[-1].param("toyref.strength") == 0.5        # the refinement's own stage
    assert grid.scale == "mini" and grid.plugins == ("toy_lab",) and grid.resources is None
    assert grid.descriptions()[0] == ("toy toy_student toy_hard s0 distill.steps=5 eval.samples=20 "
                                      "relax.gumbel_tau=0.1")


def test_scales_override_matrix_params_resources(write_grid):
    path = write_grid(HEAD + """
scale: mini
matrix:
  teacher: [toy]
  method: [toy_student]
  relaxation: [toy_hard, toy_soft]
  seed: [0]
params: {distill.steps: 5}
scales:
  mini:
    params: {eval.samples: 12}
    resources: laptop
  paper:
    matrix: {seed: [3, 4], relaxation: [toy_soft]}
    params: {distill.steps: 9}
""")
    mini = load_grid(path)
    assert [(s.relaxation, s.seed, s.param("eval.samples"), s.param("distill.steps"))
            for s in mini.specs] == [("toy_hard", 0, 12, 5), ("toy_soft", 0, 12, 5)]
    assert mini.resources == "laptop"
    # --scale paper: the scale's matrix sets its axes in every product and its params win. The toy
    # teacher runs at mini scale only, which is exactly what the error must say.
    with pytest.raises(GridError, match=r"runs at scale\(s\) mini, not 'paper'"):
        load_grid(path, scale="paper")


def test_scale_matrix_list_replaces_whole_matrix(write_grid):
    path = write_grid(HEAD + """
matrix: {teacher: [toy], method: [toy_student], relaxation: [toy_hard], seed: [0, 1]}
scales:
  mini:
    matrix:
      - {teacher: [toy], method: [toy_sampler], seed: [5], sample.steps: [2, 8]}
""")
    grid = load_grid(path)
    assert [(s.method, s.seed, s.param("sample.steps")) for s in grid.specs] == [
        ("toy_sampler", 5, 2), ("toy_sampler", 5, 8)]


def test_more_than_limit_allowed_with_flag(write_grid):
    seeds = ", ".join(str(i) for i in range(400))
    steps = ", ".join(str(i) for i in range(1, 252))
    path = write_grid(HEAD + f"""
matrix: {{teacher: [toy], method: [toy_sampler], seed: [{seeds}], sample.steps: [{steps}]}}
""")
    with pytest.raises(GridError, match="expands to 100,400 cells, more than 100,000"):
        load_grid(path)


#----------------------------------------------------------------------------
# Malformed grids: each problem is one `FILE:LINE: key: message` line, the CLI exits with 2
# without a traceback, and nothing is recorded.

MATRIX = "matrix: {teacher: [toy], method: [toy_student], relaxation: [toy_soft], seed: [0]}\n"
MALFORMED = [
    ("unknown-top-key", HEAD + "matrx: {teacher: [toy]}\n" + MATRIX,
     ":3: matrx: unknown top-level key (did you mean 'matrix'?); allowed: name, description"),
    ("duplicate-key", HEAD + MATRIX + "params: {eval.samples: 5}\nparams: {eval.samples: 6}\n",
     ":5: params: duplicate key (first given on line 4)"),
    ("bad-name", 'name: "my grid!"\nplugins: [toy_lab]\n' + MATRIX,
     ":1: name: 'my grid!' is not a valid grid name; allowed: letters, digits, '_' and '-'"),
    ("missing-name", "plugins: [toy_lab]\n" + MATRIX, ":1: name: missing"),
    ("reserved-name", "name: report\nplugins: [toy_lab]\n" + MATRIX, ":1: name: 'report' is reserved"),
    ("unknown-scale", HEAD + "scale: huge\n" + MATRIX,
     ":3: scale: unknown scale 'huge'; allowed: mini, paper"),
    ("unknown-teacher", HEAD + "matrix: {teacher: [toyy], method: [toy_sampler], seed: [0]}\n",
     ":3: matrix.teacher: unknown teacher 'toyy' (did you mean 'toy'?); allowed: "
     + ", ".join(registry.teachers.names())),
    ("unknown-axis", HEAD + "matrix: {teacher: [toy], method: [toy_student], relaxtion: [toy_soft], "
     "seed: [0]}\n",
     ":3: matrix.relaxtion: unknown axis (did you mean 'relaxation'?); allowed: teacher, method"),
    ("empty-axis", HEAD + "matrix:\n  teacher: [toy]\n  method: [toy_sampler]\n  seed: []\n",
     ":6: matrix.seed: empty axis: give at least one value"),
    ("axis-not-list", HEAD + "matrix:\n  teacher: [toy]\n  method: [toy_sampler]\n  seed: 0\n",
     ":6: matrix.seed: expected a list of values, got 0"),
    ("wrong-type", HEAD + MATRIX + "params:\n  distill.steps: many\n",
     ":5: params.distill.steps: expected an integer >= 1, got 'many'"),
    ("out-of-range", HEAD + MATRIX + "params:\n  distill.r_init: 1.5\n",
     ":5: params.distill.r_init: expected a number in [0.0, 1.0], got 1.5"),
    ("non-finite", HEAD + MATRIX + "params:\n  distill.beta: .nan\n",
     ":5: params.distill.beta: expected a finite number, got nan"),
    ("unknown-field", HEAD + MATRIX + "params:\n  distill.stepz: 3\n",
     ":5: params.distill.stepz: unknown parameter of stage 'distill' (did you mean 'steps'?); allowed: adam_beta1"),
    ("unknown-stage", HEAD + MATRIX + "params:\n  distil.steps: 3\n",
     ":5: params.distil.steps: unknown stage 'distil' (did you mean 'distill'?); allowed stages: distill, eval"),
    ("key-no-cell-reads", HEAD + "matrix: {teacher: [toy], method: [toy_sampler], seed: [0]}\n"
     "params:\n  distill.steps: 3\n",
     ":5: params.distill.steps: no cell reads this parameter (the cells' methods toy_sampler"),
    ("zero-cells", HEAD + MATRIX + "exclude:\n  - {seed: 0}\n",
     ":3: matrix: the grid expands to zero cells (after exclude)"),
    ("needs-gradient", HEAD + "matrix: {teacher: [toy], method: [toy_student], relaxation: [toy_hard], "
     "refinement: [toy_sharpen], seed: [0]}\n",
     ":3: matrix.refinement: refinement 'toy_sharpen' needs gradients through the generator's output, "
     "but relaxation 'toy_hard' passes none (sampled tokens are not differentiable); use relaxation "
     "gumbel or soft"),                    # then any plugin's differentiable relaxations
    ("relaxation-not-taken", HEAD + "matrix: {teacher: [toy], method: [toy_sampler], "
     "relaxation: [toy_soft], seed: [0]}\n",
     ":3: matrix.relaxation: method 'toy_sampler' takes no relaxation (got 'toy_soft'); allowed: none"),
    ("negative-seed", HEAD + "matrix: {teacher: [toy], method: [toy_sampler], seed: [-1]}\n",
     ":3: matrix.seed: expected a non-negative integer, got -1"),
    ("plugin-missing", "name: g\nplugins: [no_such_lab]\n" + MATRIX,
     ":2: plugins: plugin module 'no_such_lab' could not be imported"),
    ("yaml-syntax", HEAD + "matrix: {teacher: [toy]\n",
     ":4: YAML syntax error"),
    ("param-key-is-axis", HEAD + MATRIX + "params: {teacher: toy}\n",
     ":4: params.teacher: not a parameter key (axes go under matrix)"),
    ("exclude-not-axis", HEAD + MATRIX + "exclude:\n  - {distill.steps: 3}\n",
     ":5: exclude[0].distill.steps: not an axis of the matrix"),
    ("exclude-matches-nothing", HEAD + MATRIX + "exclude:\n  - {seed: 9}\n",
     ":5: exclude[0]: matches no cell of the matrix"),
    ("scales-unknown-key", HEAD + MATRIX + "scales:\n  mini:\n    resource: gpu\n",
     ":6: scales.mini.resource: unknown key (did you mean 'resources'?); allowed: matrix, params"),
    ("param-also-axis", HEAD + "matrix: {teacher: [toy], method: [toy_sampler], seed: [0], "
     "sample.steps: [1, 2]}\nparams: {sample.steps: 4}\n",
     ":4: params.sample.steps: also an axis of matrix, whose values would override it"),
    ("empty-file", "", ":1: the grid file is empty"),
    ("not-a-mapping", "- a\n- b\n", ":1: the grid file must be a mapping"),
    ("python-tag", HEAD + MATRIX + "description: !!python/object/apply:os.system ['touch {marker}']\n",
     ":4: YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed"),
]


@pytest.mark.parametrize("case,text,expected", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_grid_exit_2_message_no_record(case, text, expected, write_grid, tmp_path,
                                                 record_files):
    marker = tmp_path / "executed"
    path = write_grid(text.replace("{marker}", str(marker)))
    out, err = io.StringIO(), io.StringIO()
    results = tmp_path / "results"
    rc = run.main(["--grid", str(path), "--results", str(results), "--executor", "debug"], out, err)
    assert rc == 2
    assert f"{path}{expected}" in err.getvalue(), err.getvalue()
    assert "Traceback" not in err.getvalue()
    assert record_files(results) == []
    assert not marker.exists()


def test_cli_subprocess_bad_grid_no_traceback(write_grid, tmp_path):
    marker = tmp_path / "pwned"
    path = write_grid(HEAD + MATRIX + f"include: !!python/object/apply:os.system ['touch {marker}']\n")
    proc = subprocess.run([sys.executable, "-m", "harness.run", "--grid", str(path), "--results",
                           str(tmp_path / "r"), "--dry-run"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 2
    assert "is not allowed" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()
    assert not (tmp_path / "r").exists()


def test_all_problems_reported_together(write_grid):
    path = write_grid(HEAD + """
matrix: {teacher: [toy], method: [toy_student], relaxation: [toy_soft], seed: []}
foo: 1
params: {teacher: toy}
""")
    with pytest.raises(GridError) as e:
        load_grid(path)
    lines = [p.split(": ")[0].rsplit(":", 1)[1] for p in e.value.problems]
    assert lines == ["4", "5", "6"], e.value.problems


def test_every_independent_problem_of_a_grid_is_reported_at_once(write_grid, tmp_path):
    # An unknown teacher and an unknown relaxation, and a bad parameter value in the same entry:
    # three lines, one run (each axis value and each parameter is checked on its own).
    path = write_grid("""
        name: g
        matrix:
          teacher: [toyy]
          method: [toy_student]
          relaxation: [toy_sfot]
          seed: [0]
          distill.steps: [-1]
        """)
    with pytest.raises(GridError) as e:
        load_grid(path)
    text = "\n".join(e.value.problems)
    assert len(e.value.problems) == 3, text
    assert ":3: matrix.teacher: unknown teacher 'toyy' (did you mean 'toy'?)" in text
    assert ":5: matrix.relaxation: unknown relaxation 'toy_sfot' (did you mean 'toy_soft'?)" in text
    assert ":7: matrix.distill.steps: expected an integer >= 1, got -1" in text
    path = write_grid("""
        name: g
        matrix:
          teacher: [toy]
          method: [toy_student]
          relaxation: [toy_soft]
          seed: [0]
          distill.steps: [-1]
          eval.samples: [0]
        """, "two.yaml")
    with pytest.raises(GridError) as e:
        load_grid(path)
    assert [p.split(": ")[1] for p in e.value.problems] == ["matrix.distill.steps", "matrix.eval.samples"]


# A misspelt axis value hides no misspelt parameter of its entry, whichever axis it is: the method
# (every stage is a candidate), the relaxation or the teacher (the other stages are checked).
@pytest.mark.parametrize("entry, problems", [
    ("{teacher: [digits], method: [dimo], relaxation: [sotf], seed: [0], distill.stpes: [3]}",
     ["matrix.relaxation: unknown relaxation 'sotf' (did you mean 'soft'?)",
      "matrix.distill.stpes: unknown parameter of stage 'distill' (did you mean 'steps'?)"]),
    ("{teacher: [digitz], method: [dimo], relaxation: [soft], refinement: [gan], seed: [0], gan.weight: [-1]}",
     ["matrix.teacher: unknown teacher 'digitz' (did you mean 'digits'?)",
      "matrix.gan.weight: expected a number >= 0.0, got -1"]),
    ("{teacher: [digits], method: [dimoo], relaxation: [sotf], refinement: [gna], seed: [-1], eval.samplez: [9]}",
     ["matrix.method: unknown method 'dimoo' (did you mean 'dimo'?)", "matrix.seed: expected a non-negative",
      "matrix.relaxation: unknown relaxation 'sotf'", "matrix.refinement: unknown refinement 'gna'",
      "matrix.eval.samplez: unknown parameter of stage 'eval' (did you mean 'samples'?)"]),
])
def test_an_entry_with_several_problems_names_each(write_grid, entry, problems):
    with pytest.raises(GridError) as e:
        load_grid(write_grid(f"name: g\nmatrix: {entry}\n"))
    text = "\n".join(e.value.problems)
    assert len(e.value.problems) == len(problems), text
    assert all(p in text for p in problems), text


def test_a_cell_naming_a_relaxation_without_a_method_runs_dimo(write_grid, tmp_path):
    path = write_grid("""
        name: g
        matrix: {teacher: [digits], relaxation: [hard, soft], seed: [0]}
        """)
    grid = load_grid(path)
    assert {s.method for s in grid.specs} == {"dimo"}
    assert grid.notes == ("cells that name a relaxation or refinement without a method run method 'dimo'",)
    out, err = io.StringIO(), io.StringIO()
    assert run.main(["--grid", str(path), "--results", str(tmp_path / "r"), "--dry-run"], out, err) == 0
    assert "note: cells that name a relaxation or refinement without a method run method 'dimo'" in out.getvalue()
    path = write_grid("name: g\nmatrix: {teacher: [digits], seed: [0]}\n", "none.yaml")
    with pytest.raises(GridError, match="matrix.method: missing; every cell needs teacher, method and seed"):
        load_grid(path)


def test_compare_section_is_checked_and_a_scale_may_replace_it(write_grid):
    body = ("name: g\nplugins: [toy_lab]\n"
            "matrix: {teacher: [toy], method: [toy_student], relaxation: [toy_hard, toy_soft], seed: [0]}\n")
    grid = load_grid(write_grid(body + "compare: {reference: {relaxation: toy_hard}, within: [teacher]}\n"))
    assert grid.compare == {"reference": {"relaxation": "toy_hard"}, "within": ["teacher"]}
    with pytest.raises(GridError) as e:
        load_grid(write_grid(body + "compare:\n  reference: {relaxation: toy_sfot}\n", "nomatch.yaml"))
    assert e.value.problems[0].endswith(":5: compare.reference: matches no cell of the grid: "
                                        "{'relaxation': 'toy_sfot'}")
    with pytest.raises(GridError) as e:
        load_grid(write_grid(body + "compare:\n  reference: {relaxtion: toy_hard}\n  whithin: [teacher]\n",
                             "keys.yaml"))
    assert [p.split(": ", 1)[1] for p in e.value.problems] == [
        "compare.relaxtion: not an axis or parameter of the grid's cells (did you mean 'relaxation'?)",
        "compare.whithin: unknown key (did you mean 'within'?); allowed: reference, within"]
    scaled = body + ("compare: {reference: {relaxation: toy_hard}}\n"
                     "scales:\n  mini:\n    compare: {reference: {relaxation: toy_soft}}\n")
    assert load_grid(write_grid(scaled, "scaled.yaml")).compare["reference"] == {"relaxation": "toy_soft"}
    with pytest.raises(GridError, match="scales.mini.compare.reference: matches no cell"):
        load_grid(write_grid(scaled.replace("{relaxation: toy_soft}}\n", "{relaxation: none}}\n"), "bad.yaml"))

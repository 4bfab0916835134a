"""The glyphs world in the harness: listed with its metrics, its grids resolve, its cells default to
its metrics and its reference rungs build the world without training an MDM."""
from __future__ import annotations

import io
from pathlib import Path

from harness import run
from harness.contracts import registry
from harness.contracts.entries import RunContext
from harness.grid import load_grid
from harness.grid.spec import resolve_cell
from tests.conftest import TINY_GLYPHS

ABLATIONS = Path(__file__).resolve().parents[2] / "ablations"


def test_listed_with_its_metrics() -> None:
    for axis, names in (("teachers", ["glyphs "]), ("metrics", ["glyphs_fd", "glyphs_acc", "glyphs_pr",
                                                                 "glyphs_colour"])):
        out = io.StringIO()
        assert run.main(["--list", axis], out, io.StringIO()) == 0
        assert all(name in out.getvalue() for name in names), axis
    spec = resolve_cell({"teacher": "glyphs", "method": "dimo", "relaxation": "hard", "seed": 0}, "mini")
    assert spec.param("eval.metrics") == ("glyphs_fd", "glyphs_acc", "glyphs_pr", "glyphs_colour")
    assert all(registry.metrics.get(m).applies_to == ("glyphs",) for m in spec.param("eval.metrics"))


def test_grids_resolve() -> None:
    ladder = load_grid(ABLATIONS / "glyphs_ladder.yaml").specs
    assert len({s.run_id for s in ladder}) == len(ladder) == 4 * 3 + 2 * 3
    assert {s.teacher for s in ladder} == {"glyphs"}
    gan = load_grid(ABLATIONS / "glyphs_gan.yaml").specs
    assert len({s.run_id for s in gan}) == len(gan) == 9
    assert {(s.relaxation, s.refinement) for s in gan} == {("hard", "none"), ("gumbel", "gan"), ("soft", "gan")}


def test_reference_rungs_train_the_tokenizer_only(tmp_path: Path) -> None:
    cell = {f"teacher.{k}": v for k, v in TINY_GLYPHS.__dict__.items()}
    spec = resolve_cell({**cell, "teacher": "glyphs", "method": "real", "seed": 0, "eval.samples": 20}, "mini")
    ctx = RunContext(tmp_path / "run", tmp_path / "cache", log=lambda s: None)
    result = registry.methods.get("real").run(spec, ctx)
    assert result.samples.all_images().shape == (20, 3, 32, 32) and result.conditions == [i % 10 for i in range(20)]
    entries = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "cache" / "teachers").iterdir()
                     if not p.name.startswith("."))
    assert entries == ["glyphs-tokenizer"]

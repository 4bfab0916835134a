"""The glyphs world through `harness.run` at a tiny budget: Di[M]O, Gumbel-ST + GAN and soft + GAN
(the cells of ablations/glyphs_gan.yaml) and the reference rungs run, the GAN reads the world's real
tokens and the teacher's features, every metric carries its glyphs protocol, and the refined
cells continue the Di[M]O prefix of their seed."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from harness import run, store
from tests.conftest import TINY_GLYPHS

pytestmark = pytest.mark.slow                     # a whole grid through the command: a minute

TINY = {f"teacher.{k}": v for k, v in TINY_GLYPHS.__dict__.items()}
TINY.update({"distill.steps": 4, "distill.refine_start": 2, "distill.batch_size": 8, "eval.samples": 40,
             "eval.grid_images": 16, "gan.head_width": 16})
GRID = {
    "name": "glyphs_e2e",
    "description": "tiny glyphs pipeline",
    "matrix": [
        {"teacher": ["glyphs"], "method": ["dimo"], "relaxation": ["hard"], "seed": [0]},
        {"teacher": ["glyphs"], "method": ["dimo"], "relaxation": ["gumbel", "soft"], "refinement": ["gan"],
         "seed": [0]},
        {"teacher": ["glyphs"], "method": ["real", "uniform"], "seed": [0]},
    ],
    "params": TINY,
    "compare": {"reference": {"relaxation": "hard"}},
}


def test_gan_cells_and_rungs_run(tmp_path: Path, teacher_cache: Path, tiny_glyphs,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOFTDIMO_CACHE", str(teacher_cache))   # the session's tiny glyphs teacher
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID, sort_keys=False))
    out, err = io.StringIO(), io.StringIO()
    rc = run.main(["--grid", str(grid), "--results", str(tmp_path / "results"), "--executor", "debug"], out, err)
    assert rc == 0, out.getvalue() + err.getvalue()
    records, problems = store.scan(tmp_path / "results")
    assert problems == [] and len(records) == 5
    for r in records:
        assert r["status"] == "ok", r.get("error")
        assert set(r["metrics"]) == {"glyphs_fd", "glyphs_acc", "glyphs_precision", "glyphs_recall", "glyphs_colour"}
        assert all(v["protocol"]["name"].startswith("glyphs-") for v in r["metrics"].values())
    prefixes = [r["info"]["student"]["prefix"] for r in records if r["spec"]["refinement"] == "gan"]
    assert len(prefixes) == 2 and prefixes[0]["cache_key"] == prefixes[1]["cache_key"]
    assert sum(not p["cache_hit"] for p in prefixes) <= 1        # trained once (or by the hard cell), then continued

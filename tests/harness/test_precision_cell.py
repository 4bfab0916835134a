"""`distill.precision` in cells: the scale defaults (paper bf16 as the released runs, mini fp32 with
its run ids and students unchanged), a tiny bf16 cell end to end, and `--list params`."""
from __future__ import annotations

import io
import math
from pathlib import Path

import pytest

from harness import run
from harness.contracts.entries import RunContext
from harness.grid.spec import CellError, resolve_cell
from harness.methods import run_dimo
from harness.methods.students import student_key
from tests.conftest import TINY_TEACHER

TINY = {f"teacher.{k}": v for k, v in TINY_TEACHER.__dict__.items()}
DIGITS = {"teacher": "digits", "method": "dimo", "relaxation": "soft", "seed": 0, **TINY}


def test_paper_teachers_default_to_the_released_bf16_and_mini_stays_fp32() -> None:
    for teacher in ("maskbit", "maskgit", "maskgen", "meissonic"):
        spec = resolve_cell({"teacher": teacher, "method": "dimo", "relaxation": "hard", "seed": 0}, "paper")
        assert (spec.param("distill.precision"), spec.param("distill.adam_eps")) == ("bf16", 1e-6), teacher
        assert spec.to_json()["params"]["distill.precision"] == "bf16"
    mini = resolve_cell(DIGITS, "mini")
    assert mini.param("distill.precision") == "fp32" and "distill.precision" not in mini.to_json()["params"]
    bf16 = resolve_cell({**DIGITS, "distill.precision": "bf16"}, "mini")
    assert bf16.run_id != mini.run_id and student_key(bf16) != student_key(mini)
    with pytest.raises(CellError, match="distill.precision: expected one of 'fp32', 'bf16', 'tf32', got 'fp16'"):
        resolve_cell({**DIGITS, "distill.precision": "fp16"}, "mini")


def test_list_params_shows_precision() -> None:
    out = io.StringIO()
    assert run.main(["--list", "params"], out, io.StringIO()) == 0
    line = next(ln for ln in out.getvalue().splitlines() if ln.split()[0] == "distill.precision")
    assert line.split()[:4] == ["distill.precision", "str", "default", "fp32"]
    assert "one of 'fp32', 'bf16', 'tf32'" in line


@pytest.mark.parametrize("refinement, extra", [
    ("gan", {}),
    ("reward", {"reward.models": ["digits_reward"], "reward.weight": 0.1}),   # decoder and reward in fp32
])
def test_a_tiny_bf16_cell_runs(tmp_path: Path, teacher_cache: Path, tiny_teacher, refinement: str,
                               extra: dict) -> None:
    spec = resolve_cell({**DIGITS, "refinement": refinement, "distill.precision": "bf16", "distill.steps": 3,
                         "distill.batch_size": 8, "distill.refine_start": 0, "eval.samples": 20, **extra}, "mini")
    result = run_dimo(spec, RunContext(tmp_path / "run", teacher_cache, log=lambda s: None))
    assert result.info["precision"].startswith("bf16 autocast on cpu")
    assert result.info["steps"] == 3 and all(math.isfinite(v) for v in result.info["final_log"].values())
    images = result.samples.all_images()
    assert images.shape[0] == 20 and bool(images.isfinite().all())

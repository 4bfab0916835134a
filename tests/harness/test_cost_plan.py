"""The cost plan of `harness.run --dry-run` (harness/launch/cost_plan.py): accelerator-hours per cell and in
total from the step-cost table, shared students paid once, measured rows over estimates, cells that
cannot finish within the profile's limit, and bad tables refused with file, line and column."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from harness import run
from harness.grid import load_grid
from harness.grid.spec import resolve_cell
from harness.launch import cost_plan
from harness.launch.cost_plan import Resources, StepCost, StepCostError, load_table, plan_costs, write_rows
from tests.conftest import TINY_TEACHER

ROOT = Path(__file__).resolve().parents[2]
SOFT_VS_HARD = ROOT / "ablations" / "soft_vs_hard.yaml"
LINE = re.compile(r"^([0-9a-f]{16})  (\w+) +(.+?) +([0-9.]+) +([0-9.]+) +(\d+)(  .*)?$")


def _main(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return run.main(list(argv), out, err), out.getvalue(), err.getvalue()


def _cost_lines(out: str) -> dict[str, tuple[str, float, float, int, str]]:
    section = out[out.index("\ncost plan:"):]
    rows = {}
    for line in section.splitlines():
        if m := LINE.match(line):
            rows[m[1]] = (m[3].strip(), float(m[4]), float(m[5]), int(m[6]), (m[7] or "").strip())
    return rows


def _row(teacher: str, refinement: str = "none", precision: str = "bf16", gpu: str = "h100", **kw: object) -> StepCost:
    values = dict(batch=128, step_s=1.0, forward_1k_s=10.0, decode_1k_s=20.0, eval_1k_s=30.0, status="measured",
                  source="test")
    values.update(kw)
    return StepCost(teacher, refinement, precision, gpu, **values)  # type: ignore[arg-type]


def test_paper_dry_run_prints_accelerator_hours_per_cell_and_in_total(tmp_path: Path) -> None:
    rc, out, _ = _main("--grid", str(SOFT_VS_HARD), "--scale", "paper", "--dry-run", "--results", str(tmp_path))
    assert rc == 0
    grid = load_grid(SOFT_VS_HARD, scale="paper")
    rows = _cost_lines(out)
    assert set(rows) == {s.run_id for s in grid.specs}
    assert "cost plan: h100 GPUs (assumed" in out and "limit 4 h x (5 requeues + 1) = 24 h per cell" in out
    total = float(re.search(r"total: ([0-9.]+) accelerator-hours for 36 cell\(s\)", out)[1])
    assert total == pytest.approx(sum(r[1] for r in rows.values()), abs=0.05 * len(rows))
    # The first MaskBit cell, recomputed from its table row: 80k plain steps at the global batch 128
    # on one GPU, 50k one-step samples (forward + decode) and their metrics.
    table = load_table([cost_plan.TABLE])
    row = table[("maskbit", "none", "bf16", "h100")]
    hard = next(s for s in grid.specs if s.teacher == "maskbit" and s.relaxation == "hard")
    hours = (80_000 * row.step_s + 50 * (row.forward_1k_s + row.decode_1k_s + row.eval_1k_s)) / 3600
    assert rows[hard.run_id][0] == "maskbit dimo hard s0" and rows[hard.run_id][1] == pytest.approx(hours, abs=0.05)
    # The refined cells of seed 0 continue the hard cell's plain Di[M]O prefix (30k steps): each
    # trains only its own 50k refinement steps, at the refinement's step cost.
    gan = table[("maskbit", "gan", "bf16", "h100")]
    for spec in grid.specs:
        if spec.teacher == "maskbit" and spec.refinement == "gan" and spec.seed == 0:
            expected = (50_000 * gan.step_s + 50 * (row.forward_1k_s + row.decode_1k_s + row.eval_1k_s)) / 3600
            assert rows[spec.run_id][3] == 50_000 and rows[spec.run_id][1] == pytest.approx(expected, abs=0.05)
    assert "maskbit/gan/bf16/h100 (estimate): " in out and "TFLOP per image per step" in out


def test_precision_gpu_kind_and_the_time_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = ("--grid", str(SOFT_VS_HARD), "--scale", "paper", "--dry-run", "--results", str(tmp_path))
    _, bf16, _ = _main(*base)
    _, fp32, _ = _main(*base, "--set", "distill.precision=fp32")
    _, a100, _ = _main(*base, "--gpu-kind", "A100")
    total = lambda out: float(re.search(r"total: ([0-9.]+) accelerator-hours", out)[1])  # noqa: E731
    assert total(fp32) > 5 * total(bf16) and total(a100) > 2 * total(bf16)
    assert "cost plan: a100 GPUs (--gpu-kind)" in a100
    # strict float32 on an H100 needs days per cell: flagged against 4 h x (5 + 1)
    assert "CANNOT FINISH within the limit" in fp32 and re.search(r"\d+ cell\(s\) cannot finish within", fp32)
    assert "CANNOT FINISH" not in bf16
    # a profile naming a GPU kind in its constraint chooses it
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "site.yaml").write_text("timeout_min: 60\ngpus_per_node: 1\nmax_num_timeout: 0\n"
                                        "constraint: \"a100|h100\"\n")
    monkeypatch.setenv("SOFTDIMO_SLURM_PROFILES", str(profiles))
    _, site, _ = _main(*base, "--slurm-profile", "site")
    assert "cost plan: a100 GPUs (profile site's constraint 'a100|h100': the costliest of a100, h100)" in site
    assert "limit 1 h x (0 requeues + 1) = 1 h per cell" in site and "CANNOT FINISH" in site


def test_measured_rows_from_a_file_win_and_bad_files_are_refused(tmp_path: Path) -> None:
    measured = tmp_path / "gpu_smoke.csv"
    write_rows(measured, [_row("maskbit", step_s=0.25, batch=32, source="gpu_smoke on NVIDIA H100")])
    base = ("--grid", str(SOFT_VS_HARD), "--scale", "paper", "--dry-run", "--results", str(tmp_path))
    rc, out, _ = _main(*base, "--step-costs", str(measured))
    assert rc == 0 and "maskbit/none/bf16/h100 (measured): 0.25 s/step at 32 per GPU" in out
    hard = next(v for v in _cost_lines(out).values() if v[0] == "maskbit dimo hard s0")
    assert hard[1] == pytest.approx((80_000 * 0.25 * 128 / 32 + 50 * 60) / 3600, abs=0.05)
    # an estimate never replaces a measured row, whatever the order
    estimate = tmp_path / "estimate.csv"
    write_rows(estimate, [_row("maskbit", step_s=9.0, status="estimate")])
    assert load_table([measured, estimate])[("maskbit", "none", "bf16", "h100")].step_s == 0.25
    bad = tmp_path / "bad.csv"
    bad.write_text(measured.read_text().replace("0.25", "fast"))
    rc, _, err = _main(*base, "--step-costs", str(bad))
    assert rc == 2 and f"{bad}:2: step_s: expected a number, got 'fast'" in err
    bad.write_text(measured.read_text().replace("measured", "guessed"))
    with pytest.raises(StepCostError, match=r"bad.csv:2: status: expected one of measured, estimate, got 'guessed'"):
        load_table([bad])
    bad.write_text("teacher,gpu\nmaskbit,h100\n")
    with pytest.raises(StepCostError, match="missing column"):
        load_table([bad])
    rc, _, err = _main(*base, "--gpu-kind", "b200")
    assert rc == 2 and "--gpu-kind b200: the step-cost table has no row for it; allowed: a100, h100, h200" in err


def test_shared_students_are_paid_once_and_missing_rows_are_said() -> None:
    tiny = {f"teacher.{k}": v for k, v in TINY_TEACHER.__dict__.items()}
    cell = {"teacher": "digits", "method": "dimo", "seed": 0, "distill.steps": 100, "distill.batch_size": 64,
            "eval.samples": 1000, **tiny}
    hard = resolve_cell({**cell, "relaxation": "hard"}, "mini")
    gumbel = resolve_cell({**cell, "relaxation": "gumbel"}, "mini")      # trains exactly hard's student
    gan = resolve_cell({**cell, "relaxation": "soft", "refinement": "gan", "distill.refine_start": 40}, "mini")
    sampler = resolve_cell({**cell, "method": "teacher_sampler", "sample.steps": 8, "sample.cfg": 2.0}, "mini")
    table = {r.key: r for r in (_row("digits", precision="fp32", batch=32), _row("digits", "gan", "fp32", step_s=3.0, batch=32))}
    res = Resources(world_size=2, gpu="h100", gpu_source="test", limit_s=200.0)
    costs = plan_costs([(hard, "pending"), (gumbel, "pending"), (gan, "pending"), (sampler, "pending")], table, res)
    per_gpu = 64 / 2 / 32                                    # the table's step is at 32 images per GPU
    sample = (10.0 + 20.0) / 2 + 30.0                        # 1k images: forward + decode split, metrics on one
    assert [c.steps for c in costs] == [100, 0, 100, 0]
    assert costs[0].wall_s == pytest.approx(100 * 1.0 * per_gpu + sample)
    assert costs[1].wall_s == pytest.approx(sample)          # hard's student, sampled again
    assert costs[2].wall_s == pytest.approx(40 * 1.0 * per_gpu + 60 * 3.0 * per_gpu + sample)
    assert costs[3].wall_s == pytest.approx(8 * 2 * 10.0 / 2 + 20.0 / 2 + 30.0)
    assert costs[0].accelerator_hours == pytest.approx(2 * costs[0].wall_s / 3600)
    assert [c.over_limit for c in costs] == [False, False, True, False]
    del table[("digits", "gan", "fp32", "h100")]
    missing = plan_costs([(gan, "pending")], table, res)[0]
    assert missing.wall_s is None and missing.missing == "no step-cost row for digits/gan/fp32/h100"


def test_mini_dry_run_prints_no_cost_plan(tmp_path: Path) -> None:
    rc, out, _ = _main("--grid", str(SOFT_VS_HARD), "--dry-run", "--results", str(tmp_path))
    assert rc == 0 and "cost plan" not in out and out.splitlines()[-1] == "18 pending"

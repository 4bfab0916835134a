"""The rungs of a class-conditional world's calibration ladder, each run as its method runs it and
scored by every metric of its cell (the ladder tests of digits and glyphs)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.contracts import registry
from harness.contracts.entries import EvalInput, RunContext
from harness.grid.spec import resolve_cell

# The rungs in ladder order (best first), as cell keys: the teacher's own sampler at K = 16.
RUNGS: dict[str, dict[str, Any]] = {
    "real": {"method": "real"},
    "teacher": {"method": "teacher_sampler", "sample.steps": 16},
    "marginals_class": {"method": "marginals_class"},
    "marginals_uncond": {"method": "marginals_uncond"},
    "uniform": {"method": "uniform"},
}


# The metric values of one cell (`budget` with `cell` over it), its run under `tmp`, the teacher from `cache`.
def rung_metrics(budget: dict[str, Any], cell: dict[str, Any], cache: Path, tmp: Path) -> dict[str, float]:
    spec = resolve_cell({**budget, **cell}, "mini")
    ctx = RunContext(tmp / spec.run_id, cache, log=lambda s: None)
    result = registry.methods.get(spec.method).run(spec, ctx)
    values: dict[str, float] = {}
    for name in spec.param("eval.metrics"):
        inp = EvalInput(spec, result.teacher, result.samples.all_images(), result.conditions,
                        result.samples.all_tokens())
        values.update({k: v.value for k, v in registry.metrics.get(name).compute(inp, ctx).items()})
    return values

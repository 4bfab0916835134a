"""What a cell computes; this module: the built-in methods, how a cell produces its samples (the
package beside it: students, samples, scoring, metrics, references).

- `dimo`: one-step distillation of the teacher (Di[M]O with the cell's relaxation and refinement),
  then one-step sampling with the EMA generator (optionally with TTEO and best-of-N,
  `sample.tteo_*`, `sample.best_of_n`); `distill.eval_every` adds metric curves over steps.
  Students, their curves and their caches live in `harness/methods/students.py`.
- `teacher_sampler`: the teacher's own K-step sampler (`sample.steps`, `sample.cfg`).
The reference rungs of the calibration ladders (real data, marginals, uniform tokens) are methods
too; they live in `harness/methods/references.py`.

Every image i of a run draws from its own random stream (`ImageNoise(seed, i)`), so samples do not
depend on batch size or hardware count.
"""
from __future__ import annotations

import time
from typing import Any

from harness.contracts.entries import MethodResult, MetricValue, RunContext
from harness.grid.spec import NONE, EvalConfig, RunSpec
from harness.methods.students import (batched_samples, build_teacher, cost_metrics, dimo_samples, distil_student,
                              test_time_info)
from harness.store.stages import weights_digest
from softdimo.config import DistillConfig, SampleConfig
from softdimo.precision import effective_precision
from softdimo.teachers.base import derive_seed

#----------------------------------------------------------------------------


# dimo: distil the teacher into a one-step generator (or reuse the cached student), then sample it.
def run_dimo(spec: RunSpec, ctx: RunContext) -> MethodResult:
    teacher, teacher_s = build_teacher(spec, ctx)
    sample = spec.stage("sample", SampleConfig)
    start = time.perf_counter()
    ema, student = distil_student(spec, teacher, ctx)
    distill_s = time.perf_counter() - start - (0.0 if student["cache_hit"] else student["curve_s"])

    start = time.perf_counter()
    samples, cost, selection = dimo_samples(spec, teacher, ctx, ema)
    sample_s = time.perf_counter() - start
    last = student["final_log"]
    info: dict[str, Any] = {"teacher": teacher.info, "final_divergence": last["divergence"],
                            "final_aux_loss": last["aux_loss"], "steps": student["steps"], "final_log": last,
                            "student": {k: student[k] for k in ("cache_key", "cache_hit", "trained_as", "distill_s",
                                                                "curve_s", "prefix")},
                            "precision": effective_precision(spec.stage("distill", DistillConfig).precision,
                                                             ctx.device)}
    extra: dict[str, MetricValue] = {}
    if cost is not None:
        info["test_time"] = test_time_info(sample, cost)
        extra = cost_metrics(cost, str(ctx.device))
    stages = {"teacher_s": teacher_s, "distill_s": distill_s, "sample_s": sample_s}
    if student["curves"] and not student["cache_hit"]:
        stages["curve_s"] = student["curve_s"]
    parent = student.get("init_from")
    if parent:
        info["student"]["init_from"] = parent
    return MethodResult(None, samples.conditions, samples=samples, extra_metrics=extra, curves=student["curves"],
                        teacher=teacher, info=info, stage_seconds=stages, selection=selection,
                        stage_hashes=_hashes(teacher=teacher_weights(teacher), student=weights_digest(ema)),
                        provenance={"init_from": parent} if parent else {})


# teacher_sampler: the teacher's own K-step sampler.
def run_teacher_sampler(spec: RunSpec, ctx: RunContext) -> MethodResult:
    teacher, teacher_s = build_teacher(spec, ctx)
    sample = spec.stage("sample", SampleConfig)
    n = spec.stage("eval", EvalConfig).samples
    start = time.perf_counter()
    samples = batched_samples(
        teacher, n, derive_seed(spec.seed, "sample"), ctx,
        lambda cond, noise: teacher.sample(cond, sample.steps, sample.cfg, noise, sample.temperature,
                                           sample.choice_temperature))
    return MethodResult(None, samples.conditions, samples=samples, teacher=teacher, info={"teacher": teacher.info},
                        stage_seconds={"teacher_s": teacher_s, "sample_s": time.perf_counter() - start},
                        stage_hashes=_hashes(teacher=teacher_weights(teacher)))


# The digest of a teacher's network weights (harness.store.stages), None for a teacher without one.
def teacher_weights(teacher: Any) -> str | None:
    return weights_digest(getattr(teacher, "network", None))


def _hashes(**digests: str | None) -> dict[str, str]:
    return {k: v for k, v in digests.items() if v is not None}


#----------------------------------------------------------------------------
# Report labels.


# "Di[M]O (soft)", "Di[M]O (soft) + gan", ...
def dimo_label(spec: RunSpec) -> str:
    label = f"Di[M]O ({spec.relaxation})"
    return label + (f" + {spec.refinement}" if spec.refinement != NONE else "")


# "teacher K=16", "teacher K=8 cfg=2".
def teacher_label(spec: RunSpec) -> str:
    cfg = spec.param("sample.cfg")
    return f"teacher K={spec.param('sample.steps')}" + (f" cfg={cfg:g}" if cfg != 1.0 else "")


"""The built-in methods: how a cell produces its samples.

- `dimo`: one-step distillation of the teacher (Di[M]O with the cell's relaxation and refinement),
  then one-step sampling with the EMA generator (optionally with TTEO and best-of-N,
  `sample.tteo_*`, `sample.best_of_n`); `distill.eval_every` adds metric curves over steps.
  Students, their curves and their caches live in `harness/students.py`.
- `teacher_sampler`: the teacher's own K-step sampler (`sample.steps`, `sample.cfg`).
- `real`, `marginals_class`, `marginals_uncond`, `uniform`: the reference rungs of the calibration
  ladder — real training images, independent per-pixel (per-slot) draws from the class-conditional
  and the unconditional token frequencies of the training split, and uniform tokens.

Every image i of a run draws from its own random stream (`ImageNoise(seed, i)`), so samples do not
depend on batch size or hardware count.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch import Tensor

from harness import registry
from harness.entries import MethodResult, MetricValue, RunContext
from harness.spec import NONE, EvalConfig, RunSpec
from harness.students import (batched_samples, build_teacher, cost_metrics, dimo_samples, distil_student,
                              test_time_info)
from softdimo.config import SampleConfig
from softdimo.teachers.base import ImageNoise, Teacher, derive_seed

#----------------------------------------------------------------------------


# dimo: distil the teacher into a one-step generator (or reuse the cached student), then sample it.
def run_dimo(spec: RunSpec, ctx: RunContext) -> MethodResult:
    teacher, teacher_s = build_teacher(spec, ctx)
    sample = spec.stage("sample", SampleConfig)
    start = time.perf_counter()
    ema, student = distil_student(spec, teacher, ctx)
    distill_s = time.perf_counter() - start - (0.0 if student["cache_hit"] else student["curve_s"])

    start = time.perf_counter()
    tokens, images, conditions, cost = dimo_samples(spec, teacher, ctx, ema)
    sample_s = time.perf_counter() - start
    last = student["final_log"]
    info: dict[str, Any] = {"teacher": teacher.info, "final_divergence": last["divergence"],
                            "final_aux_loss": last["aux_loss"], "steps": student["steps"], "final_log": last,
                            "student": {k: student[k] for k in ("cache_key", "cache_hit", "trained_as", "distill_s",
                                                                "curve_s", "prefix")}}
    extra: dict[str, MetricValue] = {}
    if cost is not None:
        info["test_time"] = test_time_info(sample, cost)
        extra = cost_metrics(cost, str(ctx.device))
    stages = {"teacher_s": teacher_s, "distill_s": distill_s, "sample_s": sample_s}
    if student["curves"] and not student["cache_hit"]:
        stages["curve_s"] = student["curve_s"]
    return MethodResult(images, conditions, tokens, extra_metrics=extra, curves=student["curves"],
                        teacher=teacher, info=info, stage_seconds=stages)


# teacher_sampler: the teacher's own K-step sampler.
def run_teacher_sampler(spec: RunSpec, ctx: RunContext) -> MethodResult:
    teacher, teacher_s = build_teacher(spec, ctx)
    sample = spec.stage("sample", SampleConfig)
    n = spec.stage("eval", EvalConfig).samples
    start = time.perf_counter()
    tokens, images, conditions = batched_samples(
        teacher, n, derive_seed(spec.seed, "sample"), ctx,
        lambda cond, noise: teacher.sample(cond, sample.steps, sample.cfg, noise, sample.temperature,
                                           sample.choice_temperature))
    return MethodResult(images, conditions, tokens, teacher=teacher, info={"teacher": teacher.info},
                        stage_seconds={"teacher_s": teacher_s, "sample_s": time.perf_counter() - start})


#----------------------------------------------------------------------------
# Reference rungs of the calibration ladder.


def _class_real_tokens(teacher: Teacher) -> tuple[Tensor, Tensor]:
    real = teacher.real_tokens()
    if real is None or teacher.condition_kind != "class":
        raise ValueError(f"teacher {teacher.name!r} has no class-labelled real data for this baseline")
    tokens, raw = real
    return tokens, torch.as_tensor([int(r) for r in raw])


# Independent per-slot draws from frequency tables [classes, L, G, C] indexed by the condition.
def _draw_from_frequencies(freq: Tensor, cond_index: Tensor, noise: ImageNoise) -> Tensor:
    cdf = freq[cond_index].cumsum(-1)
    u = noise.rand(*freq.shape[1:-1])
    return (u[..., None] > cdf).sum(-1).clamp(max=freq.shape[-1] - 1)


def _reference_run(spec: RunSpec, ctx: RunContext,
                   draw: Callable[[Teacher, Any, ImageNoise], Tensor]) -> MethodResult:
    start = time.perf_counter()
    entry = registry.teachers.get(spec.teacher)
    config = spec.stage("teacher", entry.config_cls)
    teacher = entry.build_world(config, ctx) if entry.build_world else entry.build(config, ctx)
    teacher_s = time.perf_counter() - start
    n = spec.stage("eval", EvalConfig).samples
    start = time.perf_counter()
    tokens, images, conditions = batched_samples(teacher, n, derive_seed(spec.seed, "sample"), ctx,
                                                 lambda cond, noise: draw(teacher, cond, noise))
    return MethodResult(images, conditions, tokens, teacher=teacher,
                        stage_seconds={"teacher_s": teacher_s, "sample_s": time.perf_counter() - start})


# real: for image i with label c, a training image of class c drawn from image i's stream.
def run_real(spec: RunSpec, ctx: RunContext) -> MethodResult:
    def draw(teacher: Teacher, cond: Any, noise: ImageNoise) -> Tensor:
        tokens, labels = _class_real_tokens(teacher)
        pools = [torch.nonzero(labels == c)[:, 0] for c in range(int(labels.max()) + 1)]
        u = noise.rand(1)[:, 0]
        picks = [pools[c][int(ui * len(pools[c]))] for c, ui in zip(cond.tensors["labels"].tolist(), u)]
        return tokens[torch.stack(picks)]
    return _reference_run(spec, ctx, draw)


# marginals_class: every slot drawn independently from its class-conditional frequency.
def run_marginals_class(spec: RunSpec, ctx: RunContext) -> MethodResult:
    def draw(teacher: Teacher, cond: Any, noise: ImageNoise) -> Tensor:
        tokens, labels = _class_real_tokens(teacher)
        c = teacher.layout.classes
        freq = torch.stack([torch.nn.functional.one_hot(tokens[labels == k], c).float().mean(0)
                            for k in range(int(labels.max()) + 1)])
        return _draw_from_frequencies(freq, cond.tensors["labels"], noise)
    return _reference_run(spec, ctx, draw)


# marginals_uncond: every slot drawn independently from its unconditional frequency.
def run_marginals_uncond(spec: RunSpec, ctx: RunContext) -> MethodResult:
    def draw(teacher: Teacher, cond: Any, noise: ImageNoise) -> Tensor:
        tokens, _ = _class_real_tokens(teacher)
        freq = torch.nn.functional.one_hot(tokens, teacher.layout.classes).float().mean(0, keepdim=True)
        return _draw_from_frequencies(freq, torch.zeros(len(noise), dtype=torch.long), noise)
    return _reference_run(spec, ctx, draw)


# uniform: every slot uniform over its classes.
def run_uniform(spec: RunSpec, ctx: RunContext) -> MethodResult:
    def draw(teacher: Teacher, cond: Any, noise: ImageNoise) -> Tensor:
        layout = teacher.layout
        return noise.randint(layout.classes, layout.positions, layout.groups)
    return _reference_run(spec, ctx, draw)


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


REFERENCE_LABELS: dict[str, str] = {
    "real": "real (train split)", "marginals_class": "class-conditional marginals",
    "marginals_uncond": "unconditional marginals", "uniform": "uniform tokens",
}

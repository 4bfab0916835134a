"""The built-in methods: how a cell produces its samples.

- `dimo`: one-step distillation of the teacher (Di[M]O with the cell's relaxation and refinement),
  then one-step sampling with the EMA generator.
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

from harness import preemption, registry
from harness.entries import MethodResult, RunContext
from harness.spec import NONE, EvalConfig, RunSpec
from softdimo.config import DistillConfig, RelaxConfig, SampleConfig
from softdimo.teachers.base import ImageNoise, Teacher, derive_seed
from softdimo.train import Distiller, generate, run_distillation, save_checkpoint

SAMPLE_BATCH = 500

#----------------------------------------------------------------------------


# Build (or load from the cache) the cell's teacher; returns it and the seconds it took.
def build_teacher(spec: RunSpec, ctx: RunContext) -> tuple[Teacher, float]:
    start = time.perf_counter()
    entry = registry.teachers.get(spec.teacher)
    teacher = entry.build(spec.stage("teacher", entry.config_cls), ctx)
    return teacher, time.perf_counter() - start


# Produce `n` samples in batches: `draw(cond, noise) -> tokens [b, L, G]` with per-image noise,
# decoded with their conditions. Returns tokens, images and the raw conditions.
@torch.no_grad()
def batched_samples(teacher: Teacher, n: int, seed: int, ctx: RunContext,
                    draw: Callable[[Any, ImageNoise], Tensor]) -> tuple[Tensor, Tensor, list[Any]]:
    conditions = teacher.eval_conditions(n)
    tokens, images = [], []
    for start in range(0, n, SAMPLE_BATCH):
        idx = range(start, min(n, start + SAMPLE_BATCH))
        cond = teacher.encode_condition(conditions[idx.start:idx.stop]).to(ctx.device)
        batch = draw(cond, ImageNoise(seed, idx, ctx.device))
        tokens.append(batch.cpu())
        images.append(teacher.decode(batch, cond).cpu())
    return torch.cat(tokens), torch.cat(images), conditions


#----------------------------------------------------------------------------


# dimo: distil the teacher into a one-step generator, then sample it.
def run_dimo(spec: RunSpec, ctx: RunContext) -> MethodResult:
    teacher, teacher_s = build_teacher(spec, ctx)
    distill, sample = spec.stage("distill", DistillConfig), spec.stage("sample", SampleConfig)
    n = spec.stage("eval", EvalConfig).samples
    relax = registry.relaxations.get(spec.relaxation)
    refinement = None
    if spec.refinement != NONE:
        entry = registry.refinements.get(spec.refinement)
        config = spec.stage(entry.stage, entry.config_cls) if entry.stage else None
        refinement = entry.build(config, teacher, ctx)
    distiller = Distiller(teacher, relax.fn, spec.stage("relax", RelaxConfig), distill,
                          seed=derive_seed(spec.seed, "distill"), refinement=refinement, device=ctx.device)
    start = time.perf_counter()
    checkpoint = ctx.checkpoint_dir / "distill.pt"

    def save_on_signal(d: Distiller) -> None:
        save_checkpoint(d.state_dict(), checkpoint)
        ctx.log(f"preemption signal: checkpoint saved at distill step {d.step}; requeueing")

    with preemption.safe_points() as safe_point:   # a SLURM signal saves at the next step boundary
        run_distillation(distiller, checkpoint=checkpoint, log=ctx.log,
                         on_step=lambda d: safe_point(lambda: save_on_signal(d)))
    distill_s = time.perf_counter() - start

    start = time.perf_counter()
    tokens, images, conditions = batched_samples(
        teacher, n, derive_seed(spec.seed, "sample"), ctx,
        lambda cond, noise: generate(distiller.ema, cond, noise, distill.r_init, distill.sigma_init,
                                     sample.temperature)[0])
    sample_s = time.perf_counter() - start
    last = distiller.history[-1]
    info = {"teacher": teacher.info, "final_divergence": last["divergence"], "final_aux_loss": last["aux_loss"],
            "steps": distiller.step}
    return MethodResult(images, conditions, tokens, teacher=teacher, info=info,
                        stage_seconds={"teacher_s": teacher_s, "distill_s": distill_s, "sample_s": sample_s})


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

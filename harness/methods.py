"""The built-in methods: how a cell produces its samples.

- `dimo`: one-step distillation of the teacher (Di[M]O with the cell's relaxation and refinement),
  then one-step sampling with the EMA generator (optionally with TTEO and best-of-N,
  `sample.tteo_*`, `sample.best_of_n`); `distill.eval_every` adds metric curves over steps.
  Trained students are cached by the parameters that determine them (`student_key`), so cells
  that differ only in how they sample (best-of-N, TTEO, sample counts) train once.
- `teacher_sampler`: the teacher's own K-step sampler (`sample.steps`, `sample.cfg`).
- `real`, `marginals_class`, `marginals_uncond`, `uniform`: the reference rungs of the calibration
  ladder — real training images, independent per-pixel (per-slot) draws from the class-conditional
  and the unconditional token frequencies of the training split, and uniform tokens.

Every image i of a run draws from its own random stream (`ImageNoise(seed, i)`), so samples do not
depend on batch size or hardware count.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from harness import preemption, registry
from harness.entries import EvalInput, MethodResult, MetricValue, RunContext
from harness.spec import NONE, EvalConfig, RunSpec
from softdimo.config import DistillConfig, RelaxConfig, SampleConfig
from softdimo.refine.reward import RewardFn, weighted_reward
from softdimo.refine.tteo import TTSCost, TTSSettings, sample_test_time
from softdimo.teachers.base import ImageNoise, Teacher, derive_seed
from softdimo.teachers.cache import cached_dir
from softdimo.train import Distiller, Refinement, generate, run_distillation, save_checkpoint

SAMPLE_BATCH = 500
STUDENT_CODE_VERSION = "dimo-student-2"   # bump when training code changes what a student key produces

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


# The reward callables `(images, cond) -> [B]` named in a configuration, built for this teacher.
def build_rewards(names: Sequence[str], teacher: Teacher, ctx: RunContext) -> dict[str, RewardFn]:
    return {name: registry.rewards.get(name).build(teacher, ctx) for name in names}


# The sum of several reward models (weight 1 each) as one reward callable.
def summed_reward(rewards: dict[str, RewardFn]) -> RewardFn:
    return lambda images, cond: weighted_reward(rewards, [1.0] * len(rewards), images, cond)[0]


# The cell's refinement object (None without one), seeded from the run's seed.
def build_refinement(spec: RunSpec, teacher: Teacher, ctx: RunContext) -> Refinement | None:
    if spec.refinement == NONE:
        return None
    entry = registry.refinements.get(spec.refinement)
    config = spec.stage(entry.stage, entry.config_cls) if entry.stage else None
    return entry.build(config, teacher, ctx, derive_seed(spec.seed, "refinement"))


# Every metric of the cell on one set of samples, as {value name: MetricValue}.
def evaluate(spec: RunSpec, teacher: Teacher, ctx: RunContext, images: Tensor, conditions: list[Any],
             tokens: Tensor | None) -> dict[str, MetricValue]:
    values: dict[str, MetricValue] = {}
    for name in spec.param("eval.metrics"):
        values.update(registry.metrics.get(name).compute(EvalInput(spec, teacher, images, conditions, tokens), ctx))
    return values


# Metrics over training steps (`distill.eval_every`): a fixed evaluation set (`eval.curve_samples`
# conditions, its own per-image streams, never the training stream) sampled with the EMA generator.
# Points are kept in `checkpoints/curves.json`, so a resumed run keeps the points it had; a point is
# replaced when its step is evaluated again (deterministic, so with the same value).
class TrainingCurves:
    def __init__(self, spec: RunSpec, teacher: Teacher, ctx: RunContext):
        self.spec, self.teacher, self.ctx = spec, teacher, ctx
        self.distill = spec.stage("distill", DistillConfig)
        self.samples = spec.stage("eval", EvalConfig).curve_samples
        self.path = ctx.checkpoint_dir / "curves.json"
        self.points: dict[str, list[tuple[int, float]]] = {}
        if self.path.is_file():
            self.points = {k: [tuple(p) for p in v] for k, v in json.loads(self.path.read_text()).items()}
        self.seconds = 0.0

    # Evaluate the EMA generator at `step` (the `on_eval` callback of run_distillation).
    def record(self, step: int, distiller: Distiller) -> None:
        start = time.perf_counter()
        d = self.distill
        tokens, images, conditions = batched_samples(
            self.teacher, self.samples, derive_seed(self.spec.seed, "curve"), self.ctx,
            lambda cond, noise: generate(distiller.ema, cond, noise, d.r_init, d.sigma_init)[0])
        values = evaluate(self.spec, self.teacher, self.ctx, images, conditions, tokens)
        for name, v in values.items():
            kept = [p for p in self.points.get(name, []) if p[0] < step]
            self.points[name] = kept + [(step, v.value)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.points))
        os.replace(tmp, self.path)
        self.seconds += time.perf_counter() - start


# Test-time scaling settings of a sample configuration.
def test_time_settings(sample: SampleConfig) -> TTSSettings:
    return TTSSettings(steps=sample.tteo_steps, lr=sample.tteo_lr, proximity=sample.tteo_proximity,
                            best_of_n=sample.best_of_n, chunk=sample.tteo_batch)


# One-step samples of a generator: plain, or with TTEO / best-of-N (`sample.*`); returns the tokens,
# images, conditions and, with test-time scaling, its cost.
def dimo_samples(spec: RunSpec, teacher: Teacher, ctx: RunContext, generator: torch.nn.Module
                 ) -> tuple[Tensor, Tensor, list[Any], TTSCost | None]:
    distill, sample = spec.stage("distill", DistillConfig), spec.stage("sample", SampleConfig)
    n, seed = spec.stage("eval", EvalConfig).samples, derive_seed(spec.seed, "sample")
    settings = test_time_settings(sample)
    if settings.steps == 0 and settings.best_of_n == 1:
        out = batched_samples(teacher, n, seed, ctx, lambda cond, noise: generate(
            generator, cond, noise, distill.r_init, distill.sigma_init, sample.temperature)[0])
        return (*out, None)
    tteo_reward = summed_reward(build_rewards(sample.tteo_reward, teacher, ctx)) if settings.steps else None
    select = summed_reward(build_rewards(sample.select_reward, teacher, ctx)) if settings.best_of_n > 1 else None
    cost = TTSCost()
    out = batched_samples(teacher, n, seed, ctx, lambda cond, noise: sample_test_time(
        generator, teacher, cond, noise, distill.r_init, distill.sigma_init, sample.temperature, settings,
        tteo_reward, select, cost))
    return (*out, cost)


def _cost_metrics(cost: TTSCost, sample: SampleConfig, device: str) -> dict[str, MetricValue]:
    per = cost.per_image()
    return {"generator_evals_per_image": MetricValue(per["generator_forwards"], False,
                                                     {"name": "generator-forward-passes-per-image"}),
            "sample_seconds_per_image": MetricValue(per["seconds"], False,
                                                    {"name": "sampling-seconds-per-image", "device": device})}


# The relaxation a dimo cell's student trains with: its `forward_as` relaxation when no refinement
# needs gradients through it (the same forward values, hence bit-identical updates), else its own.
def trained_relaxation(spec: RunSpec) -> str:
    entry = registry.relaxations.get(spec.relaxation)
    gradient = spec.refinement != NONE and registry.refinements.get(spec.refinement).needs_gradient
    return entry.forward_as if entry.forward_as and not gradient else spec.relaxation


# The parameters that determine a dimo cell's trained student: teacher, the relaxation it trains
# with (and the `relax.*` keys that one reads), refinement, seed, the teacher / distill /
# refinement stages, and the curve settings when curves are drawn. Cells that differ only in
# sampling (`sample.*`, `eval.samples`, other metrics), or only by a `forward_as` relaxation, share it.
def student_key(spec: RunSpec) -> str:
    relaxation = trained_relaxation(spec)
    relax_keys = registry.relaxations.get(relaxation).params
    stages = ["teacher.", "distill."]
    if spec.refinement != NONE and (stage := registry.refinements.get(spec.refinement).stage):
        stages.append(stage + ".")
    params = {k: v for k, v in spec.params if k.startswith(tuple(stages))
              or (k.startswith("relax.") and (relax_keys is None or k in relax_keys))}
    if params["distill.eval_every"]:
        params.update({k: spec.param(k) for k in ("eval.metrics", "eval.curve_samples")})
    body = json.dumps({"version": STUDENT_CODE_VERSION, "scale": spec.scale, "teacher": spec.teacher,
                       "relaxation": relaxation, "refinement": spec.refinement, "seed": spec.seed,
                       "params": params, "plugins": list(spec.plugins)},
                      sort_keys=True, separators=(",", ":"), default=list)
    return f"dimo-{hashlib.sha256(body.encode()).hexdigest()[:16]}"


# Distil the cell's student, or load it from the student cache (`<cache>/students/<student_key>/`:
# EMA weights and a summary with the training log tail and the curves), trained once under a lock.
# Training resumes from `checkpoints/distill.pt` of the run that trains it. Returns the EMA
# generator (frozen) and the summary (with `cache_hit`).
def distil_student(spec: RunSpec, teacher: Teacher, ctx: RunContext) -> tuple[torch.nn.Module, dict[str, Any]]:
    distill = spec.stage("distill", DistillConfig)
    relaxation = trained_relaxation(spec)
    if relaxation != spec.relaxation:
        ctx.log(f"relaxation {spec.relaxation!r} trains exactly as {relaxation!r} without a refinement "
                f"that needs gradients: its student is {relaxation!r}'s (student cache)")

    def train(tmp: Path) -> dict[str, Any]:
        relax = registry.relaxations.get(relaxation)
        distiller = Distiller(teacher, relax.fn, spec.stage("relax", RelaxConfig), distill,
                              seed=derive_seed(spec.seed, "distill"),
                              refinement=build_refinement(spec, teacher, ctx), device=ctx.device)
        checkpoint = ctx.checkpoint_dir / "distill.pt"
        curves = TrainingCurves(spec, teacher, ctx) if distill.eval_every else None
        start = time.perf_counter()
        if curves is not None and not checkpoint.is_file():
            curves.record(0, distiller)

        def save_on_signal(d: Distiller) -> None:
            save_checkpoint(d.state_dict(), checkpoint)
            ctx.log(f"preemption signal: checkpoint saved at distill step {d.step}; requeueing")

        with preemption.safe_points() as safe_point:   # a SLURM signal saves at the next step boundary
            run_distillation(distiller, checkpoint=checkpoint, on_eval=curves.record if curves else None,
                             log=ctx.log, on_step=lambda d: safe_point(lambda: save_on_signal(d)))
        if curves is not None:
            curves.record(distiller.step, distiller)
        curve_s = curves.seconds if curves is not None else 0.0
        summary = {"steps": distiller.step, "final_log": distiller.history[-1],
                   "curves": curves.points if curves is not None else {},
                   "distill_s": time.perf_counter() - start - curve_s, "curve_s": curve_s}
        torch.save(distiller.ema.state_dict(), tmp / "ema.pt")
        (tmp / "summary.json").write_text(json.dumps(summary))
        return {"steps": distiller.step}

    key = student_key(spec)
    directory, hit = cached_dir(ctx.cache_dir / "students", key, train)
    ema = copy.deepcopy(teacher.network)
    ema.load_state_dict(torch.load(directory / "ema.pt", map_location=ctx.device, weights_only=True))
    summary = json.loads((directory / "summary.json").read_text())
    summary["curves"] = {k: [tuple(p) for p in v] for k, v in summary["curves"].items()}
    return ema.eval().requires_grad_(False), {**summary, "cache_key": key, "cache_hit": hit,
                                              "trained_as": relaxation}


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
                                                  "curve_s")}}
    extra: dict[str, MetricValue] = {}
    if cost is not None:
        info["test_time"] = {"settings": dataclasses.asdict(test_time_settings(sample)),
                             "tteo_reward": list(sample.tteo_reward), "select_reward": list(sample.select_reward),
                             "cost": dataclasses.asdict(cost), "per_image": cost.per_image()}
        extra = _cost_metrics(cost, sample, str(ctx.device))
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

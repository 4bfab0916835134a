"""Example plugin: a new *method*, registered from a user's own module.

`two_step` samples a Di[M]O student twice: the one-step sample, then the least confident half of
its slots re-masked and predicted again by the same student. Its student is the cell's Di[M]O
(hard) student, so it reuses the one `dimo` trains with the same settings (the student cache), and
it reports 2 sampling steps. Name this module in a grid's `plugins:` to put it beside Di[M]O and the stored
baselines.
"""
from __future__ import annotations

import dataclasses
import time

import torch
from torch import Tensor

from harness.contracts import registry
from harness.contracts.entries import MethodEntry, MethodResult, RunContext
from harness.grid.spec import EvalConfig, RunSpec
from harness.methods.students import batched_samples, build_teacher, distil_student
from softdimo.config import DistillConfig, SampleConfig
from softdimo.teachers.base import ImageNoise, derive_seed
from softdimo.train import draw_tokens, generate


# The one-step sample, its least confident half re-masked and drawn again from the student.
@torch.no_grad()
def two_step_tokens(student: torch.nn.Module, cond, noise: ImageNoise, r_init: float, sigma_init: float,
                    temperature: float) -> Tensor:
    tokens, probs = generate(student, cond, noise, r_init, sigma_init, temperature)
    confidence = probs.gather(-1, tokens[..., None])[..., 0].flatten(1)
    layout = student.layout
    order = confidence.argsort(dim=1)[:, : layout.slots // 2]          # least confident first
    remask = torch.zeros_like(confidence, dtype=torch.bool).scatter(1, order, True).view_as(tokens)
    masked = torch.where(remask, torch.full_like(tokens, layout.mask_id), tokens)
    logits = student(student.embed(masked), cond).logits / temperature
    second = draw_tokens(logits, noise.fork("two_step second pass"))
    return torch.where(remask, second, tokens)


# The method: the cell's Di[M]O (hard) student (trained or reused), sampled in two steps.
def run_two_step(spec: RunSpec, ctx: RunContext) -> MethodResult:
    teacher, teacher_s = build_teacher(spec, ctx)
    start = time.perf_counter()
    student, summary = distil_student(dataclasses.replace(spec, method="dimo", relaxation="hard"), teacher, ctx)
    distill_s = time.perf_counter() - start
    distill, sample = spec.stage("distill", DistillConfig), spec.stage("sample", SampleConfig)
    start = time.perf_counter()
    samples = batched_samples(
        teacher, spec.stage("eval", EvalConfig).samples, derive_seed(spec.seed, "sample"), ctx,
        lambda cond, noise: two_step_tokens(student, cond, noise, distill.r_init, distill.sigma_init,
                                            sample.temperature))
    return MethodResult(None, samples.conditions, samples=samples, teacher=teacher,
                        info={"sampling_steps": 2, "student": {k: summary[k] for k in ("cache_key", "cache_hit")}},
                        stage_seconds={"teacher_s": teacher_s, "distill_s": distill_s,
                                       "sample_s": time.perf_counter() - start})


registry.methods.register("two_step", MethodEntry(
    "two_step", ("teacher", "distill", "sample", "eval"), run_two_step, label=lambda spec: "two-step Di[M]O student",
    description="example plugin: a Di[M]O student sampled in two steps (least confident half redrawn)"))

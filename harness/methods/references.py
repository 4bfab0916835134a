"""The reference rungs of the calibration ladders: samples that no generator made, against which
the mini metrics are calibrated (a metric must order real data < a good model < marginals <
noise). Each rung is a method (`MethodEntry`) that reads only the teacher and eval stages.

Class-conditional worlds (digits; any teacher with class-labelled `real_tokens`):
- `real`: for image i with label c, a training image of class c drawn from image i's stream;
- `marginals_class`: every slot drawn independently from its class-conditional frequency;
- `marginals_uncond`: every slot drawn independently from its unconditional frequency;
- `uniform`: every slot uniform over its classes.

The shapes world (text-to-image):
- `real_prompt`: a real scene of each evaluation prompt; scores 1.0 on the exact checker;
- `marginals_prompt`: every cell drawn independently from its frequency among 256 real scenes of the
  exact prompt (a one-step product distribution);
- `real_same_task`: a real scene of a random prompt of the same task (the prompt-ignoring floor).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from harness.contracts import registry
from harness.contracts.entries import MethodResult, RunContext
from harness.grid.spec import EvalConfig, RunSpec
from harness.methods.students import batched_samples, build_teacher
from softdimo.data import shapes as world
from softdimo.teachers.base import ImageNoise, Teacher, derive_seed
from softdimo.teachers.shapes import ShapesTeacher

#----------------------------------------------------------------------------


# One rung: how it makes samples and its row label in reports.
@dataclass(frozen=True)
class Rung:
    run: Callable[[RunSpec, RunContext], MethodResult]
    label: str


def _sampled(spec: RunSpec, ctx: RunContext, teacher: Teacher, teacher_s: float,
             draw: Callable[[Any, ImageNoise], Tensor]) -> MethodResult:
    # `eval.samples` images of the rung, each from its own stream, decoded with their conditions.
    n = spec.stage("eval", EvalConfig).samples
    start = time.perf_counter()
    samples = batched_samples(teacher, n, derive_seed(spec.seed, "sample"), ctx, draw)
    return MethodResult(None, samples.conditions, samples=samples, teacher=teacher,
                        stage_seconds={"teacher_s": teacher_s, "sample_s": time.perf_counter() - start})


#----------------------------------------------------------------------------
# Class-conditional worlds.


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


def _class_rung(draw: Callable[[Teacher, Any, ImageNoise], Tensor]) -> Callable[[RunSpec, RunContext], MethodResult]:
    # A rung of a class-conditional world: the teacher's world without its network where it has one.
    def run(spec: RunSpec, ctx: RunContext) -> MethodResult:
        start = time.perf_counter()
        entry = registry.teachers.get(spec.teacher)
        config = spec.stage("teacher", entry.config_cls)
        teacher = entry.build_world(config, ctx) if entry.build_world else entry.build(config, ctx)
        return _sampled(spec, ctx, teacher, time.perf_counter() - start,
                        lambda cond, noise: draw(teacher, cond, noise))
    return run


def _real(teacher: Teacher, cond: Any, noise: ImageNoise) -> Tensor:
    tokens, labels = _class_real_tokens(teacher)
    pools = [torch.nonzero(labels == c)[:, 0] for c in range(int(labels.max()) + 1)]
    u = noise.rand(1)[:, 0]
    picks = [pools[c][int(ui * len(pools[c]))] for c, ui in zip(cond.tensors["labels"].tolist(), u)]
    return tokens[torch.stack(picks)]


def _marginals_class(teacher: Teacher, cond: Any, noise: ImageNoise) -> Tensor:
    tokens, labels = _class_real_tokens(teacher)
    c = teacher.layout.classes
    freq = torch.stack([torch.nn.functional.one_hot(tokens[labels == k], c).float().mean(0)
                        for k in range(int(labels.max()) + 1)])
    return _draw_from_frequencies(freq, cond.tensors["labels"], noise)


def _marginals_uncond(teacher: Teacher, cond: Any, noise: ImageNoise) -> Tensor:
    tokens, _ = _class_real_tokens(teacher)
    freq = torch.nn.functional.one_hot(tokens, teacher.layout.classes).float().mean(0, keepdim=True)
    return _draw_from_frequencies(freq, torch.zeros(len(noise), dtype=torch.long), noise)


def _uniform(teacher: Teacher, cond: Any, noise: ImageNoise) -> Tensor:
    layout = teacher.layout
    return noise.randint(layout.classes, layout.positions, layout.groups)


CLASS_RUNGS: dict[str, Rung] = {
    "real": Rung(_class_rung(_real), "real (train split)"),
    "marginals_class": Rung(_class_rung(_marginals_class), "class-conditional marginals"),
    "marginals_uncond": Rung(_class_rung(_marginals_uncond), "unconditional marginals"),
    "uniform": Rung(_class_rung(_uniform), "uniform tokens"),
}

#----------------------------------------------------------------------------
# The shapes world.


def _shapes_rung(draw: Callable[[ShapesTeacher, list[str], ImageNoise], Tensor]
                 ) -> Callable[[RunSpec, RunContext], MethodResult]:
    def run(spec: RunSpec, ctx: RunContext) -> MethodResult:
        teacher, teacher_s = build_teacher(spec, ctx)
        if not isinstance(teacher, ShapesTeacher):
            raise ValueError(f"method {spec.method!r} needs the shapes teacher, not {spec.teacher!r}")
        return _sampled(spec, ctx, teacher, teacher_s,
                        lambda cond, noise: draw(teacher, [str(p) for p in cond.raw], noise))
    return run


def _real_prompt(teacher: ShapesTeacher, prompts: list[str], noise: ImageNoise) -> Tensor:
    return teacher.real_tokens_for(prompts, noise)


def _marginals_prompt(teacher: ShapesTeacher, prompts: list[str], noise: ImageNoise) -> Tensor:
    cdf = torch.stack([world.prompt_marginals(p) for p in prompts]).to(noise.device).cumsum(-1)
    u = noise.rand(world.POSITIONS)
    return (u[..., None] > cdf).sum(-1).clamp(max=world.NUM_TOKENS - 1)[..., None]


def _real_same_task(teacher: ShapesTeacher, prompts: list[str], noise: ImageNoise) -> Tensor:
    seeds = noise.randint(2 ** 62, 1)[:, 0].tolist()
    layouts = []
    for p, s in zip(prompts, seeds):
        rng = random.Random(s)
        layouts.append(world.sample_layout(world.random_prompt(world.parse_prompt(p).task, rng), rng))
    return torch.tensor(layouts, dtype=torch.long, device=noise.device)[..., None]


SHAPES_RUNGS: dict[str, Rung] = {
    "real_prompt": Rung(_shapes_rung(_real_prompt), "real scenes of the prompt"),
    "marginals_prompt": Rung(_shapes_rung(_marginals_prompt), "prompt-conditioned per-cell marginals"),
    "real_same_task": Rung(_shapes_rung(_real_same_task), "real scenes of another prompt of the task"),
}

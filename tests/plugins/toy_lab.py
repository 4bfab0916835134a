"""A small lab registered as a harness plugin (`plugins: [toy_lab]`): the tests' stand-in for a
user's own teacher, methods, relaxations, refinement and metrics.

Everything computes: the `toy` teacher's class c has target brightness (c + 1) / (classes + 1);
`toy_student` fits one brightness per class by `distill.steps` damped updates, then draws
per-image-seeded noise images around it (relaxation `toy_hard` thresholds them to {0, 1},
`toy_soft` keeps them); `toy_sampler` averages `sample.steps` noise draws; metrics measure the
images. `toy_flaky` fails while TOY_LAB_FAIL is set, dies while TOY_LAB_CRASH is set (over several
processes: only on the rank TOY_LAB_FAIL_RANK / TOY_LAB_CRASH_RANK names) and fills the file system
of the file TOY_LAB_FILL names while that is set; `toy_slow` sleeps TOY_LAB_SLOW_S seconds first;
`toy_shared` first builds a cache entry shared by the cells of one teacher size (taking
TOY_LAB_SLOW_S seconds, failing while TOY_LAB_FAIL is set), declared as its shared work, so that the
launcher schedules the cells that share it; the metric `toy_mean` fails while TOY_LAB_FAIL_SCORING
is set.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.contracts import registry
from harness.contracts.entries import (EvalInput, MethodEntry, MethodResult, MetricEntry, MetricValue,
                             RefinementEntry, RelaxationEntry, RunContext, TeacherEntry, labels_of)
from harness.grid.spec import RunSpec
from softdimo.params import param
from softdimo.teachers.cache import cached_dir

#----------------------------------------------------------------------------


# The toy teacher's configuration (grid keys `teacher.*`).
@dataclass(frozen=True)
class ToyTeacherConfig:
    size: int = param(8, lo=2, hi=64, help="image side in pixels")
    classes: int = param(10, lo=1, hi=100, help="number of classes")
    noise: float = param(0.2, lo=0.0, hi=1.0, help="pixel noise amplitude")
    diverge: bool = param(False, help="produce NaN images (tests the diverged status)")


# The toy refinement's configuration (grid keys `toyref.*`).
@dataclass(frozen=True)
class ToyRefineConfig:
    strength: float = param(0.5, lo=0.0, hi=1.0, help="pull of each pixel towards its class target")


# The toy teacher: a target brightness per class.
class ToyTeacher:
    def __init__(self, config: ToyTeacherConfig):
        self.config = config
        self.targets = torch.arange(1, config.classes + 1, dtype=torch.float64) / (config.classes + 1)

    # Per-image-seeded noise images around brightness `level[i]` ([N, 1, size, size]).
    def draw(self, level: torch.Tensor, seed: int) -> torch.Tensor:
        s = self.config.size
        out = torch.empty(len(level), 1, s, s, dtype=torch.float64)
        for i, b in enumerate(level.tolist()):
            g = torch.Generator().manual_seed(seed * 1_000_003 + i)
            out[i] = b + self.config.noise * (2 * torch.rand(1, s, s, generator=g, dtype=torch.float64) - 1)
        out = out.clamp(0, 1)
        return torch.full_like(out, float("nan")) if self.config.diverge else out


def _teacher(spec: RunSpec) -> ToyTeacher:
    return ToyTeacher(spec.stage("teacher", ToyTeacherConfig))


def _labels(spec: RunSpec, classes: int) -> torch.Tensor:
    return torch.arange(spec.param("eval.samples")) % classes


# One-step "student": fit per-class brightness, draw, relax, optionally refine.
def run_student(spec: RunSpec, ctx: RunContext) -> MethodResult:
    t0 = time.perf_counter()
    teacher = _teacher(spec)
    steps = spec.param("distill.steps")
    b = torch.zeros_like(teacher.targets)
    curve = []
    every = max(1, steps // 5)
    for step in range(1, steps + 1):
        b = b + 0.1 * (teacher.targets - b)
        if step % every == 0 or step == steps:
            curve.append((step, float((b - teacher.targets).abs().mean())))
    t1 = time.perf_counter()
    labels = _labels(spec, teacher.config.classes)
    images = teacher.draw(b[labels], spec.seed)
    images = registry.relaxations.get(spec.relaxation).fn(images)
    if spec.refinement != "none":
        strength = spec.param("toyref.strength")
        images = (1 - strength) * images + strength * b[labels].view(-1, 1, 1, 1)
    ctx.log(f"toy_student: {steps} steps, final gap {curve[-1][1]:.4f}")
    return MethodResult(images.float(), labels.tolist(), curves={"toy_gap": curve},
                        stage_seconds={"distill_s": t1 - t0, "sample_s": time.perf_counter() - t1},
                        info={"final_gap": curve[-1][1]}, teacher=teacher)


# The teacher's "K-step sampler": the mean of K independent noise draws around the targets.
def run_sampler(spec: RunSpec, ctx: RunContext) -> MethodResult:
    teacher = _teacher(spec)
    labels = _labels(spec, teacher.config.classes)
    k = spec.param("sample.steps")
    draws = [teacher.draw(teacher.targets[labels], spec.seed * 100 + j) for j in range(k)]
    return MethodResult(torch.stack(draws).mean(0).float(), labels.tolist(),
                        info={"sampling_steps": k}, teacher=teacher)


# Fails while TOY_LAB_FAIL is set, kills its process while TOY_LAB_CRASH is set (a job that
# dies without a record; over several processes TOY_LAB_FAIL_RANK / TOY_LAB_CRASH_RANK pick one), fills the file system of the file TOY_LAB_FILL while that is set
# (another process taking the disk while the cell runs), otherwise behaves as the sampler.
def run_flaky(spec: RunSpec, ctx: RunContext) -> MethodResult:
    rank = ctx.processes.rank
    if os.environ.get("TOY_LAB_CRASH") or os.environ.get("TOY_LAB_CRASH_RANK") == str(rank):
        os._exit(3)
    if os.environ.get("TOY_LAB_FAIL"):
        raise RuntimeError("toy_flaky failed because TOY_LAB_FAIL is set")
    if os.environ.get("TOY_LAB_FAIL_RANK") == str(rank):
        raise RuntimeError(f"toy_flaky failed on rank {rank} because TOY_LAB_FAIL_RANK is set")
    if os.environ.get("TOY_LAB_FILL"):
        with open(os.environ["TOY_LAB_FILL"], "ab", buffering=0) as filler:
            try:
                while filler.write(b"\0" * 4096):
                    pass
            except OSError:
                pass
    return run_sampler(spec, ctx)

# Sleeps TOY_LAB_SLOW_S seconds (default 0), then behaves as the sampler: a long cell.
def run_slow(spec: RunSpec, ctx: RunContext) -> MethodResult:
    time.sleep(float(os.environ.get("TOY_LAB_SLOW_S", "0")))
    return run_sampler(spec, ctx)


# The cache entry a `toy_shared` cell builds, shared by the cells of one teacher size.
def shared_entry(spec: RunSpec) -> str:
    return f"toy-shared/size-{spec.param('teacher.size')}"


# Builds (or finds) its shared cache entry under the cache's lock, then behaves as the sampler.
def run_shared(spec: RunSpec, ctx: RunContext) -> MethodResult:
    def build(tmp: Path) -> dict:
        time.sleep(float(os.environ.get("TOY_LAB_SLOW_S", "0")))
        if os.environ.get("TOY_LAB_FAIL"):
            raise RuntimeError("toy_shared failed because TOY_LAB_FAIL is set")
        (tmp / "built_by").write_text(spec.run_id)
        return {}

    kind, key = shared_entry(spec).split("/")
    directory, hit = cached_dir(ctx.cache_dir / kind, key, build, ctx.log)
    result = run_sampler(spec, ctx)
    result.info["shared"] = {"built_by": (directory / "built_by").read_text(), "cache_hit": hit}
    return result

#----------------------------------------------------------------------------


def _protocol(name: str, inp: EvalInput) -> dict:
    return {"name": name, "implementation": "toy_lab", "version": 1, "samples": len(inp.images)}


# Mean pixel intensity (fails while TOY_LAB_FAIL_SCORING is set).
def toy_mean(inp: EvalInput, ctx: RunContext) -> dict[str, MetricValue]:
    if os.environ.get("TOY_LAB_FAIL_SCORING"):
        raise RuntimeError("toy_mean failed because TOY_LAB_FAIL_SCORING is set")
    return {"toy_mean": MetricValue(float(inp.images.double().mean()), False,
                                    _protocol("toy-mean", inp))}


# Pixel standard deviation.
def toy_std(inp: EvalInput, ctx: RunContext) -> dict[str, MetricValue]:
    return {"toy_std": MetricValue(float(inp.images.double().std()), False,
                                   _protocol("toy-std", inp))}


# Mean distance of each image's brightness to its class target (needs the teacher object).
def toy_fidelity(inp: EvalInput, ctx: RunContext) -> dict[str, MetricValue]:
    if not isinstance(inp.teacher, ToyTeacher):
        raise TypeError(f"toy_fidelity needs the ToyTeacher object, got {type(inp.teacher).__name__}")
    labels = labels_of(inp.conditions)
    gap = (inp.images.double().mean((1, 2, 3)) - inp.teacher.targets[labels]).abs().mean()
    return {"toy_fidelity": MetricValue(float(gap), False, _protocol("toy-fidelity", inp))}

#----------------------------------------------------------------------------

registry.teachers.register("toy", TeacherEntry(
    "toy", ToyTeacherConfig, lambda config, ctx: ToyTeacher(config), scales=("mini",),
    default_params={"eval.samples": 40, "eval.grid_images": 16, "distill.steps": 20},
    default_metrics=("toy_mean", "toy_fidelity"), description="toy teacher of the test plugin"))
registry.methods.register("toy_student", MethodEntry(
    "toy_student", ("teacher", "distill", "relax", "sample", "eval"), run_student,
    uses_relaxation=True, uses_refinement=True,
    label=lambda spec: f"Toy student ({spec.relaxation})", description="toy one-step student"))
registry.methods.register("toy_sampler", MethodEntry(
    "toy_sampler", ("teacher", "sample", "eval"), run_sampler,
    label=lambda spec: f"Toy sampler, {spec.param('sample.steps')} step(s)",
    description="toy K-step teacher sampler"))
registry.methods.register("toy_flaky", MethodEntry(
    "toy_flaky", ("teacher", "sample", "eval"), run_flaky, description="fails while TOY_LAB_FAIL is set"))
registry.methods.register("toy_shared", MethodEntry(
    "toy_shared", ("teacher", "sample", "eval"), run_shared, work=lambda spec, world_size: ((shared_entry(spec),),),
    description="builds a cache entry shared by the cells of one teacher size"))
registry.methods.register("toy_slow", MethodEntry(
    "toy_slow", ("teacher", "sample", "eval"), run_slow, description="sleeps TOY_LAB_SLOW_S seconds"))
registry.relaxations.register("toy_hard", RelaxationEntry(
    "toy_hard", lambda x: (x > 0.5).to(x.dtype), differentiable=False, description="threshold"))
registry.relaxations.register("toy_soft", RelaxationEntry(
    "toy_soft", lambda x: x, differentiable=True, description="identity"))
registry.refinements.register("toy_sharpen", RefinementEntry(
    "toy_sharpen", "toyref", ToyRefineConfig, needs_gradient=True, description="pull to target"))
registry.metrics.register("toy_mean", MetricEntry("toy_mean", toy_mean, description="mean pixel"))
registry.metrics.register("toy_std", MetricEntry("toy_std", toy_std, description="pixel std"))
registry.metrics.register("toy_fidelity", MetricEntry("toy_fidelity", toy_fidelity, applies_to=("toy",),
                                                      description="distance to class targets"))

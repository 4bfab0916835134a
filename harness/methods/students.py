"""Di[M]O students: training (or reusing) the one-step generator of a `dimo` cell, its training
curves, and sampling it (plainly, or with TTEO and best-of-N).

Trained students are cached by the parameters that determine them (`student_key`), so cells that
differ only in how they sample train once; the plain Di[M]O state at `distill.refine_start` is
cached too (`prefix_key`), so every cell that continues the same Di[M]O student with a refinement,
or with more Di[M]O, starts from that one state. Both caches take a lock, so concurrent jobs train
each once. Every image i draws from its own random stream (`ImageNoise(seed, i)`).

A cell over several processes (`ctx.processes`) trains data-parallel (softdimo.parallel), with its
own cache entries (the number of processes is part of the keys when above one), and samples in
batches dealt out by batch index, each process keeping its own (harness.contracts.held_samples).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from harness import store
from harness.contracts import registry
from harness.contracts.distributed import shared_cached_dir
from harness.contracts.entries import MetricValue, RunContext
from harness.contracts.held_samples import SAMPLE_BATCH, HeldBatch, HeldSamples
from harness.contracts.run_spec import ADDED_PARAMS, CellError
from harness.grid.spec import NONE, EvalConfig, RunSpec
from harness.methods import preemption
from harness.methods.scoring import score
from softdimo.config import DistillConfig, RelaxConfig, SampleConfig
from softdimo.files import atomic_write
from softdimo.refine.reward import RewardFn, weighted_reward
from softdimo.refine.best_of_n import TTSCost, TTSSettings, sample_test_time
from softdimo.refine.selection import SelectionLog, Selector
from softdimo.teachers.base import ImageNoise, Teacher, derive_seed
from softdimo.train import Distiller, Refinement, generate, resume_from, run_distillation

STUDENT_CODE_VERSION = "dimo-student-5"   # bump when training code changes what a student key produces
STUDENTS_DIR, PREFIXES_DIR = "students", "prefixes"   # the cache entries of students and Di[M]O prefixes
STATE_FILE = "state.pt"                   # a student entry's final training state (continuations load it)
INIT_FROM = "distill.init_from"           # the run whose student a cell continues (its parent)
# Per-step training quantities drawn as curves beside the metrics (mean over each curve interval):
# the generator's sharpness, the refinement-vs-Di[M]O gradient ratio and the GAN's diagnostics.
TRAINING_DIAGNOSTICS = ("p_max", "p_entropy", "grad_ratio", "gan_d_acc_real", "gan_d_acc_fake",
                        "gan_softness_probe", "gan_near_uniform_groups", "gan_real_p_max", "gan_fm_loss")
# Distillation keys that do not change the Di[M]O state at refine_start (the shared prefix): they
# act only from refine_start on, or not on the state at all.
NOT_IN_PREFIX = ("distill.steps", "distill.dimo_weight", "distill.refine_grad_ratio", "distill.checkpoint_every")

#----------------------------------------------------------------------------
# Shared helpers of the sampling methods.


# Build (or load from the cache) the cell's teacher; returns it and the seconds it took.
def build_teacher(spec: RunSpec, ctx: RunContext) -> tuple[Teacher, float]:
    start = time.perf_counter()
    entry = registry.teachers.get(spec.teacher)
    teacher = entry.build(spec.stage("teacher", entry.config_cls), ctx)
    return teacher, time.perf_counter() - start


# Produce `n` samples in batches: `draw(cond, noise) -> tokens [b, L, G]` with per-image noise.
# Over several processes batch k of SAMPLE_BATCH images is drawn by rank k mod world size, so every
# image is made in the same batch whatever the number of processes; each process keeps the tokens
# of its own batches (harness.contracts.held_samples), decoded batch by batch when they are read.
@torch.no_grad()
def batched_samples(teacher: Teacher, n: int, seed: int, ctx: RunContext,
                    draw: Callable[[Any, ImageNoise], Tensor]) -> HeldSamples:
    conditions = teacher.eval_conditions(n)
    processes = ctx.processes
    own = []
    for k, start in enumerate(range(0, n, SAMPLE_BATCH)):
        if k % processes.world_size != processes.rank:
            continue
        idx = range(start, min(n, start + SAMPLE_BATCH))
        cond = teacher.encode_condition(conditions[idx.start:idx.stop]).to(ctx.device)
        own.append(HeldBatch(start, draw(cond, ImageNoise(seed, idx, ctx.device)).cpu()))

    @torch.no_grad()
    def decode(tokens: Tensor, batch_conditions: list[Any]) -> Tensor:
        cond = teacher.encode_condition(batch_conditions).to(ctx.device)
        return teacher.decode(tokens.to(ctx.device), cond).cpu()
    return HeldSamples(conditions, own, decode, dealt=processes.world_size > 1)


# The reward callables `(images, cond) -> [B]` named in a configuration, built for this teacher.
def build_rewards(names: tuple[str, ...] | list[str], teacher: Teacher, ctx: RunContext) -> dict[str, RewardFn]:
    return {name: registry.rewards.get(name).build(teacher, ctx) for name in names}


# The factor 1 / unit_i that puts each named reward in its native unit (`RewardEntry.unit`; 1 for a
# reward that is not registered).
def native_units(names: Iterable[str]) -> list[float]:
    return [1.0 / registry.rewards.get(name).unit if name in registry.rewards else 1.0 for name in names]


# The sum of several reward models, each in its native unit (R_i / unit_i), as one reward callable:
# a step size then means the same thing whatever scale a reward reports in.
def summed_reward(rewards: dict[str, RewardFn]) -> RewardFn:
    units = native_units(rewards)
    return lambda images, cond: weighted_reward(rewards, units, images, cond)[0]


# Best-of-N's selection score of a sample configuration: `select_reward` combined by `select_combine`.
def selector(sample: SampleConfig, teacher: Teacher, ctx: RunContext) -> Selector:
    return Selector(build_rewards(sample.select_reward, teacher, ctx), native_units(sample.select_reward),
                    sample.select_combine)


#----------------------------------------------------------------------------
# Training curves.


# Metrics over training steps (`distill.eval_every`): a fixed evaluation set (`eval.curve_samples`
# conditions, its own per-image streams, never the training stream) sampled with the EMA generator,
# plus the per-step training diagnostics (`TRAINING_DIAGNOSTICS`) averaged over each interval.
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
            self.load(self.path)
        self.seconds = 0.0

    # Take the points of a curves file (this run's, or a shared prefix's).
    def load(self, path: Path) -> None:
        self.points = {k: [tuple(p) for p in v] for k, v in json.loads(path.read_text()).items()}

    # Evaluate the EMA generator at `step` (the `on_eval` callback of run_distillation).
    def record(self, step: int, distiller: Distiller) -> None:
        start = time.perf_counter()
        d = self.distill
        samples = batched_samples(
            self.teacher, self.samples, derive_seed(self.spec.seed, "curve"), self.ctx,
            lambda cond, noise: generate(distiller.ema, cond, noise, d.r_init, d.sigma_init,
                                         precision=d.precision)[0])
        scored = score(self.spec, self.teacher, self.ctx, samples)[0]      # every process extracts
        if not self.ctx.processes.is_main:
            return
        values = {k: v.value for k, v in scored.items()}
        values.update(interval_means(distiller.history, self.last_step(step), step))
        self.ctx.trackers.log("curve", values, step)
        for name, value in values.items():
            kept = [p for p in self.points.get(name, []) if p[0] < step]
            self.points[name] = kept + [(step, value)]
        self.save(self.path)
        self.seconds += time.perf_counter() - start

    # The step of the latest point before `step` (0 if none).
    def last_step(self, step: int) -> int:
        return max((p[0] for pts in self.points.values() for p in pts if p[0] < step), default=0)

    # Write the points atomically (rank 0 alone).
    def save(self, path: Path) -> None:
        if self.ctx.processes.is_main:
            atomic_write(path, json.dumps(self.points))


# Send training-log entries (losses and diagnostics of a step) to the run's trackers, at step + 1
# (the step count after that step, as curves and checkpoints count).
def log_training(ctx: RunContext, entries: list[dict[str, float]]) -> None:
    for entry in entries:
        ctx.trackers.log("train", {k: v for k, v in entry.items() if k != "step"}, int(entry["step"]) + 1)


# Send curve points {metric: [(step, value), ...]} to the run's trackers.
def log_curves(ctx: RunContext, points: dict[str, list[tuple[int, float]]]) -> None:
    for name, series in points.items():
        for step, value in series:
            ctx.trackers.log("curve", {name: value}, int(step))


# The mean of each training diagnostic over the steps s with lo <= s < hi of a training history.
def interval_means(history: list[dict[str, float]], lo: int, hi: int) -> dict[str, float]:
    rows = [h for h in history if lo <= h["step"] < hi]
    out = {}
    for key in TRAINING_DIAGNOSTICS:
        values = [h[key] for h in rows if key in h]
        if values:
            out[key] = sum(values) / len(values)
    return out


#----------------------------------------------------------------------------
# Student keys.


# The relaxation whose student a dimo cell trains (`refining`: a refinement that needs gradients
# is active). Without one, a relaxation that draws the same hard sample as another (`sample_as`)
# trains that one's student when phi and psi read the sample (`distill.teacher_input: sampled`),
# and one with the same forward values (`forward_as`) does whatever they read.
def student_relaxation(spec: RunSpec, refining: bool) -> str:
    entry = registry.relaxations.get(spec.relaxation)
    if refining:
        return spec.relaxation
    if entry.sample_as and spec.param("distill.teacher_input") == "sampled":
        return entry.sample_as
    return entry.forward_as or spec.relaxation


# Whether the cell's refinement needs gradients through the relaxation.
def needs_gradient(spec: RunSpec) -> bool:
    return spec.refinement != NONE and registry.refinements.get(spec.refinement).needs_gradient


# The relaxation a dimo cell's finished student trains with.
def trained_relaxation(spec: RunSpec) -> str:
    return student_relaxation(spec, needs_gradient(spec))


def _key(kind: str, spec: RunSpec, relaxation: str, refinement: str, params: dict[str, Any],
         world_size: int) -> str:
    relax_keys = registry.relaxations.get(relaxation).params
    params = {**params, **{k: v for k, v in spec.params if k.startswith("relax.")
                           and (relax_keys is None or k in relax_keys)}}
    # a parameter added at its default leaves the key (and the cached student) as it was
    params = {k: v for k, v in params.items() if k not in ADDED_PARAMS or v != ADDED_PARAMS[k]}
    if params.get("distill.eval_every"):
        params.update({k: spec.param(k) for k in ("eval.metrics", "eval.curve_samples")})
    fields = {"version": STUDENT_CODE_VERSION, "scale": spec.scale, "teacher": spec.teacher,
              "relaxation": relaxation, "refinement": refinement, "seed": spec.seed,
              "params": params, "plugins": list(spec.plugins)}
    if world_size > 1:                    # per-process dropout and refinement streams
        fields["processes"] = world_size
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=list)
    return f"{kind}-{hashlib.sha256(body.encode()).hexdigest()[:16]}"


# The parameters that determine a dimo cell's trained student: teacher, the relaxation it trains
# with (and the `relax.*` keys that one reads), refinement, seed, the teacher / distill /
# refinement stages, and the curve settings when curves are drawn. Cells that differ only in
# sampling (`sample.*`, `eval.samples`, other metrics), or only by a relaxation that trains another
# one's student (`student_relaxation`), share it. Without a refinement, refine_start and
# dimo_weight do not change the student. A student trained by several processes has its own key.
def student_key(spec: RunSpec, world_size: int = 1) -> str:
    stages = ["teacher.", "distill."]
    refining = spec.refinement != NONE
    if refining and (stage := registry.refinements.get(spec.refinement).stage):
        stages.append(stage + ".")
    params = {k: v for k, v in spec.params if k.startswith(tuple(stages))}
    if not refining:
        params = {k: v for k, v in params.items() if k not in ("distill.refine_start", "distill.dimo_weight")}
    return _key("dimo", spec, trained_relaxation(spec), spec.refinement, params, world_size)


# The key of the plain Di[M]O state at `distill.refine_start` that a cell continues, or None when it
# has none (refine_start 0 or not before the last step, or a continuation of another run's
# student): everything that determines the first refine_start steps, which no refinement touches.
def prefix_key(spec: RunSpec, world_size: int = 1) -> str | None:
    distill = spec.stage("distill", DistillConfig)
    if not 0 < distill.refine_start < distill.steps or distill.init_from:
        return None
    params = {k: v for k, v in spec.params if k.startswith(("teacher.", "distill.")) and k not in NOT_IN_PREFIX}
    return _key("dimo-prefix", spec, student_relaxation(spec, False), NONE, params, world_size)


# The teacher's cache entry a cell trains once for all cells of that teacher configuration (a chain
# of one, `MethodEntry.work`); none for a teacher of released weights.
def teacher_work(spec: RunSpec) -> tuple[tuple[str, ...], ...]:
    entry = registry.teachers.get(spec.teacher)
    if entry.work_key is None:
        return ()
    return ((entry.work_key(spec.stage("teacher", entry.config_cls)),),)


# A dimo cell's shared work (`MethodEntry.work`): its teacher, and its student, which, when not
# cached, continues the cell's Di[M]O prefix (if it has one).
def work(spec: RunSpec, world_size: int) -> tuple[tuple[str, ...], ...]:
    student = (f"{STUDENTS_DIR}/{student_key(spec, world_size)}",)
    prefix = prefix_key(spec, world_size)
    return teacher_work(spec) + (student + ((f"{PREFIXES_DIR}/{prefix}",) if prefix else ()),)


# Whether `child` can continue the student of `parent`, a cell of the same grid (`MethodEntry.check_parent`):
# a dimo cell of the same teacher configuration that stops before the child's last step.
def check_continuation(child: RunSpec, parent: RunSpec) -> None:
    if parent.method != child.method:
        raise CellError(INIT_FROM, f"names cell {parent.run_id} ({parent.description()}) of method "
                        f"{parent.method!r}, which trains no student to continue; allowed: a {child.method!r} cell")
    mine = {k: v for k, v in child.params if k.startswith("teacher.")}
    theirs = {k: v for k, v in parent.params if k.startswith("teacher.")}
    if (parent.scale, parent.teacher, theirs) != (child.scale, child.teacher, mine):
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise CellError(INIT_FROM, f"names cell {parent.run_id} ({parent.description()}), whose teacher differs "
                        f"({parent.scale} {parent.teacher} vs {child.scale} {child.teacher}"
                        f"{'; ' + ', '.join(differ) if differ else ''}); a student continues on its own teacher")
    steps, parent_steps = child.param("distill.steps"), parent.param("distill.steps")
    if steps <= parent_steps:
        raise CellError("distill.steps", f"{steps} does not go past the {parent_steps} steps of the cell it "
                        f"continues ({parent.run_id}); a continuation trains from that step to distill.steps")


#----------------------------------------------------------------------------
# Training.


# The cell's refinement object (None without one), seeded from the run's seed.
def build_refinement(spec: RunSpec, teacher: Teacher, ctx: RunContext) -> Refinement | None:
    if spec.refinement == NONE:
        return None
    entry = registry.refinements.get(spec.refinement)
    config = spec.stage(entry.stage, entry.config_cls) if entry.stage else None
    return entry.build(config, teacher, ctx, derive_seed(spec.seed, "refinement"))


# Bring a distiller that has not reached `distill.refine_start` to the shared Di[M]O prefix
# (`prefix_key`): load it from the prefix cache (`<cache>/prefixes/<key>/`: the state at
# refine_start and its curve points), or train it there first, under the cache's lock, and store
# it. Returns the prefix's summary.
def continue_prefix(key: str, distiller: Distiller, curves: "TrainingCurves | None", ctx: RunContext,
                    checkpoint: Path, on_step: Callable[[Distiller], None]) -> dict[str, Any]:
    stop = distiller.config.refine_start

    def build(tmp: Path) -> dict[str, Any]:
        if curves is not None and distiller.step == 0:
            curves.record(0, distiller)
        run_distillation(distiller, checkpoint=checkpoint, on_eval=curves.record if curves else None,
                         log=ctx.log, stop_after=stop, on_step=on_step, resume=False)
        distiller.save(tmp / "state.pt")
        if curves is not None:
            curves.save(tmp / "curves.json")
        return {"step": distiller.step}

    directory, hit = shared_cached_dir(ctx.processes, ctx.cache_dir / PREFIXES_DIR, key, build, ctx.log)
    if hit:
        distiller.load_state_dict(torch.load(directory / "state.pt", map_location=ctx.device, weights_only=True),
                                  with_refinement=False)
        log_training(ctx, distiller.history)
        if curves is not None:
            curves.load(directory / "curves.json")
            log_curves(ctx, curves.points)
        ctx.log(f"continuing the shared Di[M]O student {key} from step {distiller.step}")
    return {"cache_key": key, "cache_hit": hit, "step": stop}


# A parent run that cannot be continued (no ok record, no saved student state, too few steps).
class ParentError(RuntimeError):
    pass


# The final training state of the run a cell continues (`distill.init_from`) and what to record of
# it: its ok record (this grid first, then any other under the results root) names its student's
# cache entry, whose STATE_FILE holds theta, psi, the EMA, the optimisers and the step.
def parent_student(spec: RunSpec, ctx: RunContext) -> tuple[dict[str, Any], dict[str, Any]]:
    run_id, steps = spec.param(INIT_FROM), spec.param("distill.steps")
    path = store.find_ok_record(ctx.results_root, run_id, ctx.run_dir.parent.name) if ctx.results_root else None
    if path is None:
        raise ParentError(f"{INIT_FROM} = {run_id}: no ok record of that run under {ctx.results_root}; the run "
                          f"a cell continues must end ok first (harness.run starts it after its parent)")
    record = store.read_record(path)
    key = ((record.get("info") or {}).get("student") or {}).get("cache_key")
    entry = ctx.cache_dir / STUDENTS_DIR / str(key)
    if not key or not (entry / STATE_FILE).is_file():
        raise ParentError(f"{INIT_FROM} = {run_id}: its record {path} names no student entry with a saved "
                          f"training state ({entry / STATE_FILE} is missing: another cache than {ctx.cache_dir}, or "
                          f"cleared); delete that record and run {run_id} again")
    state = torch.load(entry / STATE_FILE, map_location=ctx.device, weights_only=True)
    if state["step"] >= steps:
        raise ParentError(f"distill.steps = {steps}: run {run_id} stopped at step {state['step']}, and a "
                          f"continuation trains from there to distill.steps; set distill.steps above it")
    info = {"run_id": run_id, "grid": record["grid"], "record": str(path), "cache_key": key, "step": state["step"],
            "refinement": record["spec"]["refinement"],
            "git_commit": (record.get("provenance") or {}).get("git_commit")}
    return state, info


# Distil the cell's student, or load it from the student cache (`<cache>/students/<student_key>/`:
# EMA weights and a summary with the training-log tail and the curves), trained once under a lock.
# Training resumes from `checkpoints/distill.pt` of the run that trains it, and otherwise starts
# from the shared Di[M]O prefix where there is one. Returns the EMA generator (frozen) and the summary.
def distil_student(spec: RunSpec, teacher: Teacher, ctx: RunContext) -> tuple[torch.nn.Module, dict[str, Any]]:
    distill, processes = spec.stage("distill", DistillConfig), ctx.processes
    relaxation = trained_relaxation(spec)
    if relaxation != spec.relaxation:
        ctx.log(f"relaxation {spec.relaxation!r} trains exactly as {relaxation!r} here: its student is "
                f"{relaxation!r}'s (student cache)")

    def train(tmp: Path) -> dict[str, Any]:
        relax = registry.relaxations.get(relaxation)
        parent_state, parent = parent_student(spec, ctx) if distill.init_from else (None, None)
        # a continuation draws its own streams, not a replay of its parent's first steps
        streams = f"distill after {distill.init_from}" if distill.init_from else "distill"
        distiller = Distiller(teacher, relax.fn, spec.stage("relax", RelaxConfig), distill,
                              seed=derive_seed(spec.seed, streams),
                              refinement=build_refinement(spec, teacher, ctx), device=ctx.device,
                              parallel=processes.data_parallel)
        if parent_state is not None:
            distiller.continue_from(parent_state, distill.init_optimizer, parent["refinement"] == spec.refinement)
            del parent_state
            ctx.log(f"continuing run {parent['run_id']}'s student from its step {distiller.step} "
                    f"({'its' if distill.init_optimizer else 'fresh'} optimiser states)")
        first = distiller.step
        checkpoint = ctx.checkpoint_dir / "distill.pt"
        curves = TrainingCurves(spec, teacher, ctx) if distill.eval_every else None
        start = time.perf_counter()

        def save_on_signal(d: Distiller) -> None:
            d.save(checkpoint)                 # on every process once rank 0 has written it
            ctx.log(f"preemption signal: checkpoint saved at distill step {d.step}; requeueing")

        # A SLURM signal saves at the next step boundary, the same one on every process; every
        # step's log goes to the run's trackers.
        follower = None if processes.is_main else preemption.await_requeue
        with preemption.safe_points(agree=processes.any, after_hand_over=follower) as safe_point:
            def on_step(d: Distiller) -> None:
                log_training(ctx, d.history[-1:])
                safe_point(lambda: save_on_signal(d))

            resume_from(distiller, checkpoint, ctx.log)
            key, prefix = prefix_key(spec, processes.world_size), None
            if key is not None and distiller.step < distill.refine_start:
                prefix = continue_prefix(key, distiller, curves, ctx, checkpoint, on_step)
            elif curves is not None and distiller.step == first:
                curves.record(first, distiller)
            run_distillation(distiller, checkpoint=checkpoint, on_eval=curves.record if curves else None,
                             log=ctx.log, on_step=on_step, resume=False)
        if curves is not None:
            curves.record(distiller.step, distiller)
        curve_s = curves.seconds if curves is not None else 0.0
        summary = {"steps": distiller.step, "final_log": distiller.history[-1],
                   "curves": curves.points if curves is not None else {},
                   "distill_s": time.perf_counter() - start - curve_s, "curve_s": curve_s, "prefix": prefix,
                   "init_from": parent}
        torch.save(distiller.ema.state_dict(), tmp / "ema.pt")
        distiller.save(tmp / STATE_FILE)
        (tmp / "summary.json").write_text(json.dumps(summary))
        return {"steps": distiller.step}

    key = student_key(spec, processes.world_size)
    directory, hit = shared_cached_dir(processes, ctx.cache_dir / STUDENTS_DIR, key, train, ctx.log)
    ema = copy.deepcopy(teacher.network)
    ema.load_state_dict(torch.load(directory / "ema.pt", map_location=ctx.device, weights_only=True))
    summary = json.loads((directory / "summary.json").read_text())
    summary["curves"] = {k: [tuple(p) for p in v] for k, v in summary["curves"].items()}
    if hit:                                   # trained by another run: its curves and last step
        log_curves(ctx, summary["curves"])
        log_training(ctx, [summary["final_log"]])
    return ema.eval().requires_grad_(False), {**summary, "cache_key": key, "cache_hit": hit,
                                              "trained_as": relaxation}


#----------------------------------------------------------------------------
# Sampling.


# Test-time scaling settings of a sample configuration.
def test_time_settings(sample: SampleConfig) -> TTSSettings:
    return TTSSettings(steps=sample.tteo_steps, lr=sample.tteo_lr, proximity=sample.tteo_proximity,
                       best_of_n=sample.best_of_n, chunk=sample.tteo_batch)


# One-step samples of a generator: plain, or with TTEO / best-of-N (`sample.*`); returns this
# process's samples and, with test-time scaling, its cost and, with best-of-N, what it chose.
def dimo_samples(spec: RunSpec, teacher: Teacher, ctx: RunContext, generator: torch.nn.Module
                 ) -> tuple[HeldSamples, TTSCost | None, SelectionLog | None]:
    distill, sample = spec.stage("distill", DistillConfig), spec.stage("sample", SampleConfig)
    n, seed = spec.stage("eval", EvalConfig).samples, derive_seed(spec.seed, "sample")
    settings = test_time_settings(sample)
    if settings.steps == 0 and settings.best_of_n == 1:
        out = batched_samples(teacher, n, seed, ctx, lambda cond, noise: generate(
            generator, cond, noise, distill.r_init, distill.sigma_init, sample.temperature, distill.precision)[0])
        return out, None, None
    tteo_reward = summed_reward(build_rewards(sample.tteo_reward, teacher, ctx)) if settings.steps else None
    select, log = (selector(sample, teacher, ctx), SelectionLog()) if settings.best_of_n > 1 else (None, None)
    cost = TTSCost()
    out = batched_samples(teacher, n, seed, ctx, lambda cond, noise: sample_test_time(
        generator, teacher, cond, noise, distill.r_init, distill.sigma_init, sample.temperature, settings,
        tteo_reward, select, cost, log))
    costs = ctx.processes.gather_to_main(cost)
    if costs is not None:                  # rank 0: the cost of every process
        cost = TTSCost(**{f.name: sum(getattr(c, f.name) for c in costs) for f in dataclasses.fields(TTSCost)})
    logs = ctx.processes.gather_to_main(log) if log is not None else None
    return out, cost, merged_selection(logs, n) if logs is not None else log


# Rank 0's best-of-N log of every image in sampling order, from each process's log of its own
# batches (`batched_samples`: batch k of SAMPLE_BATCH images is process k mod world size's).
def merged_selection(logs: list[SelectionLog], n: int) -> SelectionLog:
    if len(logs) == 1:
        return logs[0]
    starts = list(range(0, n, SAMPLE_BATCH))
    parts: dict[int, dict[str, Tensor]] = {}
    for rank, log in enumerate(logs):
        own, offset = log.tensors() if log.index else {}, 0
        for start in starts[rank::len(logs)]:
            size = min(n, start + SAMPLE_BATCH) - start
            parts[start] = {name: values[offset:offset + size] for name, values in own.items()}
            offset += size
    merged = SelectionLog()
    for start in starts:
        part = parts[start]
        merged.index.append(part["index"])
        merged.combined.append(part["combined"])
        for name in logs[0].rewards:
            merged.rewards.setdefault(name, []).append(part[name])
    return merged


# The cost metrics of test-time scaling: generator evaluations and seconds per image.
def cost_metrics(cost: TTSCost, device: str) -> dict[str, MetricValue]:
    per = cost.per_image()
    return {"generator_evals_per_image": MetricValue(per["generator_forwards"], False,
                                                     {"name": "generator-forward-passes-per-image"}),
            "sample_seconds_per_image": MetricValue(per["seconds"], False,
                                                    {"name": "sampling-seconds-per-image", "device": device})}


# The test-time part of a dimo record's info.
def test_time_info(sample: SampleConfig, cost: TTSCost) -> dict[str, Any]:
    return {"settings": dataclasses.asdict(test_time_settings(sample)), "tteo_reward": list(sample.tteo_reward),
            "select_reward": list(sample.select_reward), "select_combine": sample.select_combine,
            "cost": dataclasses.asdict(cost),
            "per_image": cost.per_image()}

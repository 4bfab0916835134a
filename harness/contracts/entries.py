"""What a registry entry of each axis holds: the contract a built-in or a user's plugin fulfils."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch

from harness.contracts.distributed import SINGLE, Processes
from harness.contracts.held_samples import HeldSamples
from harness.contracts.tracking import NO_TRACKERS, RunTrackers

if TYPE_CHECKING:
    from harness.contracts.run_spec import RunSpec
    from softdimo.refine.selection import SelectionLog
    from softdimo.teachers.base import Teacher

#----------------------------------------------------------------------------


# A teacher: its typed configuration (`teacher.*` keys), how to build it, and per-scale defaults.
@dataclass(frozen=True)
class TeacherEntry:
    name: str
    config_cls: type                                  # frozen dataclass of `param` fields
    build: Callable[[Any, "RunContext"], "Teacher"]   # (config, ctx) -> trained / loaded teacher
    scales: tuple[str, ...]                           # scales this teacher runs at
    default_params: Mapping[str, Any] = field(default_factory=dict)  # `<stage>.<field>` overrides
    default_metrics: tuple[str, ...] = ()             # eval.metrics when the grid names none
    assets: Callable[[Any], list[str]] = lambda config: []  # asset names needed (checked pre-launch)
    description: str = ""
    # The teacher's world without the trained network (layout, conditions, decode, real data), for
    # reference baselines; None = reference methods build the full teacher.
    build_world: Callable[[Any, "RunContext"], Any] | None = None
    # The names of its class labels in label order, for sample pages (None: labels shown as numbers).
    class_names: Callable[[], Sequence[str] | None] | None = None
    # The cache entry its build trains once per configuration (`config -> key`, a path under the
    # cache root such as "teachers/digits-<hash>"); None when it trains nothing (released weights).
    work_key: Callable[[Any], str] | None = None


# A way of producing samples: one-step distillation, the teacher's sampler, a reference baseline.
@dataclass(frozen=True)
class MethodEntry:
    name: str
    stages: tuple[str, ...]                           # parameter stages this method reads
    run: Callable[["RunSpec", "RunContext"], "MethodResult"]
    uses_relaxation: bool = False
    uses_refinement: bool = False
    test_time: bool = False                           # honours sample.tteo_* and sample.best_of_n
    label: Callable[["RunSpec"], str] = lambda spec: spec.method  # row label in reports
    description: str = ""
    # The expensive work a cell builds or reuses, shared with other cells (`(spec, world_size) ->
    # chains`): each chain lists cache entries (paths under the cache root), most specific first, so
    # that a complete entry makes the ones after it unneeded (a cached student needs no Di[M]O
    # prefix). Of the cells needing one entry the first builds it, the others start after its cell
    # (harness.grid.dependencies). None: cells share nothing.
    work: Callable[["RunSpec", int], Sequence[Sequence[str]]] | None = None
    # The `<stage>.<field>` parameter naming the run a cell continues (its parent: a run id, or a
    # selector of a cell of the same grid that the grid resolves to that cell's run id); the cell
    # starts after its parent. None: cells continue nothing.
    parent_param: str | None = None
    # Checks, when the grid is read, that a cell can continue a parent cell of the same grid
    # (`(child, parent) -> None`, raising CellError naming the key).
    check_parent: Callable[["RunSpec", "RunSpec"], None] | None = None


# A generator relaxation (Soft-Di[M]O): `fn(logits, gumbel, config, temperature) -> Relaxed`
# (softdimo.relax); `differentiable` says whether gradients reach the logits (refinements that
# need gradients are refused otherwise). Without a refinement that needs gradients, a relaxation
# trains another one's student exactly, shared through the student cache, when it draws the same
# hard sample x_theta (`sample_as`; enough when phi and psi read x_theta, the default) or
# reproduces all its forward values, q and x_theta (`forward_as`; enough whatever they read).
# `params` lists the `relax.*` keys it reads (None: all of them).
@dataclass(frozen=True)
class RelaxationEntry:
    name: str
    fn: Callable[..., Any]
    differentiable: bool
    description: str = ""
    forward_as: str | None = None
    sample_as: str | None = None
    params: tuple[str, ...] | None = None


# A refinement on top of Di[M]O (GAN, reward, ...); `stage` names its `<stage>.*` parameters.
# `build(config, teacher, ctx, seed)` returns an object with the `softdimo.train.Refinement`
# methods; `seed` (derived from the run's) seeds whatever the refinement initialises itself.
# `check(config, teacher_name)` validates a resolved configuration before launch (raises CellError).
@dataclass(frozen=True)
class RefinementEntry:
    name: str
    stage: str | None                                  # parameter stage name, None if no params
    config_cls: type | None
    needs_gradient: bool                               # refused with non-differentiable relaxations
    build: Callable[..., Any] | None = None            # (config, teacher, ctx, seed) -> refinement
    check: Callable[[Any, str], None] | None = None    # (config, teacher name) -> None or CellError
    description: str = ""


# A metric: computes values with protocols from samples; `applies_to` lists teacher names ('*' = all);
# `assets` names the asset files it reads (checked before a grid launches); `reward` names the
# reward model whose score it reports, if any: in a run that optimises that reward (fine-tuning,
# TTEO, best-of-N selection) its values are marked optimised, not independent.
# A metric of per-image quantities (features, scores, verdicts) also gives its two halves, so that a
# cell over several processes never gathers images (harness.methods.scoring): `extract(inp, ctx)` -> arrays
# whose first axis is the images of `inp` (one batch of one process), and `reduce(inp, arrays, ctx)`
# -> values, on rank 0, from every image's arrays in index order (`inp` then holds no images, all
# conditions). `per_image_metric` builds such an entry; `compute` is then reduce(extract(...)).
@dataclass(frozen=True)
class MetricEntry:
    name: str
    compute: Callable[["EvalInput", "RunContext"], dict[str, "MetricValue"]]
    applies_to: tuple[str, ...] = ("*",)
    description: str = ""
    assets: tuple[str, ...] = ()
    reward: str | None = None
    extract: Callable[["EvalInput", "RunContext"], dict[str, np.ndarray]] | None = None
    reduce: Callable[["EvalInput", dict[str, np.ndarray], "RunContext"], dict[str, "MetricValue"]] | None = None


# A metric entry from its per-image halves (see MetricEntry).
def per_image_metric(name: str, extract: Callable[["EvalInput", "RunContext"], dict[str, np.ndarray]],
                     reduce: Callable[["EvalInput", dict[str, np.ndarray], "RunContext"], dict[str, "MetricValue"]],
                     **fields: Any) -> MetricEntry:
    def compute(inp: EvalInput, ctx: RunContext) -> dict[str, MetricValue]:
        return reduce(inp, extract(inp, ctx), ctx)
    return MetricEntry(name, compute, extract=extract, reduce=reduce, **fields)


# A differentiable reward model R(image, condition) (HPS / CLIP-score analogues at mini scale):
# `build(teacher, ctx)` returns a callable `(images [B,C,H,W] in [0,1], Condition) -> [B]` that is
# differentiable in the images; higher is better. Used by reward fine-tuning, TTEO and best-of-N.
# `unit`: how many of its reported points make one unit of the model's native score (100 for
# "100 x cosine"); TTEO ascends R / unit, so its step size does not depend on the reporting scale.
# `assets`: what it loads (names of the asset manifest, `harness.store.assets`), checked before a grid launches.
@dataclass(frozen=True)
class RewardEntry:
    name: str
    build: Callable[..., Callable[..., torch.Tensor]]
    applies_to: tuple[str, ...] = ("*",)
    description: str = ""
    assets: tuple[str, ...] = ()
    unit: float = 1.0


# What `python -m harness.cell.evaluate` is asked: score the sample set `samples` under the protocol
# `protocol`, with the options the protocol's family reads (the command's options of the same names).
@dataclass(frozen=True)
class EvalRequest:
    samples: Path
    protocol: str
    results: Path                            # results root: the record goes to <results>/evaluate/<id>/
    metrics: tuple[str, ...] = ()            # the family's metrics to compute; () = its default
    reference: Path | None = None            # instead of the protocol's default reference
    reference_name: str | None = None        # the name recorded for `reference`
    captions: Path | None = None             # one caption per line, in sample order
    weights: Path | None = None              # instead of the protocol's weights asset
    levels: int | None = None                # the intensity levels of the digits world
    geneval_dir: Path | None = None          # a GenEval checkout
    geneval_python: str | None = None        # GenEval's environment's interpreter
    device: str = "cpu"
    batch_size: int = 50
    num_workers: int = 0


# A family of evaluation protocols that `python -m harness.cell.evaluate` scores sample sets made
# elsewhere under; it is registered once under each protocol name it scores (`registry.protocols`).
# `options`: the EvalRequest options among OPTIONAL_EVAL_OPTIONS it reads (any other one given is
# refused). `check(request)`: problems with the options (one line each), before anything is read;
# `check_samples(request)`: problems with the sample set itself, asked only when there are no others.
# `assets(request)`: the assets read (checked before computing). `identity(request)`: what besides
# the samples' content decides the values (hashed into the record's run id); `samples_sha256(path)`:
# the content hash of a sample set. `compute(request, run_dir)`: the values and the number of
# samples scored. `scale` and `teacher(protocol)` place the record among the runs (teacher None:
# the `--teacher` option says).
@dataclass(frozen=True)
class ProtocolFamily:
    name: str
    compute: Callable[[EvalRequest, Path], tuple[dict[str, "MetricValue"], int]]
    samples_sha256: Callable[[Path], str]
    options: tuple[str, ...] = ()
    check: Callable[[EvalRequest], list[str]] = lambda request: []
    check_samples: Callable[[EvalRequest], list[str]] = lambda request: []
    assets: Callable[[EvalRequest], list[str]] = lambda request: []
    identity: Callable[[EvalRequest], dict[str, Any]] = lambda request: {}
    scale: str = "paper"
    teacher: Callable[[str], str | None] = lambda protocol: None
    description: str = ""


# The EvalRequest options that only some protocol families read.
OPTIONAL_EVAL_OPTIONS = ("metrics", "reference", "captions", "weights", "levels", "geneval_dir", "geneval_python")

#----------------------------------------------------------------------------


# Where a job runs and what it may use; handed to teachers, methods and metrics.
@dataclass
class RunContext:
    run_dir: Path                      # results/<grid>/<run_id>/
    cache_dir: Path                    # shared cache (teachers, metric networks)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    threads: int = 1                   # torch intra-op threads for this job
    log: Callable[[str], None] = print
    processes: Processes = SINGLE      # the processes running this cell together (harness.contracts.distributed)
    trackers: RunTrackers = NO_TRACKERS  # live monitoring (rank 0 with --log-with; harness.contracts.tracking)
    results_root: Path | None = None   # the results root the run's record goes under (other runs' records)

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"


# What a method returns: its samples with their conditions, plus anything measured on the way.
# Methods that sample through `harness.methods.students.batched_samples` return its `HeldSamples` (each
# process holds its own batches); a method may instead return the whole set as `images`.
@dataclass
class MethodResult:
    images: torch.Tensor | None                # [N, C, H, W] float in [0, 1] (the whole set), or None
    conditions: list[Any]                      # raw conditions (labels / prompts), length N
    tokens: torch.Tensor | None = None         # [N, L, G] hard tokens when the method has them
    extra_metrics: dict[str, "MetricValue"] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric vs step
    stage_seconds: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # e.g. training log summary
    teacher: Any = None                        # the teacher object, for metrics (not recorded)
    selection: "SelectionLog | None" = None    # best-of-N: what was chosen per image (selection.npz)
    provenance: dict[str, Any] = field(default_factory=dict)  # added to the record's provenance
    stage_hashes: dict[str, str] = field(default_factory=dict)  # harness.store.stages: teacher, student weights
    samples: HeldSamples | None = None         # this process's share of the samples (instead of images)

    # The samples as this process holds them: `samples`, or the whole `images` on rank 0 alone.
    def held(self, processes: Processes) -> HeldSamples:
        if self.samples is not None:
            return self.samples
        if self.images is None:
            raise ValueError("a method result needs `samples` or `images`")
        if processes.is_main:
            return HeldSamples.whole(self.images, self.conditions, self.tokens)
        return HeldSamples.none_here(self.conditions)


# The input every metric receives: images with their conditions (a batch of one process for
# `MetricEntry.extract`, the whole set for `compute`), or, for `reduce`, no images and every
# condition. `samples` is the set as uint8 images where one is on disk or in memory (a folder,
# an npz or a `harness.methods.samples.SampleSource`); paper-scale metrics read images from it, not from
# `images`, which is then made from it on first use. `total`: images in the whole set.
class EvalInput:
    def __init__(self, spec: "RunSpec", teacher: "Teacher | None", images: torch.Tensor | None,
                 conditions: list[Any], tokens: torch.Tensor | None, samples: Any = None,
                 total: int | None = None) -> None:
        self.spec, self.teacher, self.conditions, self.tokens = spec, teacher, conditions, tokens
        self.samples = samples
        self._images = images
        self.total = len(conditions) if total is None else total

    # The images [n, C, H, W] float in [0, 1]: as given, else read from `samples` (uint8 / 255).
    @property
    def images(self) -> torch.Tensor:
        if self._images is None and self.samples is not None and not isinstance(self.samples, (str, Path)):
            pixels = np.stack([self.samples[i] for i in range(len(self.samples))])
            self._images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(255.0)
        if self._images is None:
            raise ValueError("this evaluation input holds no images (the reduce step of a per-image metric)")
        return self._images


# One metric value with the protocol that produced it; two values compare only if protocols match.
@dataclass
class MetricValue:
    value: float
    higher_is_better: bool
    protocol: dict[str, Any]                   # implementation, version, features, reference, n, ...

    # The record's form: a value that is not finite is written as null (strict JSON).
    def to_json(self) -> dict[str, Any]:
        from harness.contracts.protocol import protocol_id
        value = float(self.value) if math.isfinite(self.value) else None
        return {"value": value, "higher_is_better": self.higher_is_better,
                "protocol": self.protocol, "protocol_id": protocol_id(self.protocol)}


# Helper for metric implementations: the conditions of an evaluation as a LongTensor of labels.
def labels_of(conditions: Sequence[Any]) -> torch.Tensor:
    return torch.as_tensor([int(c) for c in conditions], dtype=torch.long)

"""The one metric loop: every metric a cell names (`eval.metrics`) on one set of samples, each
value with its protocol, and which values report a reward model the cell optimised (fine-tuning,
TTEO or best-of-N selection), so that the report can mark them "(optimised)".

Every process of a cell runs it on the samples it holds (`harness.contracts.held_samples`), one batch of
images at a time. A per-image metric (`MetricEntry.extract` / `reduce`) extracts its arrays
(features, scores, verdicts) from each batch where the batch was made; only those arrays travel
to rank 0, which reduces them, in index order, to the values. The batches are the same whatever
the number of processes, so the values are too. A metric that needs the whole set of images at
once (e.g. GenEval's layout, the HPS benchmark) gets it on rank 0: directly where rank 0 holds
every batch, else from uint8 sample files that each process writes for its own batches
(`<run dir>/samples/shards/`) and rank 0 reads one file at a time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.contracts import registry
from harness.contracts.entries import EvalInput, MetricValue, RunContext
from harness.contracts.held_samples import SAMPLE_BATCH, HeldSamples
from harness.grid.spec import RunSpec, optimised_rewards
from harness.methods.samples import SampleWriter, to_uint8
from softdimo.teachers.base import Teacher

SAMPLE_FILES_DIR = "samples"          # <run dir>/samples/: the uint8 shards of a dealt set, when needed

#----------------------------------------------------------------------------


# The values of the cell's metrics on the samples, and the names of those that report a reward
# the cell optimised; on rank 0 (the other processes return nothing, after doing their share).
# Two metrics producing the same value name is an error.
def score(spec: RunSpec, teacher: Teacher | None, ctx: RunContext, samples: HeldSamples
          ) -> tuple[dict[str, MetricValue], set[str]]:
    processes = ctx.processes
    names = list(spec.param("eval.metrics"))
    entries = {name: registry.metrics.get(name) for name in names}
    per_image = [n for n in names if entries[n].extract is not None]
    whole = [n for n in names if entries[n].extract is None]
    writer = _sample_files(ctx.run_dir, samples) if whole and samples.dealt else None
    parts: dict[str, list[tuple[int, dict[str, np.ndarray]]]] = {n: [] for n in per_image}
    kept: list[torch.Tensor] = []           # the whole set, for whole-set metrics, where it is all here
    for batch, images in samples:
        inp = EvalInput(spec, teacher, images, samples.conditions_of(batch), batch.tokens, total=samples.total)
        for name in per_image:
            parts[name].append((batch.start, entries[name].extract(inp, ctx)))
        if writer is not None:
            writer.write_shard(batch.start, to_uint8(images), samples.conditions_of(batch))
        elif whole:
            kept.append(images)
    gathered = processes.gather_to_main(parts)
    if writer is not None:
        processes.barrier()                 # every process's shards are on disk
    values, optimised = _reduce(spec, teacher, ctx, samples, gathered, kept, writer) if gathered is not None \
        else ({}, set())
    if writer is not None:                  # rank 0 has read them (a next evaluation may rewrite them); the
        processes.share("sample shards read",  # others wait outside collectives: a whole-set metric may take long
                        waiting_for="its whole-set metrics over the sample shards", log=ctx.log)
    return values, optimised


# Rank 0: every metric's values from the gathered per-image arrays, or from the whole set.
def _reduce(spec: RunSpec, teacher: Teacher | None, ctx: RunContext, samples: HeldSamples,
            gathered: list[dict[str, list[tuple[int, dict[str, np.ndarray]]]]], kept: list[torch.Tensor],
            writer: SampleWriter | None) -> tuple[dict[str, MetricValue], set[str]]:
    values: dict[str, MetricValue] = {}
    optimised: set[str] = set()
    rewards = optimised_rewards(spec)
    reduce_input = EvalInput(spec, teacher, None, samples.conditions, None)
    whole_input: EvalInput | None = None
    for name in spec.param("eval.metrics"):
        entry = registry.metrics.get(name)
        if entry.extract is not None:
            produced = entry.reduce(reduce_input, merge_parts([p[name] for p in gathered]), ctx)
        else:
            whole_input = whole_input or _whole_input(spec, teacher, samples, kept, writer)
            produced = entry.compute(whole_input, ctx)
        for key, value in produced.items():
            if key in values:
                raise ValueError(f"metric value {key!r} produced twice (by {name!r} and earlier)")
            values[key] = value
            if entry.reward is not None and entry.reward in rewards:
                optimised.add(key)
    return values, optimised


# One metric's arrays of every image in index order, from each process's (start, arrays) per batch.
def merge_parts(per_process: list[list[tuple[int, dict[str, np.ndarray]]]]) -> dict[str, np.ndarray]:
    parts = sorted((p for own in per_process for p in own), key=lambda p: p[0])
    if not parts:
        return {}
    return {key: np.concatenate([arrays[key] for _, arrays in parts]) for key in parts[0][1]}


# Score a whole set of images made in one piece (outside sample sets, tests): `score` on one process.
def score_images(spec: RunSpec, teacher: Teacher | None, ctx: RunContext, images: torch.Tensor,
                 conditions: list[Any], tokens: torch.Tensor | None = None) -> tuple[dict[str, MetricValue], set[str]]:
    return score(spec, teacher, ctx, HeldSamples.whole(images, conditions, tokens))


def _sample_files(run_dir: Path, samples: HeldSamples) -> SampleWriter:
    return SampleWriter(run_dir / SAMPLE_FILES_DIR, samples.total, SAMPLE_BATCH, ("npz",))


def _whole_input(spec: RunSpec, teacher: Teacher | None, samples: HeldSamples, kept: list[torch.Tensor],
                 writer: SampleWriter | None) -> EvalInput:
    if writer is not None:
        return EvalInput(spec, teacher, None, samples.conditions, None, samples=writer.read())
    images = torch.cat(kept) if kept else torch.empty(0)
    return EvalInput(spec, teacher, images, samples.conditions, samples.all_tokens())


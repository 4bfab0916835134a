"""Distillation and sampling over 2 CPU processes (gloo) against 1 process at the same global batch.

- Parameters after K steps agree with the one-process run within TOLERANCE: both draw the same
  global batch (every process draws it and keeps its rows) and the gradients are the same sums
  taken in another order (each process sums its 4 rows, then the two partial sums are averaged),
  so they differ by fp32 rounding, ~1e-7 relative; Adam divides by sqrt(v), so a step moves each
  parameter by at most about lr = 2e-4 and rounding moves it by ~1e-7 of that, except for
  gradients that cancel to rounding level. 1e-5 after 3 steps leaves room for those (measured:
  1.1e-6, 14 of 19 tensors bit-equal) and is 20 times below one step's update, so a wrong average
  (a missing 1/world_size, a process training on the other's rows) fails it.
- A student's sample set made by 2 processes, and the digits features each process extracts from
  its own batches, gathered, are bit-identical to one process's: every batch of SAMPLE_BATCH images
  is drawn, decoded and extracted whole by one process.
- A 2-process run (with dropout: per-process streams) resumed from its checkpoint ends
  bit-identical to the uninterrupted one; GAN heads stay identical on both processes.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness.contracts.distributed import SINGLE, processes_over
from harness.contracts.entries import EvalInput, RunContext
from harness.methods.metrics.digits import NETWORK_METRICS
from harness.methods.students import SAMPLE_BATCH, batched_samples
from softdimo.config import DistillConfig, RelaxConfig
from softdimo.parallel import DataParallel
from softdimo.refine.gan import GANConfig, GANRefinement
from softdimo.relax import relax_soft
from softdimo.teachers.digits import DigitsTeacher, build_digits_teacher
from softdimo.train import Distiller, generate, run_distillation
from tests.conftest import TINY_TEACHER

TOLERANCE = 1e-5
STEPS = 3
EXACT = DistillConfig(steps=STEPS, batch_size=8, warmup_steps=0, dropout=0.0, teacher_dropout=0.0,
                      checkpoint_every=0)
RESUMED = DistillConfig(steps=4, batch_size=8, warmup_steps=1, checkpoint_every=2)
SAMPLES = 2 * SAMPLE_BATCH + 37          # three batches: ranks 0, 1, 0


def _draw(student: torch.nn.Module):
    return lambda cond, noise: generate(student, cond, noise, 0.7, 0.1)[0]


# This process's batches of the student's samples: (start, tokens, images, digits features) each.
def _samples(teacher: DigitsTeacher, student: torch.nn.Module, ctx: RunContext) -> list[tuple[Any, ...]]:
    held = batched_samples(teacher, SAMPLES, 11, ctx, _draw(student))
    return [(batch.start, batch.tokens, images, NETWORK_METRICS.extract_features(
        EvalInput(None, teacher, images, held.conditions_of(batch), batch.tokens), ctx)["features"])
        for batch, images in held]


# Every batch of a set, in index order: tokens, images, features.
def _whole(batches: list[tuple[Any, ...]]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    batches = sorted(batches, key=lambda b: b[0])
    return (torch.cat([b[1] for b in batches]), torch.cat([b[2] for b in batches]),
            np.concatenate([b[3] for b in batches]))


# One process of the group: the equivalence run, sampling its student, the resumed run, GAN heads.
def _process(rank: int, world: int, init_file: str, cache: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    parallel, processes = DataParallel(rank, world), processes_over(dist.FileStore(f"{init_file}.store", world), rank, world)
    teacher = build_digits_teacher(TINY_TEACHER, Path(cache))
    exact = run_distillation(Distiller(teacher, relax_soft, RelaxConfig(), EXACT, seed=7, parallel=parallel))

    ctx = RunContext(Path(out), Path(out), processes=processes)
    own = processes.gather_to_main(_samples(teacher, exact.ema, ctx))

    checkpoint = Path(out) / "distill.pt"
    straight = run_distillation(Distiller(teacher, relax_soft, RelaxConfig(), RESUMED, seed=3, parallel=parallel))
    first = Distiller(teacher, relax_soft, RelaxConfig(), RESUMED, seed=3, parallel=parallel)
    run_distillation(first, checkpoint=checkpoint, stop_after=2)
    resumed = run_distillation(Distiller(teacher, relax_soft, RelaxConfig(), RESUMED, seed=3, parallel=parallel),
                               checkpoint=checkpoint)

    gan = GANRefinement(dataclasses.replace(GANConfig(), head_width=8), teacher, seed=5)
    run_distillation(Distiller(teacher, relax_soft, RelaxConfig(), dataclasses.replace(EXACT, steps=2), seed=9,
                               refinement=gan, parallel=parallel))
    heads = processes.gather_to_main(gan.disc.heads.state_dict())
    if rank == 0:
        torch.save({"generator": exact.generator.state_dict(), "ema": exact.ema.state_dict(),
                    "samples": _whole([b for batches in own for b in batches]),
                    "straight": straight.generator.state_dict(), "resumed": resumed.generator.state_dict(),
                    "histories": (straight.history, resumed.history), "heads": heads},
                   Path(out) / "rank0.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tiny_teacher: DigitsTeacher, teacher_cache: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("two_processes")
    mp.start_processes(_process, args=(2, str(out / "group"), str(teacher_cache), str(out)), nprocs=2,
                       start_method="spawn")
    return torch.load(out / "rank0.pt", weights_only=False)


def test_two_processes_train_as_one_at_the_same_global_batch(tiny_teacher: DigitsTeacher,
                                                             two_processes: dict[str, Any]) -> None:
    one = run_distillation(Distiller(tiny_teacher, relax_soft, RelaxConfig(), EXACT, seed=7))
    start, two = tiny_teacher.network.state_dict(), two_processes["generator"]
    one = one.generator.state_dict()
    difference = max((one[k] - two[k]).abs().max().item() for k in one)
    moved = max((two[k] - start[k]).abs().max().item() for k in one)
    assert difference <= TOLERANCE and moved > 10 * TOLERANCE, (difference, moved)


def test_sample_set_and_features_do_not_depend_on_the_number_of_processes(
        tiny_teacher: DigitsTeacher, two_processes: dict[str, Any], tmp_path: Path) -> None:
    ema = _ema(tiny_teacher, two_processes["ema"])          # the same student: the 2-process run's
    tokens, images, features = _whole(_samples(tiny_teacher, ema, RunContext(tmp_path, tmp_path, processes=SINGLE)))
    two_tokens, two_images, two_features = two_processes["samples"]
    assert len(images) == SAMPLES and features.shape == (SAMPLES, features.shape[1])
    assert torch.equal(tokens, two_tokens) and torch.equal(images, two_images)
    assert np.array_equal(features, two_features)


def test_two_process_run_resumes_bit_identically_and_gan_heads_stay_in_step(
        two_processes: dict[str, Any]) -> None:
    straight, resumed = two_processes["straight"], two_processes["resumed"]
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert two_processes["histories"][0] == two_processes["histories"][1]
    rank0, rank1 = two_processes["heads"]
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)


def _ema(teacher: DigitsTeacher, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    ema = copy.deepcopy(teacher.network)
    ema.load_state_dict(state)
    return ema.eval()

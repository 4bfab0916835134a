"""One cell over 1 vs 2 CPU processes (gloo) at the same global batch (mini scale, digits), and 2
processes with and without overlapping the gradient all-reduces with the backward pass.

Each configuration trains the default digits network (random weights: cost does not depend on
them) for --steps Di[M]O steps at distill.batch_size --batch (the global batch: 2 processes do
half the rows each and average gradients), then samples --samples images with its EMA generator
(batches of SAMPLE_BATCH dealt out by index, each process keeping its own). Over 2 processes the
gradients go in buckets of --bucket-kb (softdimo.parallel.GradientSync), all-reduced while backward
runs ("overlap") or all after it ("after backward"), and, as the loop did before the buckets, in one
all-reduce after backward (one bucket). Prints the median seconds per training step and the sampling
throughput; every process runs --threads torch threads. With --rounds R the configurations run R
times in turn (fresh processes each time), so that load from other work on a shared machine falls
on all of them; the ratios are then the median over rounds of each round's ratio.

    python benchmarks/multi_process.py [--steps 30] [--batch 64] [--samples 2000] [--threads 1] [--bucket-kb 256]
                                       [--rounds 1]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness.contracts.distributed import SINGLE, processes_over
from harness.contracts.entries import RunContext
from harness.methods.students import SAMPLE_BATCH, batched_samples
from softdimo.config import DistillConfig, RelaxConfig
from softdimo.parallel import DataParallel
from softdimo.relax import relax_soft
from softdimo.teachers.digits import DigitsConfig, DigitsTeacher, new_network
from softdimo.train import Distiller, generate

WARMUP_STEPS = 3
ONE_BUCKET = 2**40             # bucket_bytes above any network's gradients: one all-reduce


# One process: time the training steps and the sampling; rank 0 writes the figures.
def _measure(rank: int, world: int, overlap: bool, bucket_bytes: int, args: argparse.Namespace, folder: str) -> None:
    torch.set_num_threads(args.threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{folder}/group", rank=rank, world_size=world)
    processes = processes_over(dist.FileStore(f"{folder}/store", world), rank, world) if world > 1 else SINGLE
    torch.manual_seed(0)
    config = DigitsConfig()
    teacher = DigitsTeacher(config, new_network(config), {})
    parallel = DataParallel(rank, world, overlap=overlap, bucket_bytes=bucket_bytes)
    distiller = Distiller(teacher, relax_soft, RelaxConfig(), DistillConfig(batch_size=args.batch), seed=0,
                          parallel=parallel)
    times = []
    for step in range(args.steps + WARMUP_STEPS):
        processes.barrier()
        start = time.perf_counter()
        distiller.train_step()
        if step >= WARMUP_STEPS:
            times.append(time.perf_counter() - start)
    ctx = RunContext(Path(folder), Path(folder), processes=processes)
    processes.barrier()
    start = time.perf_counter()
    batched_samples(teacher, args.samples, 0, ctx, lambda cond, noise: generate(distiller.ema, cond, noise, 0.7, 0.1)[0])
    sample_s = time.perf_counter() - start
    if rank == 0:
        buckets = len(distiller.sync_g.buckets) if distiller.sync_g is not None else 0
        (Path(folder) / "figures.txt").write_text(f"{statistics.median(times)} {sample_s} {buckets}")
    if world > 1:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bucket-kb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {args.threads} thread(s) per process, global batch {args.batch}, "
          f"{args.steps} steps (after {WARMUP_STEPS}), {args.samples} samples in batches of {SAMPLE_BATCH}, "
          f"{args.rounds} round(s)")
    bucket = args.bucket_kb * 1024
    configs = ((1, True, bucket, "1 process"), (2, True, bucket, "2 processes, overlap"),
               (2, False, bucket, "2 processes, after backward"),
               (2, False, ONE_BUCKET, "2 processes, one all-reduce"))
    steps: dict[str, list[float]] = {label: [] for *_, label in configs}
    for round_ in range(args.rounds):
        for world, overlap, bucket_bytes, label in configs:
            with tempfile.TemporaryDirectory() as folder:
                mp.start_processes(_measure, args=(world, overlap, bucket_bytes, args, folder), nprocs=world,
                                   start_method="spawn")
                step_s, sample_s, buckets = map(float, (Path(folder) / "figures.txt").read_text().split())
            steps[label].append(step_s)
            print(f"round {round_ + 1} {label:28} {step_s * 1000:8.1f} ms/step   "
                  f"sampling {args.samples / sample_s:8.1f} images/s   theta's gradient buckets {int(buckets)}")
    one, overlap_s = steps["1 process"], steps["2 processes, overlap"]
    print(f"median over rounds: " + ", ".join(f"{label} {statistics.median(s) * 1000:.1f} ms/step"
                                              for label, s in steps.items()))
    for label in ("2 processes, overlap", "2 processes, after backward", "2 processes, one all-reduce"):
        print(f"speed-up of {label} over 1 process: {_median_ratio(one, steps[label]):.3f}x")
    for label in ("2 processes, after backward", "2 processes, one all-reduce"):
        print(f"step time overlap / {label.removeprefix('2 processes, ')}: {_median_ratio(overlap_s, steps[label]):.3f} "
              f"(per round: {', '.join(f'{a / b:.3f}' for a, b in zip(overlap_s, steps[label]))})")


# The median over rounds of a[r] / b[r].
def _median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


if __name__ == "__main__":
    main()

"""Rank 0's peak host memory while a cell over 2 CPU processes (gloo) samples and evaluates N images
of 256x256, before and after per-process feature extraction, side by side.

Each configuration starts 2 fresh processes that run the harness's own sampling
(`harness.methods.students.batched_samples`) and metric loop (`harness.methods.scoring.score`) on a stand-in
teacher and a stand-in metric of the paper's shapes: the teacher draws 16 tokens per image and
decodes them to a 3 x 256 x 256 float image (bilinear upsampling: cheap, but every image is a real
786 KB float32 tensor); the metric's feature network maps each image to 2048 features (16 x 16
average pooling, then a fixed random linear layer), and its statistic is the features' mean
(the Frechet distance's 2048 x 2048 covariance would add 32 MB and minutes of float64 outer
products on these cores, nothing to the memory at issue). "before" runs the code of a git
revision (`--before`, checked out in a temporary git worktree): rank 0 gathers every image (float32,
pickled by gather_object) and extracts the features alone. "after" runs this checkout: each process
keeps its tokens, decodes and extracts its own batches, and only the features travel.

Printed per configuration: rank 0's peak resident memory over its resident memory just before
sampling (ru_maxrss), the seconds the sampling and evaluation took, and the metric's value (equal
before and after at the same N). The old path at 50,000 images would gather 39 GB of float32
images (several copies while pickling, unpickling and concatenating), more than this machine has,
so "before" is measured at the --before-samples (the largest should be the most that fits in
memory beside the machine's other work) and its growth per image between the two largest is
extrapolated; "after" is also measured at --samples itself. The default --before is the last
commit before per-process extraction.

    python benchmarks/eval_memory.py [--samples 50000] [--before-samples 1000 2000 3000] [--before REV]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIDE, FEATURES, TOKENS, CLASSES = 256, 2048, 16, 1000
BEFORE_PER_PROCESS = "635b585"      # the last commit where rank 0 gathered every image and extracted alone
EVEN_SIZE = 2 * 500                 # 2 processes x the harness's sampling batch: both hold as many images

#----------------------------------------------------------------------------
# The driver: one pair of processes on the harness code found first on sys.path.


def _driver(rank: int, world: int, n: int, folder: str) -> None:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from harness.contracts import registry
    from harness.contracts.entries import MetricEntry, MetricValue, RunContext
    from harness.methods.scoring import score
    from harness.methods.students import batched_samples
    from softdimo.teachers.base import Condition

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/group", rank=rank, world_size=world)
    projection = torch.randn(3 * 16 * 16, FEATURES, generator=torch.Generator().manual_seed(0)) / 28.0

    class StandInTeacher:               # what batched_samples and score read of a teacher
        def eval_conditions(self, count: int) -> list[int]:
            return [i % CLASSES for i in range(count)]

        def encode_condition(self, labels: list[int]) -> Condition:
            return Condition("class", {"labels": torch.as_tensor(labels)}, list(labels))

        def decode(self, tokens: torch.Tensor, cond: Condition) -> torch.Tensor:
            grid = tokens.float().view(-1, 1, 4, 4).expand(-1, 3, -1, -1) / 255.0
            return F.interpolate(grid, size=(SIDE, SIDE), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def features(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.avg_pool2d(images[i:i + 50], 16).flatten(1) @ projection
                          for i in range(0, len(images), 50)])

    def value(mean: torch.Tensor) -> dict[str, Any]:
        return {"standin": MetricValue(float(mean.norm()), False, {"name": "standin-2048"})}

    per_image = hasattr(__import__("harness.contracts.entries", fromlist=["x"]), "per_image_metric")
    if per_image:
        from harness.contracts.entries import per_image_metric
        entry = per_image_metric("standin", lambda inp, ctx: {"features": features(inp.images).numpy()},
                                 lambda inp, arrays, ctx: value(torch.from_numpy(arrays["features"]).mean(0)))
    else:
        entry = MetricEntry("standin", lambda inp, ctx: value(features(inp.images).mean(0)))
    registry.metrics.register("standin", entry)

    class Spec:                          # what score reads of a spec
        refinement, params = "none", ()

        def param(self, key: str) -> Any:
            return ("standin",)

    teacher, processes = StandInTeacher(), _processes(rank, world, folder)
    ctx = RunContext(Path(folder), Path(folder), processes=processes)
    draw = lambda cond, noise: noise.randint(256, TOKENS, 1)   # noqa: E731
    before = _rss_kb()
    start = time.perf_counter()
    if per_image:
        values, _ = score(Spec(), teacher, ctx, batched_samples(teacher, n, 0, ctx, draw))
    else:
        tokens, images, conditions = batched_samples(teacher, n, 0, ctx, draw)
        values, _ = score(Spec(), teacher, ctx, images, conditions, tokens) if rank == 0 else ({}, set())
    seconds = time.perf_counter() - start
    if rank == 0:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        (Path(folder) / "rank0.json").write_text(json.dumps({
            "peak_mb": (peak - before) / 1024, "seconds": seconds, "value": values["standin"].value}))
    dist.destroy_process_group()


# The harness's processes of this group, in the API of the code being measured: revisions before
# `processes_over` made them from the rank alone.
def _processes(rank: int, world: int, folder: str) -> Any:
    import torch.distributed as dist
    try:
        from harness.contracts.distributed import processes_over
    except ImportError:
        from harness.contracts.distributed import Processes
        return Processes(rank, world)
    return processes_over(dist.FileStore(f"{folder}/store", world), rank, world)


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _drive(n: int, folder: str) -> None:
    import torch.multiprocessing as mp
    mp.start_processes(_driver, args=(2, n, folder), nprocs=2, start_method="spawn")

#----------------------------------------------------------------------------
# The benchmark: each configuration in fresh processes, on its own code.


def measure(tree: Path, n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--drive", str(n), folder], cwd=tree,
                       env=env, check=True)
        return json.loads((Path(folder) / "rank0.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--before-samples", type=int, nargs="+", default=[1000, 2000, 3000],
                        help=f"sizes for the old code path (at least 2, multiples of {EVEN_SIZE}, so that both processes "
                             f"hold as many batches; the two largest give the growth per image)")
    parser.add_argument("--before", default=BEFORE_PER_PROCESS,
                        help=f"git revision of the old code path (default: {BEFORE_PER_PROCESS})")
    parser.add_argument("--drive", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        _drive(int(args.drive[0]), args.drive[1])
        return
    sizes = sorted(set(args.before_samples))
    if len(sizes) < 2:
        parser.error(f"--before-samples needs at least 2 different sizes, got {args.before_samples}")
    if any(n % EVEN_SIZE for n in sizes):
        parser.error(f"--before-samples must be multiples of {EVEN_SIZE} (rank 0's own batches would grow "
                     f"unevenly between sizes and bias the growth per image), got {args.before_samples}")
    commit = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    available = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemAvailable:"))
    print(f"2 processes (gloo, 1 thread each), {SIDE}x{SIDE} float32 images (786 KB), {FEATURES} features; "
          f"before: {args.before} ({commit}), after: this checkout; {int(available) / 2**20:.1f} GiB available")
    print(f"{'code':8} {'images':>7} {'rank 0 peak MB':>15} {'seconds':>8} {'value':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), commit], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            rows = [("before", old, n) for n in sizes]
            rows += [("after", ROOT, n) for n in sizes if n != args.samples] + [("after", ROOT, args.samples)]
            peaks: dict[tuple[str, int], float] = {}
            for code, tree, n in rows:
                r = measure(tree, n)
                peaks[code, n] = r["peak_mb"]
                print(f"{code:8} {n:7d} {r['peak_mb']:15.0f} {r['seconds']:8.1f} {r['value']:10.6f}")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=True)
    n1, n2 = sizes[-2:]
    per_image = (peaks["before", n2] - peaks["before", n1]) / (n2 - n1)
    print(f"before: {per_image:.2f} MB more per image (between {n1} and {n2}); extrapolated to {args.samples} "
          f"images: {(peaks['before', n2] + per_image * (args.samples - n2)) / 1024:.1f} GB")


if __name__ == "__main__":
    main()

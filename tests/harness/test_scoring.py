"""The metric loop over 2 CPU processes (gloo) against one process holding the whole set.

- A per-image metric's arrays are extracted by the process that holds each batch and only they are
  gathered: its value on rank 0 equals the one-process value bit for bit, and the other process
  returns nothing.
- A whole-set metric gets the set on rank 0 from the uint8 shards each process wrote for its own
  batches (read one shard at a time): exactly `to_uint8` of every image, in index order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness.contracts import registry
from harness.contracts.distributed import SINGLE, processes_over
from harness.contracts.entries import EvalInput, MetricEntry, MetricValue, RunContext, per_image_metric
from harness.contracts.held_samples import SAMPLE_BATCH, HeldBatch, HeldSamples
from harness.methods.samples import ShardedSamples, to_uint8
from harness.methods.scoring import SAMPLE_FILES_DIR, score

N = 2 * SAMPLE_BATCH + 200                 # batches 0, 1, 2: ranks 0, 1, 0


class _Spec:                               # what score reads of a spec
    refinement, params = "none", ()

    def param(self, key: str) -> Any:
        return ("test_pixel_mean", "test_whole_set")


def _images() -> torch.Tensor:
    return torch.rand(N, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _register() -> None:
    if "test_pixel_mean" in registry.metrics:
        return
    registry.metrics.register("test_pixel_mean", per_image_metric(
        "test_pixel_mean", lambda inp, ctx: {"mean": inp.images.mean((1, 2, 3)).numpy()},
        lambda inp, arrays, ctx: {"pixel_mean": MetricValue(float(np.mean(arrays["mean"], dtype=np.float64)),
                                                             True, {"name": "test", "n": inp.total})}))

    def whole(inp: EvalInput, ctx: RunContext) -> dict[str, MetricValue]:
        source = inp.samples
        pixels = np.stack([source[i] for i in range(len(source))]) if source is not None else to_uint8(inp.images)
        torch.save({"pixels": pixels, "sharded": isinstance(source, ShardedSamples)}, ctx.run_dir / "whole.pt")
        return {"whole": MetricValue(float(pixels.mean()), True, {"name": "test-whole"})}
    registry.metrics.register("test_whole_set", MetricEntry("test_whole_set", whole))


def _process(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    _register()
    images = _images()
    own = [HeldBatch(s, images=images[s:s + SAMPLE_BATCH])
           for k, s in enumerate(range(0, N, SAMPLE_BATCH)) if k % world == rank]
    held = HeldSamples(list(range(N)), own, dealt=True)
    ctx = RunContext(Path(out), Path(out), processes=processes_over(dist.FileStore(f"{init_file}.store", world), rank, world))
    values, _ = score(_Spec(), None, ctx, held)
    torch.save({k: v.value for k, v in values.items()}, Path(out) / f"values{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scoring")
    mp.start_processes(_process, args=(2, str(out / "group"), str(out)), nprocs=2, start_method="spawn")
    return out


def test_per_image_and_whole_set_metrics_over_two_processes(two: Path, tmp_path: Path) -> None:
    _register()
    one, _ = score(_Spec(), None, RunContext(tmp_path, tmp_path, processes=SINGLE),
                   HeldSamples.whole(_images(), list(range(N))))
    rank0, rank1 = (torch.load(two / f"values{r}.pt") for r in range(2))
    assert rank1 == {} and rank0["pixel_mean"] == one["pixel_mean"].value
    whole = torch.load(two / "whole.pt", weights_only=False)
    assert whole["sharded"] and np.array_equal(whole["pixels"], to_uint8(_images()))
    shards = sorted(p.name for p in (two / SAMPLE_FILES_DIR / "shards").glob("*.npz"))
    assert shards == ["000000-000500.npz", "000500-001000.npz", "001000-001200.npz"]
    assert not (tmp_path / SAMPLE_FILES_DIR).exists()        # one process: the whole set in memory, no files

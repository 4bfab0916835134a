"""The bucketed, overlapped gradient averaging of softdimo/parallel.py over 2 CPU processes (gloo).

- With buckets small enough that a 3-layer network spans several, buckets are sent while backward
  still runs (overlap), and the averaged gradients equal (g0 + g1) / 2 computed by hand bit for bit:
  with two processes gloo's sum is the one addition g0 + g1, and the division is the same.
- Without overlap every bucket is sent after backward; the result is the same.
- A parameter that no process used keeps no gradient; one that only rank 0 used is an error on both
  processes, naming it (no hang).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from softdimo.parallel import DataParallel, GradientSetMismatch


def _network() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3), nn.Linear(3, 3))


# The loss of this process's rows; `skip_last` leaves the last layer out (it gets no gradient).
def _backward(net: nn.Sequential, rank: int, skip_last: bool = False) -> None:
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(rank))
    body = net[:-1] if skip_last else net
    body(x).square().mean().backward()


def _process(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    results: dict[str, object] = {}
    for skip_last in (False, True):                        # True: the last layer unused everywhere
        own = _network()
        _backward(own, rank, skip_last)
        results[f"own_{skip_last}"] = [None if p.grad is None else p.grad.clone() for p in own.parameters()]
        for overlap in (True, False):
            net = _network()
            sync = DataParallel(rank, world, overlap=overlap, bucket_bytes=1024).gradient_sync(
                list(net.named_parameters()), "test")
            _backward(net, rank, skip_last)
            results[f"sent_during_backward_{overlap}_{skip_last}"] = len(sync.pending)
            results["buckets"] = len(sync.buckets)
            sync.finish()
            results[f"grads_{overlap}_{skip_last}"] = [None if p.grad is None else p.grad.clone()
                                                       for p in net.parameters()]
    net = _network()
    sync = DataParallel(rank, world, bucket_bytes=1024).gradient_sync(list(net.named_parameters()), "test")
    _backward(net, rank, skip_last=rank == 1)              # rank 1 leaves out what rank 0 uses
    try:
        sync.finish()
        results["mismatch"] = None
    except GradientSetMismatch as e:
        results["mismatch"] = str(e)
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("gradient_sync")
    mp.start_processes(_process, args=(2, str(out / "group"), str(out)), nprocs=2, start_method="spawn")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_buckets_overlap_backward_and_average_exactly(synced: list[dict]) -> None:
    rank0, rank1 = synced
    assert rank0["buckets"] >= 3 and rank0["sent_during_backward_True_False"] >= 2
    assert rank0["sent_during_backward_False_False"] == 0
    for skip_last in (False, True):
        expected = [None if g0 is None else (g0 + g1) / 2
                    for g0, g1 in zip(rank0[f"own_{skip_last}"], rank1[f"own_{skip_last}"])]
        assert (expected[-1] is None) == skip_last          # unused everywhere: no gradient anywhere
        for overlap in (True, False):
            for result in synced:
                got = result[f"grads_{overlap}_{skip_last}"]
                assert all((g is None and e is None) or torch.equal(g, e) for g, e in zip(got, expected))


def test_a_gradient_on_one_process_only_is_an_error_everywhere(synced: list[dict]) -> None:
    for result in synced:
        message = result["mismatch"]
        assert message is not None and "test: 5.weight (on 1 of 2)" in message and "5.bias (on 1 of 2)" in message

"""Tolerances of float32 comparisons, derived from the computation instead of read off a machine.

Two float32 computations of the same function (our implementation and upstream's fixture, or two
kernel paths: another CPU's vector width, another batch split, other processes) differ by their
rounding errors, which depend on how the arithmetic is ordered, so the same code on another CPU
can differ in the last bits. The model here, for a value produced `depth` reductions deep (each a
dot product or sum of at most `reduction` terms: matrix products, attention, norms, softmax) from
values of size about `magnitude`:

- one reduction of n terms rounds with relative error at most about sqrt(n) u (u = 2^-24, float32's
  unit roundoff; the probabilistic bound of Higham and Mary, SIAM J. Sci. Comput. 2019, holding
  with high probability for a constant of order one, taken as SAFETY = 4);
- errors of successive reductions add (normalised layers pass relative errors on about unchanged),
  so a value `depth` reductions deep carries about depth x sqrt(n) x u x magnitude;
- each of the two computations carries such an error: their difference is at most twice that.

`magnitude` is the size of the compared values (their largest absolute value, taken from the
reference); where a computation passes through larger intermediate values than its output, the
caller gives those.
"""
from __future__ import annotations

import math

import torch

U32 = 2.0 ** -24            # float32 unit roundoff
U64 = 2.0 ** -53            # float64's, for computations checked in double precision
SAFETY = 4.0                # the probabilistic bound's constant, and cancellation in the compared values
# Inception v3 up to its pool3 features (the FID networks, also the tests' stand-ins of the same
# architecture): about 50 convolutions along its longest path, at most 2,048 terms each.
INCEPTION = (50, 2048)


# Absolute tolerance between two float32 computations of values of size `magnitude`, `depth`
# reductions of at most `reduction` terms deep (the model above); `unit` = U64 for float64.
def rounding_atol(magnitude: float | torch.Tensor, depth: int, reduction: int, unit: float = U32) -> float:
    size = float(magnitude.detach().abs().max()) if isinstance(magnitude, torch.Tensor) else float(magnitude)
    return 2.0 * SAFETY * depth * math.sqrt(reduction) * unit * max(size, 1e-30)


# assert_close keyword arguments for comparing with `reference` under the model.
def rounding_close(reference: torch.Tensor, depth: int, reduction: int) -> dict[str, float]:
    return {"atol": rounding_atol(reference, depth, reduction), "rtol": 0.0}


# Assert `actual` equals `expected` (an upstream output, or another kernel path's) within the model's
# tolerance for a network of `shape` = (sequential reductions, longest reduction).
def assert_parity(actual: torch.Tensor, expected: torch.Tensor, shape: tuple[int, int]) -> None:
    torch.testing.assert_close(actual, expected, **rounding_close(expected, *shape))

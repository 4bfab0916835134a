"""The settings that decide a mini cell's floating-point results, pinned for every job the launcher
starts (local workers, SLURM tasks), so that the stored mini numbers do not depend on which kernels
a machine's CPU would otherwise select (docs/reproducibility.md, `benchmarks/numerics_sensitivity.py`):

- torch's ATen kernels at their AVX2 build (`ATEN_CPU_CAPABILITY`), which every x86-64 CPU of the
  kind runs alike (AVX-512 machines would otherwise run other vectorised kernels, with other
  rounding in reductions and transcendental functions, and another `torch.randn`);
- MKL's conditional numerical reproducibility at its AVX2 branch (`MKL_CBWR`: the same results on
  every Intel CPU with AVX2; other vendors' CPUs run MKL's AUTO branch in that mode instead, so an
  Intel and an AMD machine can still differ there: MKL's COMPATIBLE branch, the one every vendor
  runs alike, costs 1.6-1.9x the mini steps, `docs/reproducibility.md`) and oneDNN's JIT kernels
  capped at AVX2 (`ONEDNN_MAX_CPU_ISA`), the libraries behind torch's matrix products and attention;
- numpy's OpenBLAS at its Haswell (AVX2) kernels (`OPENBLAS_CORETYPE`), used by the metrics;
- one thread per process for torch, OpenMP, MKL and OpenBLAS (a reduction split over threads
  rounds differently), so a mini cell's numbers do not depend on how many cells run at once.

Paper-scale cells run on GPUs and take the libraries' defaults. Cells run by the in-process
`debug` executor inherit the launching process, whose libraries are already loaded: their records
say `pinned: false`.
"""
from __future__ import annotations

import os
import platform
from typing import Any, Mapping

# The pinned environment of a mini cell's process on x86-64 (read when the libraries load).
MINI_PINS_X86: Mapping[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}
MINI_THREADS = 1            # torch threads of a mini cell's process

#----------------------------------------------------------------------------


# The environment variables a job of `scale` gets on this machine: the pins for mini cells on
# x86-64, none otherwise (paper scale, or an architecture without these libraries' x86 kernels).
def pinned_environment(scale: str) -> dict[str, str]:
    if scale != "mini" or platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    return dict(MINI_PINS_X86)


# Whether this process runs with the pins of `scale` and which settings differ (its variables, and
# the kernel level ATen actually dispatches): written into every record's provenance.
def pin_state(scale: str) -> dict[str, Any]:
    import torch
    wanted = pinned_environment(scale)
    differ = {k: os.environ.get(k) for k, v in wanted.items() if os.environ.get(k) != v}
    capability = torch.backends.cpu.get_cpu_capability()
    if "ATEN_CPU_CAPABILITY" in wanted and capability.lower() != wanted["ATEN_CPU_CAPABILITY"]:
        differ["aten dispatch"] = capability
    if wanted and torch.get_num_threads() != MINI_THREADS:
        differ["torch threads"] = str(torch.get_num_threads())
    return {"pinned": bool(wanted) and not differ, "settings": wanted, "differ": differ}

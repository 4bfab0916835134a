"""The machine a record was computed on, as far as it decides floating-point results: the CPU
(model, vendor, the vector instruction sets it offers), what torch makes of it (the ATen kernel
level it dispatches, the MKL and oneDNN builds, numpy's BLAS and the kernels it chose), thread
counts, the environment variables that steer those libraries, and a hash of every installed
package. Written into every record's provenance (`harness.store.provenance`), so two records can be
told apart by what differs (`python -m harness.report.verify`, docs/reproducibility.md).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import re
from pathlib import Path
from typing import Any

import torch

# Vector instruction sets that change which kernels the numeric libraries dispatch.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl",
             "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx512ifma", "avx512vbmi", "amx_tile", "amx_bf16",
             "amx_int8", "asimd", "sve", "sve2")
# Environment variables read by torch, MKL, oneDNN, OpenMP and OpenBLAS that change results.
NUMERIC_ENV = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA",
               "DNNL_MAX_CPU_ISA", "OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
               "MKL_NUM_THREADS", "SOFTDIMO_THREADS")

#----------------------------------------------------------------------------


# CPU model, vendor and the instruction sets of ISA_FLAGS it has (from /proc/cpuinfo on Linux).
@functools.lru_cache(maxsize=1)
def cpu() -> dict[str, Any]:
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "vendor_id", "flags", "Features") and key not in fields:
            fields[key] = value.strip()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {"model": fields.get("model name") or platform.processor() or platform.machine(),
            "vendor": fields.get("vendor_id", ""), "arch": platform.machine(),
            "isa": [f for f in ISA_FLAGS if f in flags], "cores": os.cpu_count()}


# The numeric builds torch runs with: ATen's dispatched kernel level, MKL and oneDNN versions.
@functools.lru_cache(maxsize=1)
def torch_build() -> dict[str, Any]:
    config = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([\w.\-]+)", config)
    dnn = re.search(r"MKL-DNN v([\w.\-]+)", config)
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl": mkl.group(1) if mkl else None, "onednn": dnn.group(1) if dnn else None,
            "mkldnn_enabled": bool(torch.backends.mkldnn.enabled)}


# numpy's BLAS: library, version and the kernel family it chose for this CPU (threadpoolctl).
def numpy_blas() -> list[dict[str, Any]]:
    import numpy  # noqa: F401  (loads the BLAS threadpoolctl inspects)
    from threadpoolctl import threadpool_info
    return [{k: pool.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for pool in threadpool_info() if pool.get("user_api") == "blas"]


# sha256 of the sorted `name==version` lines of every installed distribution, and their count.
@functools.lru_cache(maxsize=1)
def package_set() -> dict[str, Any]:
    lines = sorted({f"{(d.metadata['Name'] or '').lower()}=={d.version}" for d in importlib.metadata.distributions()})
    return {"sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest(), "count": len(lines)}


# Everything above, plus this process's thread counts and the numeric environment variables set.
def machine() -> dict[str, Any]:
    return {"cpu": cpu(), "torch": torch_build(), "numpy_blas": numpy_blas(),
            "threads": {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads()},
            "env": {k: os.environ[k] for k in NUMERIC_ENV if k in os.environ},
            "packages": package_set()}

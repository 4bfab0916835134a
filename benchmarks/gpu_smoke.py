"""One GPU smoke run: what a paper-scale MaskBit cell costs on this GPU, measured in a few minutes.

    python benchmarks/gpu_smoke.py                         # one GPU, full size, < 8 minutes
    python benchmarks/gpu_smoke.py --device cpu --tiny     # the same code path on a CPU, tiny size

With the released MaskBit architecture (14-bit generator and tokenizer, random weights: the cost
does not depend on them) it measures, each after warm-up, with the device synchronised around every
timer:

1. a Di[M]O training step (`softdimo.train.Distiller`: hard tokens, no refinement, the paper
   defaults) at fp32 and bf16 (`distill.precision`; on CUDA also tf32): median seconds per step
   and the peak memory (`torch.cuda.max_memory_allocated`), at `--batch` images per GPU;
2. sampling: the one-step student (`softdimo.train.generate`, then the tokenizer's decode) at
   each precision, against the teacher's own 16-step sampler with CFG (`MaskBitTeacher.sample`,
   float32 as the harness runs it, and under bf16 autocast for comparison): images per second;
3. Inception-v3 features through the harness's path (`harness.methods.metrics.features`, batch 50): the
   clean-fid TorchScript extractor (FID, PRDC) and torch-fidelity's (IS), with the weight files
   when the assets resolve, else seeded random weights of the same architecture (same cost; the
   output says which).

It prints a summary and writes a CSV in the step-cost table's format (benchmarks/step_costs.csv):
rows maskbit/none/<precision>/<GPU kind>, status `measured`, plus columns the cost plan ignores
(peak memory, throughputs, device). Feed it to the cost plan with
`python -m harness.run ... --dry-run --step-costs gpu_smoke.csv`, or append its rows to the table.
A measurement that fails (e.g. out of memory) is reported and the others still run; the run stops
measuring once `--budget-s` is spent.
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.launch.cost_plan import StepCost, write_rows  # noqa: E402
from softdimo.config import DistillConfig, RelaxConfig  # noqa: E402
from softdimo.precision import precision_region  # noqa: E402
from softdimo.relax import relax_hard  # noqa: E402
from softdimo.teachers.base import ImageNoise  # noqa: E402
from softdimo.teachers.maskbit import MaskBitConfig, MaskBitTeacher, random_modules  # noqa: E402
from softdimo.train import Distiller, generate  # noqa: E402

PRECISIONS = ("fp32", "bf16", "tf32")       # tf32 only where it exists (CUDA); elsewhere it is fp32
GPU_KINDS = ("h200", "h100", "a100", "l40s", "a40", "a10", "v100", "t4", "l4")
INCEPTION_BATCH = 50           # harness.methods.metrics.fid.evaluate's default batch

#----------------------------------------------------------------------------


# Wait for the device's queued work (timers must not stop before the GPU does).
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Median seconds of `fn()` over `repeats` runs after `warmup` runs, and the peak memory (GiB) it
# allocated on a CUDA device (None elsewhere).
def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> tuple[float, float | None]:
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
    return statistics.median(times), peak


# The GPU kind of the step-cost table from the device's name ("NVIDIA H100 80GB HBM3" -> h100).
def gpu_kind(device: torch.device) -> str:
    if device.type != "cuda":
        return device.type
    name = torch.cuda.get_device_name(device).lower()
    return next((k for k in GPU_KINDS if k in name), name.replace("nvidia", "").strip().split()[0])


# A MaskBit teacher with seeded random weights on `device` (full: the released 14-bit architecture).
def build_teacher(size: str, device: torch.device) -> MaskBitTeacher:
    config = MaskBitConfig(size=size)
    network, tokenizer = random_modules(config)
    return MaskBitTeacher(config, network, tokenizer, info={"weights": "random"}).to(device)


# Seconds per Di[M]O step and peak memory at one precision; halves the batch once on out-of-memory.
def measure_step(teacher: MaskBitTeacher, precision: str, batch: int, steps: int, warmup: int,
                 device: torch.device) -> dict[str, Any]:
    for b in (batch, batch // 2):
        if b < 1:
            break
        try:
            config = DistillConfig(batch_size=b, precision=precision, warmup_steps=0, lr_generator=1e-5,
                                   lr_aux=1e-5, teacher_cfg=2.0, r_init=0.6, adam_eps=1e-6)
            distiller = Distiller(teacher, relax_hard, RelaxConfig(), config, seed=0, device=device)
            seconds, peak = timed(distiller.train_step, device, steps, warmup)
            return {"batch": b, "step_s": seconds, "peak_mem_gib": peak}
        except torch.cuda.OutOfMemoryError:
            print(f"  {precision} step at batch {b}: out of memory" + ("; trying half" if b == batch else ""))
        finally:
            distiller = None                     # noqa: F841  (free the copies before the next try)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    raise RuntimeError(f"{precision} step: out of memory down to batch {batch // 2}")


# Per-image seconds of the one-step student (forward, decode) and of the 16-step teacher sampler.
def measure_sampling(teacher: MaskBitTeacher, precision: str, images: int, sampler_images: int, batch: int,
                     device: torch.device, repeats: int, warmup: int) -> dict[str, Any]:
    net = teacher.network
    n = min(batch, images)
    cond = teacher.encode_condition([i % teacher.num_classes for i in range(n)]).to(device)
    noise = ImageNoise(0, range(n), device)
    tokens = generate(net, cond, noise, 0.6, 0.1, precision=precision)[0]
    per_forward, _ = timed(lambda: generate(net, cond, noise, 0.6, 0.1, precision=precision), device,
                           repeats * max(1, images // n), warmup)

    def decode() -> None:
        with torch.no_grad():
            teacher.decode(tokens, cond)
    per_decode, _ = timed(decode, device, repeats * max(1, images // n), warmup)
    k = min(batch, sampler_images)
    cond_k = teacher.encode_condition([i % teacher.num_classes for i in range(k)]).to(device)

    def sample16() -> None:
        with torch.no_grad(), precision_region(precision, device):
            teacher.sample(cond_k, 16, 2.0, ImageNoise(1, range(k), device), 1.0, 4.5)
    per_sampler, _ = timed(sample16, device, max(1, sampler_images // k), warmup)
    return {"forward_1k_s": 1000 * per_forward / n, "decode_1k_s": 1000 * per_decode / n,
            "one_step_img_s": n / (per_forward + per_decode),
            "sampler16_img_s": 1 / (per_sampler / k + per_decode / n)}


# Seconds per 1k images of the harness's Inception feature paths (clean-fid, torch-fidelity), and
# which weights were used.
def measure_inception(images: int, resolution: int, device: torch.device, repeats: int, warmup: int
                      ) -> dict[str, Any]:
    from harness.methods.metrics import features
    from harness.methods.metrics.random_weights import write_cleanfid_inception, write_tfidelity_inception
    from harness.methods.samples import array_samples
    from harness.store import assets
    rng = np.random.default_rng(0)
    source = array_samples(rng.integers(0, 256, (images, resolution, resolution, 3), dtype=np.uint8), "smoke")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, writer in (("clean-fid/legacy_tensorflow", write_cleanfid_inception),
                            ("torch-fidelity/inception-v3-compat", write_tfidelity_inception)):
            spec = features.EXTRACTORS[key]
            try:
                weights, which = assets.resolve(spec.weights_asset), "released weights"
            except Exception:                               # missing or corrupt: the same network, random
                path = Path(tmp) / assets.manifest.get(spec.weights_asset).filename   # the released file's name
                weights, which = writer(path), "random weights (no asset)"
            extractor = features.load_extractor(key, weights, device)
            seconds, _ = timed(lambda: features.extract_features(source, extractor, INCEPTION_BATCH), device,
                               repeats, warmup)
            out[key] = {"s_per_1k": 1000 * seconds / images, "weights": which}
    return out


#----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="the tiny MaskBit (tests, CPU)")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default 32; tiny 4)")
    parser.add_argument("--out", type=Path, default=Path("gpu_smoke.csv"), help="CSV to write")
    parser.add_argument("--gpu-kind", help="the table's GPU kind (default: from the device name)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop measuring after this many seconds")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    begin = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available (use --device cpu --tiny)")
    tiny = args.tiny
    batch = args.batch or (4 if tiny else 32)
    # measured repeats, warm-up runs, images of the one-step sampler, of the 16-step one, of Inception
    steps, repeats, warmup = (1, 1, 1) if tiny else (5, 3, 2)
    images, sampler_images, inception_images = (4, 2, 2) if tiny else (512, 64, 500)
    precisions = PRECISIONS if device.type == "cuda" else PRECISIONS[:2]
    kind = args.gpu_kind or gpu_kind(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu_smoke: {name} ({kind}), torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"{'tiny' if tiny else 'full-size'} MaskBit, batch {batch}")
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        print(f"  memory {total / 2 ** 30:.1f} GiB ({free / 2 ** 30:.1f} free), capability "
              f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))}")
    teacher = build_teacher("tiny" if tiny else "full", device)
    print(f"  teacher: {sum(p.numel() for p in teacher.network.parameters()) / 1e6:.1f}M generator parameters, "
          f"{sum(p.numel() for p in teacher.tokenizer.parameters()) / 1e6:.1f}M tokenizer (built in "
          f"{time.perf_counter() - begin:.0f} s)")

    results: dict[str, dict[str, Any]] = {p: {} for p in precisions}
    failures: list[str] = []

    def attempt(label: str, fn: Callable[[], Any]) -> Any:
        if time.perf_counter() - begin > args.budget_s:
            failures.append(f"{label}: skipped (over --budget-s {args.budget_s:g})")
            return None
        try:
            start = time.perf_counter()
            value = fn()
            print(f"  {label}: done in {time.perf_counter() - start:.1f} s")
            return value
        except Exception as e:                       # report it and measure the rest
            failures.append(f"{label}: {type(e).__name__}: {e}")
            traceback.print_exc()
            return None

    for precision in precisions:
        step = attempt(f"{precision} step", lambda: measure_step(teacher, precision, batch, steps, warmup, device))
        sampling = attempt(f"{precision} sampling", lambda: measure_sampling(
            teacher, precision, images, sampler_images, batch, device, repeats, warmup))
        results[precision].update(step or {})
        results[precision].update(sampling or {})
    resolution = teacher.layout.image_shape[-1]
    inception = attempt("Inception features", lambda: measure_inception(
        inception_images, resolution, device, repeats, 0 if tiny else 1)) or {}

    eval_1k = sum(v["s_per_1k"] for v in inception.values()) if len(inception) == 2 else math.nan
    date = dt.date.today().isoformat()
    rows, extra = [], []
    for precision in precisions:
        r = results[precision]
        print(f"{precision}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in r.items()))
        if not {"step_s", "forward_1k_s"} <= r.keys() or math.isnan(eval_1k):
            continue
        source = (f"benchmarks/gpu_smoke.py on {name}, torch {torch.__version__}, {date}; "
                  f"{'tiny' if tiny else 'full-size'} MaskBit with random weights; Inception "
                  f"{', '.join(sorted({v['weights'] for v in inception.values()}))}")
        rows.append(StepCost("maskbit", "none", precision, kind, r["batch"], round(r["step_s"], 5),
                             round(r["forward_1k_s"], 4), round(r["decode_1k_s"], 4), round(eval_1k, 4),
                             "measured", source))
        extra.append({"peak_mem_gib": None if r["peak_mem_gib"] is None else round(r["peak_mem_gib"], 2),
                      "one_step_img_s": round(r["one_step_img_s"], 2), "sampler16_img_s": round(r["sampler16_img_s"], 3),
                      "device_name": name})
    for key, v in inception.items():
        print(f"Inception {key}: {v['s_per_1k']:.3g} s per 1k images ({v['weights']})")
    if rows:
        write_rows(args.out, rows, extra)
        print(f"wrote {len(rows)} step-cost row(s) to {args.out}")
    for line in failures:
        print(f"FAILED {line}")
    print(f"total {time.perf_counter() - begin:.0f} s")
    return 1 if failures or not rows else 0


if __name__ == "__main__":
    sys.exit(main())

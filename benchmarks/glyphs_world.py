"""What the glyphs world costs to build (benchmarks/README.md, "Glyphs"): the tokenizer (rendering the
splits, training, tokenising them) and the MDM of the default configuration, trained from nothing in
a fresh temporary cache, and the digits teacher's default configuration after it in the same
process, as a side-by-side reference for the machine's speed at the time.

    python benchmarks/glyphs_world.py [--threads 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from softdimo.teachers.digits import DigitsConfig, build_digits_teacher
from softdimo.teachers.glyphs import GlyphsConfig, build_glyphs_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    def log(line: str) -> None:
        if "step" not in line or "/" not in line or line.split("step ")[1].startswith("0/"):
            print(f"{time.perf_counter() - start:8.1f} s  {line}", flush=True)

    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        glyphs = build_glyphs_teacher(GlyphsConfig(), Path(cache), log)
        glyphs_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        digits = build_digits_teacher(DigitsConfig(), Path(cache), log)
        digits_s = time.perf_counter() - t0
    tok = glyphs.info["tokenizer"]
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    print(f"glyphs tokenizer {tok['build_seconds']:.1f} s (rendering, {tok['steps']} steps, tokenising; test "
          f"reconstruction MSE {tok['test_recon_mse']:.5f}, {tok['test_codes_used']} codes in use)")
    print(f"glyphs MDM       {glyphs.info['build_seconds']:.1f} s ({glyphs.info['steps']} steps, final loss "
          f"{glyphs.info['final_loss']:.3f})")
    print(f"glyphs total     {glyphs_s:.1f} s")
    print(f"digits teacher   {digits_s:.1f} s ({digits.info['steps']} steps), side by side: glyphs / digits "
          f"{glyphs_s / digits_s:.2f}x")


if __name__ == "__main__":
    main()

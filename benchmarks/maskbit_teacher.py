"""Time the MaskBit teacher's parts of a Di[M]O step, hard tokens vs soft embeddings.

Random weights of the released architecture (no files needed). Timed, per batch:
  teacher_cfg_hard      teacher forward with CFG (doubled batch) on embed(tokens), no grad
  teacher_cfg_soft      the same on embed_soft(probs)
  generator_step_hard   generator forward + backward of a loss on its logits (plain Di[M]O)
  generator_step_soft   generator forward, embed_soft of its softmax, frozen teacher forward,
                        backward through the teacher into the generator (Soft-Di[M]O's extra path)
  decode_hard / decode_soft_backward   tokenizer decoder on tokens / on expected bits with backward

    python benchmarks/maskbit_teacher.py --device cuda --batch 32 --dtype bf16
    python benchmarks/maskbit_teacher.py --size tiny --batch 4        # CPU smoke run
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from typing import Callable

import torch

from softdimo.teachers.base import Condition, guided_logits
from softdimo.teachers.maskbit import generator_arch, tokenizer_arch
from softdimo.teachers.maskbit_generator import LFQBert, expected_bits, token_bits
from softdimo.teachers.maskbit_tokenizer import MaskBitTokenizer, bits_to_latent


# Median wall time of `fn` in seconds over `repeats` runs after one warm-up.
def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--bits", type=int, default=14, choices=(10, 12, 14, 16, 18))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    torch.manual_seed(0)
    with torch.device(device):
        teacher = LFQBert(generator_arch(args.size, args.bits)).init_weights(
            torch.Generator().manual_seed(0)).eval().requires_grad_(False)
        tokenizer = MaskBitTokenizer(tokenizer_arch(args.size, args.bits)).eval().requires_grad_(False)
    generator = copy.deepcopy(teacher).train().requires_grad_(True)
    layout, b = teacher.layout, args.batch
    tokens = torch.randint(layout.classes, (b, layout.positions, layout.groups), device=device)
    probs = torch.randn(b, layout.positions, layout.groups, layout.classes, device=device).softmax(-1)
    cond = Condition("class", {"labels": torch.randint(teacher.arch.num_classes, (b,), device=device)})

    def teacher_cfg(embeds: torch.Tensor) -> None:
        with torch.no_grad(), autocast:
            guided_logits(teacher, embeds, cond, 2.0)

    def generator_step(soft: bool) -> None:
        with autocast:
            z = generator(generator.embed(tokens), cond).logits
            if soft:
                loss = teacher(teacher.embed_soft(z.float().softmax(-1)), cond).logits.float().mean()
            else:
                loss = z.float().square().mean()
        loss.backward()
        generator.zero_grad(set_to_none=True)

    def decode_hard() -> None:
        with torch.no_grad(), autocast:
            tokenizer.decode(bits_to_latent(token_bits(tokens, teacher.arch.group_bits)))

    def decode_soft_backward() -> None:
        p = probs.clone().requires_grad_(True)
        with autocast:
            tokenizer.decode(bits_to_latent(expected_bits(p))).float().mean().backward()

    results = {
        "teacher_cfg_hard": timed(lambda: teacher_cfg(teacher.embed(tokens)), device, args.repeats),
        "teacher_cfg_soft": timed(lambda: teacher_cfg(teacher.embed_soft(probs)), device, args.repeats),
        "generator_step_hard": timed(lambda: generator_step(False), device, args.repeats),
        "generator_step_soft": timed(lambda: generator_step(True), device, args.repeats),
        "decode_hard": timed(decode_hard, device, args.repeats),
        "decode_soft_backward": timed(decode_soft_backward, device, args.repeats),
    }
    info = {"size": args.size, "bits": args.bits, "batch": b, "dtype": args.dtype, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__}
    print(json.dumps({"config": info, "seconds": results}, indent=1))


if __name__ == "__main__":
    main()

"""Images per second of the one-step generator vs the teacher's K-step sampler (mini scale).

Same network size, same batch, same process, same per-image noise machinery; the generator is a
copy of the teacher network (speed does not depend on the weights, so no training is needed).
Rounds alternate between the samplers so machine noise hits all of them alike; the figure per
sampler is the median over rounds. The last line prints the speed-up at K = 16.

    python benchmarks/sampling_speed.py [--batch 500] [--rounds 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from softdimo.teachers.base import ImageNoise
from softdimo.teachers.digits import DigitsConfig, DigitsTeacher, new_network
from softdimo.train import generate

STEPS = (1, 2, 4, 8, 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = DigitsConfig()
    teacher = DigitsTeacher(config, new_network(config), {})
    generator = copy.deepcopy(teacher.network)
    cond = teacher.encode_condition(teacher.eval_conditions(args.batch))

    samplers = {"one-step generator": lambda noise: generate(generator, cond, noise, 0.7, 0.1)[0]}
    for k in STEPS:
        for w in (1.0, 3.0):
            label = f"teacher K={k}" + (" CFG" if w != 1.0 else "")
            samplers[label] = lambda noise, k=k, w=w: teacher.sample(cond, k, w, noise, choice_temperature=4.5)
    times: dict[str, list[float]] = {name: [] for name in samplers}
    for r in range(args.rounds + 1):  # round 0 warms up
        for name, fn in samplers.items():
            noise = ImageNoise(r, range(args.batch))
            start = time.perf_counter()
            fn(noise)
            if r > 0:
                times[name].append(time.perf_counter() - start)
    rate = {name: args.batch / statistics.median(t) for name, t in times.items()}
    one = rate["one-step generator"]
    print(f"torch {torch.__version__}, threads {args.threads}, batch {args.batch}, rounds {args.rounds}")
    print(f"{'sampler':<22} {'images/s':>10} {'speed-up of one-step':>22}")
    for name, r in rate.items():
        print(f"{name:<22} {r:>10.0f} {one / r:>21.2f}x")
    print(f"speed-up at K=16: {one / rate['teacher K=16']:.2f}x without CFG (limit 16), "
          f"{one / rate['teacher K=16 CFG']:.2f}x with CFG (limit 32)")


if __name__ == "__main__":
    main()

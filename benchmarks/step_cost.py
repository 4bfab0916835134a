"""Time of one Di[M]O training step with the hard, gumbel and soft relaxations (mini scale), and
of hard without dropout (`distill.dropout` and `distill.teacher_dropout` at 0; the defaults train
in train mode at 0.1, as the released code does).

The distillers share one teacher (random weights: cost does not depend on them) and are stepped in
alternation, so machine noise hits all alike. Prints the median seconds per step and the ratio to
hard (target: soft within 1.15x of hard).

    python benchmarks/step_cost.py [--steps 30] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from softdimo.config import DistillConfig, RelaxConfig
from softdimo.relax import RELAXATIONS
from softdimo.teachers.digits import DigitsConfig, DigitsTeacher, new_network
from softdimo.train import Distiller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = DigitsConfig()
    teacher = DigitsTeacher(config, new_network(config), {})
    distillers = {name: Distiller(teacher, fn, RelaxConfig(), DistillConfig(), seed=0)
                  for name, (fn, _) in RELAXATIONS.items()}
    distillers["hard, no dropout"] = Distiller(teacher, RELAXATIONS["hard"][0], RelaxConfig(),
                                               DistillConfig(dropout=0.0, teacher_dropout=0.0), seed=0)
    times: dict[str, list[float]] = {name: [] for name in distillers}
    for step in range(args.steps + 3):  # 3 warm-up steps
        for name, d in distillers.items():
            start = time.perf_counter()
            d.train_step()
            if step >= 3:
                times[name].append(time.perf_counter() - start)
    hard = statistics.median(times["hard"])
    print(f"torch {torch.__version__}, threads {args.threads}, batch {DistillConfig().batch_size}, "
          f"{args.steps} steps each, interleaved")
    for name, t in times.items():
        med = statistics.median(t)
        print(f"{name:<16} {med * 1000:8.1f} ms/step   {med / hard:5.2f}x hard")


if __name__ == "__main__":
    main()

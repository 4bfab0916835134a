"""Time of one Di[M]O training step of every relaxation x refinement of the mini scale, and of the
digits step without dropout; with `--before DIR`, the same steps of another checkout (an older
commit in a git worktree) side by side, for a before / after ratio.

Each code tree is timed in its own worker process (the tree first on PYTHONPATH); the workers of
the trees alternate over `--rounds`, and inside a worker the configurations are stepped in
alternation, so machine noise hits all alike. Teachers have random weights (cost does not depend
on them); every refinement acts from the first step (`distill.refine_start` 0). Prints the median
milliseconds per step (median over rounds of each round's median), the ratio of each step to the
digits Di[M]O (hard) step, and the before / after ratio; `--profile` adds the top operators of
the digits steps in this tree (torch.profiler, self CPU time).

    python benchmarks/step_cost.py [--before DIR] [--rounds 3] [--steps 8] [--profile]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
TREE = HERE.parents[1]
# name: (teacher, relaxation, refinement, extra params)
CONFIGS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "digits hard": ("digits", "hard", "none", {}),
    "digits hard, no dropout": ("digits", "hard", "none", {"distill.dropout": 0.0, "distill.teacher_dropout": 0.0}),
    "digits gumbel + gan": ("digits", "gumbel", "gan", {}),
    "digits soft + gan": ("digits", "soft", "gan", {}),
    "shapes hard": ("shapes", "hard", "none", {}),
    "shapes gumbel + reward": ("shapes", "gumbel", "reward", {"reward.models": ["shapes_clip"]}),
    "shapes soft + reward": ("shapes", "soft", "reward", {"reward.models": ["shapes_clip"]}),
}
WARMUP = 2

#----------------------------------------------------------------------------


# One distiller per configuration, in this process (whichever tree is first on the path).
def _distillers() -> dict[str, Any]:
    import torch

    from harness.builtin import plugins
    from harness.contracts import registry
    from harness.contracts.entries import RunContext
    from harness.grid.spec import RunSpec
    from harness.methods.students import build_refinement
    from softdimo.config import DistillConfig, RelaxConfig
    from softdimo.teachers.digits import DigitsConfig, DigitsTeacher
    from softdimo.teachers.digits import new_network as digits_network
    from softdimo.teachers.shapes import ShapesConfig, ShapesTeacher
    from softdimo.teachers.shapes import new_network as shapes_network
    from softdimo.train import Distiller

    plugins.load_builtins()
    teachers = {"digits": DigitsTeacher(DigitsConfig(), digits_network(DigitsConfig()), {}),
                "shapes": ShapesTeacher(ShapesConfig(), shapes_network(ShapesConfig()), {})}
    ctx = RunContext(run_dir=Path("."), cache_dir=Path("."), device=torch.device("cpu"))
    out = {}
    for name, (teacher, relaxation, refinement, extra) in CONFIGS.items():
        spec = RunSpec.from_json({"scale": "mini", "teacher": teacher, "method": "dimo", "relaxation": relaxation,
                                  "refinement": refinement, "seed": 0, "plugins": [],
                                  "params": {"distill.refine_start": 0, **extra}})
        config = spec.stage("distill", DistillConfig)
        fn = registry.relaxations.get(relaxation).fn
        out[name] = Distiller(teachers[teacher], fn, spec.stage("relax", RelaxConfig), config, seed=0,
                              refinement=build_refinement(spec, teachers[teacher], ctx))
    return out


# Worker: step every configuration `steps` times in alternation; print the median ms per step.
def worker(steps: int, profile: bool) -> None:
    import torch
    torch.set_num_threads(1)
    distillers = _distillers()
    times: dict[str, list[float]] = {name: [] for name in distillers}
    for step in range(steps + WARMUP):
        for name, d in distillers.items():
            start = time.perf_counter()
            d.train_step()
            if step >= WARMUP:
                times[name].append(time.perf_counter() - start)
    result: dict[str, Any] = {"ms": {n: statistics.median(t) * 1000 for n, t in times.items()}}
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                for name in ("digits hard", "digits soft + gan"):
                    distillers[name].train_step()
        result["profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    print("STEP_COST " + json.dumps(result))


def _run_worker(tree: Path, steps: int, profile: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, str(HERE), "--worker", "--steps", str(steps)] + (["--profile"] if profile else [])
    done = subprocess.run(args, env=env, cwd=tree, capture_output=True, text=True)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("STEP_COST ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"worker in {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(line[len("STEP_COST "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="another checkout to time side by side (e.g. a git worktree)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per configuration per round")
    parser.add_argument("--profile", action="store_true", help="top operators of the digits steps (this tree)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps, args.profile)
        return
    trees = {"after": TREE} | ({"before": args.before.resolve()} if args.before else {})
    rounds: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
    profile_table = None
    for r in range(args.rounds):
        for label, tree in (trees.items() if r % 2 == 0 else reversed(trees.items())):
            res = _run_worker(tree, args.steps, args.profile and label == "after" and profile_table is None)
            rounds[label].append(res["ms"])
            profile_table = profile_table or res.get("profile")
    med = {label: {n: statistics.median(rd[n] for rd in rs) for n in CONFIGS} for label, rs in rounds.items()}
    import torch
    print(f"torch {torch.__version__}, 1 thread, {args.rounds} rounds x {args.steps} steps, batch 64, "
          f"workers alternating" + (f"; before = {args.before}" if args.before else ""))
    head = "| step | after ms | x digits hard |" + (" before ms | x digits hard | after / before |" if args.before else "")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for n in CONFIGS:
        a = med["after"][n]
        row = f"| {n} | {a:.0f} | {a / med['after']['digits hard']:.2f} |"
        if args.before:
            b = med["before"][n]
            row += f" {b:.0f} | {b / med['before']['digits hard']:.2f} | {a / b:.2f} |"
        print(row)
    a = med["after"]
    print(f"\ndropout cost: digits hard / no dropout = {a['digits hard'] / a['digits hard, no dropout']:.2f}x "
          f"(target <= 1.2x); soft + gan / hard = {a['digits soft + gan'] / a['digits hard']:.2f}x (target <= 1.3x)")
    if profile_table:
        print("\nTop operators, digits hard and soft + gan steps (this tree):\n" + profile_table)


if __name__ == "__main__":
    main()

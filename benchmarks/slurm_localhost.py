"""Time the localhost SLURM cluster: start, a submitit round trip, a 4-task array, a requeue, stop.

    python benchmarks/slurm_localhost.py --repeat 3      # root; cluster installed

Each repeat starts a fresh cluster under a temporary directory and stops it at the end. Prints a
markdown table (median and range over the repeats) for benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import operator
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import submitit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from harness.grid.profiles import load_profile, to_submitit_executor_kwargs, to_submitit_parameters  # noqa: E402

CLUSTER = [sys.executable, str(REPO / "slurm" / "localhost" / "cluster.py")]


# Seconds taken by fn().
def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# One fresh cluster: start, round trip, array, `scontrol requeue` -> running again, stop.
def one_repeat(root: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    out["start"] = timed(lambda: subprocess.run(CLUSTER + ["start", str(root)], check=True,
                                                capture_output=True))
    os.environ["SLURM_CONF"] = str(root / "slurm.conf")
    try:
        profile = load_profile("localhost")
        executor = submitit.AutoExecutor(folder=root / "jobs", cluster="slurm",
                                         **to_submitit_executor_kwargs(profile))
        executor.update_parameters(**to_submitit_parameters(profile))
        out["submit -> result"] = timed(lambda: executor.submit(operator.add, 2, 3).result())
        out["map_array 4 tasks -> results"] = timed(
            lambda: [j.result() for j in executor.map_array(operator.add, [1, 2, 3, 4], [5, 6, 7, 8])])
        out["scontrol requeue -> running again"] = requeue_delay(executor)
    finally:
        out["stop"] = timed(lambda: subprocess.run(CLUSTER + ["stop", str(root)], check=True,
                                                   capture_output=True))
    return out


# Seconds from `scontrol requeue` of a running job until SLURM runs it again.
def requeue_delay(executor: submitit.AutoExecutor) -> float:
    job = executor.submit(time.sleep, 30)

    def state() -> str:
        text = subprocess.run(["scontrol", "show", "job", "-o", job.job_id], capture_output=True,
                              text=True).stdout
        return text.split("JobState=")[1].split()[0] if "JobState=" in text else "UNKNOWN"

    while state() != "RUNNING":
        time.sleep(0.1)
    t0 = time.perf_counter()
    subprocess.run(["scontrol", "requeue", job.job_id], check=True)
    while state() == "RUNNING":
        time.sleep(0.05)
    while state() != "RUNNING":
        time.sleep(0.1)
    delay = time.perf_counter() - t0
    job.cancel()
    return delay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {}
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="slurm-bench-") as tmp:
            for name, value in one_repeat(Path(tmp)).items():
                rows.setdefault(name, []).append(value)
        print(f"repeat {i + 1}/{args.repeat}: " +
              ", ".join(f"{k} {v[-1]:.1f} s" for k, v in rows.items()), file=sys.stderr)
    print("| step | median | range |\n|---|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values):.1f} s | {min(values):.1f}–{max(values):.1f} s |")


if __name__ == "__main__":
    main()

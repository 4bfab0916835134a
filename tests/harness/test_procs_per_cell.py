"""`python -m harness.run --procs-per-cell 2`: a mini digits cell runs over 2 CPU processes of one
local worker (gloo), and its record says so (world size, both devices, accelerator hours of all
processes); the report's cost table shows the processes. Launches that cannot honour the option,
and a profile that would leave GPUs idle, are refused before anything runs.
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from harness import run, store
from harness.contracts import distributed
from harness.grid import load_grid
from harness.methods.students import student_key
from harness.report import costs
from harness.store.results import load_frame
from tests.conftest import TINY_TEACHER

ROOT = Path(__file__).resolve().parents[2]
TEACHER = {f"teacher.{k}": [getattr(TINY_TEACHER, k)]
           for k in ("levels", "d_model", "layers", "heads", "train_steps", "batch_size", "warmup_steps")}


def main(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = run.main(list(args), out, err)
    return rc, out.getvalue(), err.getvalue()


# A grid of one dimo cell of the tiny teacher (seed 41: a student no other test caches).
def tiny_grid(path: Path, name: str) -> Path:
    block = {"teacher": ["digits"], "method": ["dimo"], "relaxation": ["soft"], "seed": [41],
             "distill.steps": [4], "distill.batch_size": [8], "distill.eval_every": [2], **TEACHER}
    path.write_text(yaml.safe_dump({"name": name, "matrix": [block],
                                    "params": {"eval.samples": 40, "eval.curve_samples": 40}},
                                   sort_keys=False))
    return path


def test_local_cell_over_two_processes(tiny_teacher, teacher_cache: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOFTDIMO_CACHE", str(teacher_cache))
    grid = tiny_grid(tmp_path / "grid.yaml", "procs2")
    results = tmp_path / "results"
    rc, out, err = main("--grid", str(grid), "--results", str(results), "--executor", "local",
                        "--procs-per-cell", "2")
    assert rc == 0, out + err
    [spec] = load_grid(grid).specs
    record = store.read_record(store.record_path(results, "procs2", spec.run_id))
    assert record["status"] == "ok" and record["metrics"]
    assert [step for step, _ in record["curves"]["digits_fd"]] == [0, 2, 4]   # curves: rank 0 scores
    assert record["provenance"]["world_size"] == 2 and record["provenance"]["devices"] == ["cpu", "cpu"]
    assert record["cost"]["world_size"] == 2 and record["cost"]["accelerator_hours"] == 0.0
    student = record["info"]["student"]
    assert student["cache_key"] == student_key(spec, 2) != student_key(spec)
    log = (store.run_dir(results, "procs2", spec.run_id) / "log.txt").read_text()
    assert "process 0 of 2" in log and "[rank 1]" not in log
    table = costs.render_markdown(load_frame(results))
    assert "| processes |" in table and " | 2 | " in table


def test_the_option_is_taken_where_it_applies_and_refused_where_it_cannot(tmp_path: Path) -> None:
    grid = tiny_grid(tmp_path / "grid.yaml", "refused")
    common = ("--grid", str(grid), "--results", str(tmp_path / "results"))
    shipped = ("--grid", str(ROOT / "ablations" / "soft_vs_hard.yaml"), "--results", str(tmp_path / "results"))
    assert main(*shipped, "--procs-per-cell", "2", "--dry-run")[0] == 0      # the main job takes it
    rc, _, err = main(*common, "--executor", "debug", "--procs-per-cell", "2")
    assert rc == 2 and "--procs-per-cell 2: the debug executor runs cells in this one process" in err
    rc, _, err = main(*common, "--executor", "slurm", "--slurm-profile", "localhost", "--procs-per-cell", "2")
    assert rc == 2 and "on SLURM a cell runs over its profile's nodes x tasks_per_node = 1 processes" in err
    rc, _, err = main(*common, "--executor", "local", "--procs-per-cell", "3")
    assert rc == 2 and "distill.batch_size = 8 (the global batch) does not split over 3 processes" in err
    idle = tmp_path / "idle_gpus.yaml"
    idle.write_text("timeout_min: 60\ngpus_per_node: 8\ntasks_per_node: 1\n")
    rc, _, err = main(*common, "--executor", "slurm", "--slurm-profile", str(idle))
    assert rc == 2
    assert err.startswith(f"error: {idle}:3: gpus_per_node, tasks_per_node: gpus_per_node: 8 with "
                          f"tasks_per_node: 1: a cell runs one process per task and one GPU per process, "
                          f"so 7 GPU(s) per node would sit idle and still be billed; set tasks_per_node: 8")


# Rank 0's rendezvous port: the same for every process of a job, below the kernel's ephemeral
# range (where an outgoing connection can hold a port at the moment rank 0 binds it; submitit's
# own choice for local job 13187 was 50158, which a CI run found taken), else submitit's range.
def test_rendezvous_port_is_one_per_job_and_below_the_ephemeral_range(tmp_path: Path) -> None:
    ports = [distributed.rendezvous_port(str(job), (32768, 60999)) for job in range(13000, 13400)]
    assert all(distributed.LOWEST_PORT <= p < 32768 for p in ports) and len(set(ports)) > 350
    assert distributed.rendezvous_port("13187", (32768, 60999)) == ports[187] < 32768
    assert all(20000 <= distributed.rendezvous_port(str(j), (40000, 60999)) < 40000 for j in range(50))
    assert all(20000 <= distributed.rendezvous_port(str(j), (1024, 65535)) <= 60000 for j in range(50))
    proc = tmp_path / "ip_local_port_range"
    proc.write_text("28000\t60999\n")
    assert distributed.ephemeral_port_range(proc) == (28000, 60999)
    assert distributed.ephemeral_port_range(tmp_path / "absent") == distributed.DEFAULT_EPHEMERAL_PORTS

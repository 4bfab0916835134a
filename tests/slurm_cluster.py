"""The `slurm_cluster` session fixture: a real one-node SLURM cluster (slurm/localhost/cluster.py)
under a temporary directory, for the tests marked `slurm`.

Skipped, with the reason, only where the cluster's packages are not installed and `CI` is not
set; in CI (`CI=true`) a missing install fails the tests instead (`.ci/slurm_install.sh`
installs it explicitly). Needs root, like the cluster script.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
import submitit

from harness.grid.profiles import SlurmProfile, to_submitit_executor_kwargs, to_submitit_parameters

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "slurm" / "localhost" / "cluster.py"
TESTS_DIR = Path(__file__).resolve().parent


# A running localhost cluster: its directory and the environment its clients need.
@dataclass(frozen=True)
class LocalCluster:
    root: Path
    env: dict[str, str]

    # Run a SLURM client command against this cluster; returns its stdout.
    def client(self, *cmd: str) -> str:
        return subprocess.run(cmd, env={**os.environ, **self.env}, capture_output=True, text=True,
                              check=True, timeout=60).stdout

    # {job id: state} from sacct for the job (or array) `job_id`, allocations only.
    def sacct_states(self, job_id: str) -> dict[str, str]:
        out = self.client("sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", job_id)
        return dict(line.split("|", 1) for line in out.splitlines() if line)

    # The cluster's MaxArraySize from the running controller.
    def max_array_size(self) -> int:
        match = re.search(r"MaxArraySize\s*=\s*(\d+)", self.client("scontrol", "show", "config"))
        assert match, "scontrol show config has no MaxArraySize"
        return int(match.group(1))


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


# Start the cluster for the session; the jobs inherit SLURM_CONF and a PYTHONPATH that imports
# the project and tests/slurm_jobs.py. Stops every daemon at the end.
@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    check = subprocess.run([sys.executable, str(CLUSTER_SCRIPT), "check"], capture_output=True,
                           text=True)
    reason = ""
    if check.returncode != 0:
        reason = (f"the localhost SLURM cluster is not installed ({check.stdout.strip()}); "
                  f"install it with `python3 {CLUSTER_SCRIPT.relative_to(REPO)} install` (root)")
    elif os.geteuid() != 0:
        reason = "the localhost SLURM cluster runs its daemons as root; run the tests as root"
    if reason:
        if _truthy(os.environ.get("CI")):
            pytest.fail(f"CI is set, so this is an error: {reason}", pytrace=False)
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("slurm-cluster")
    start = subprocess.run([sys.executable, str(CLUSTER_SCRIPT), "start", str(root),
                            "--owner-pid", str(os.getpid())], capture_output=True, text=True,
                           timeout=300)
    if start.returncode != 0:
        pytest.fail(f"could not start the localhost SLURM cluster:\n{start.stdout}{start.stderr}",
                    pytrace=False)
    # the repository first: tests/ holds packages named like the project's (tests/harness), which
    # must not shadow them in any process started after this fixture (console scripts included)
    pythonpath = [str(REPO), str(TESTS_DIR)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    env = {"SLURM_CONF": str(root / "slurm.conf"), "PYTHONPATH": os.pathsep.join(pythonpath)}
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            yield LocalCluster(root, env)
    finally:
        subprocess.run([sys.executable, str(CLUSTER_SCRIPT), "stop", str(root)], timeout=120)


# A submitit SLURM executor configured from `profile`, writing its files under `folder`.
def executor_for(profile: SlurmProfile, folder: Path) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm",
                                     **to_submitit_executor_kwargs(profile))
    executor.update_parameters(**to_submitit_parameters(profile))
    return executor


# Poll `probe` every 0.2 s until it returns a truthy value; fail the test after `timeout_s`.
def poll(what: str, probe: Callable[[], object], timeout_s: float = 60) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}", pytrace=False)
        time.sleep(0.2)

"""SLURM resource profiles: the shipped ones load and map onto submitit; bad files fail with the
file, line, key and what is allowed."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import submitit

from harness.grid.profiles import (PROFILES_DIR, ProfileError, check_submitit_parameters, list_profiles,
                              load_profile, to_submitit_executor_kwargs, to_submitit_parameters)

CLUSTER_SCRIPT = Path(__file__).resolve().parents[2] / "slurm" / "localhost" / "cluster.py"

VALID = """\
partition: gpu
timeout_min: 60
gpus_per_node: 2
tasks_per_node: 2
cpus_per_task: 4
mem_gb: 32
additional_parameters:
  requeue: true
  mail-type: END
setup:
  - module load cuda
srun_args:
  - --cpu-bind=cores
collective_timeout_s: 900
"""


def write(tmp_path: Path, text: str, name: str = "site") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_shipped_profiles_load_and_are_accepted_by_submitit(tmp_path: Path) -> None:
    assert {"localhost", "generic_gpu"} <= set(list_profiles())
    for name in list_profiles():
        profile = load_profile(name)
        params = to_submitit_parameters(profile)
        assert params["timeout_min"] == profile.timeout_min
        # submitit's own validation (AutoExecutor checks slurm_* keys whatever the cluster).
        submitit.AutoExecutor(folder=tmp_path, cluster="debug",
                              **to_submitit_executor_kwargs(profile)).update_parameters(**params)


def test_mapping_onto_submitit_keys(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, VALID))
    assert profile.name == "site"
    assert to_submitit_parameters(profile) == {
        "timeout_min": 60, "cpus_per_task": 4, "nodes": 1, "slurm_ntasks_per_node": 2, "gpus_per_node": 2,
        "mem_gb": 32.0,
        "slurm_partition": "gpu", "slurm_array_parallelism": 256, "slurm_signal_delay_s": 90,
        "slurm_additional_parameters": {"requeue": True, "mail-type": "END"},
        "slurm_setup": ["module load cuda"], "slurm_srun_args": ["--kill-on-bad-exit=1", "--cpu-bind=cores"]}
    assert to_submitit_executor_kwargs(profile) == {"slurm_max_num_timeout": 3}
    assert profile.collective_timeout_s == 900
    assert load_profile(write(tmp_path, "timeout_min: 5\n", "bare")).collective_timeout_s == 600


# The sbatch script of a profile: srun ends the step when a task exits badly, then the profile's
# own srun options.
def test_srun_kills_the_step_on_a_bad_exit(tmp_path: Path) -> None:
    from submitit.slurm.slurm import _make_sbatch_string
    params = to_submitit_parameters(load_profile(write(tmp_path, VALID)))
    script = _make_sbatch_string(command="python -m x", folder=tmp_path, srun_args=params["slurm_srun_args"])
    assert " --kill-on-bad-exit=1 --cpu-bind=cores python -m x" in script


def test_localhost_profile_matches_the_cluster_script(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("localhost_cluster", CLUSTER_SCRIPT)
    cluster = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, cluster)  # dataclasses look their module up
    spec.loader.exec_module(cluster)
    profile = load_profile("localhost")
    assert profile.partition == cluster.PARTITION
    assert profile.max_array_size == cluster.DEFAULT_MAX_ARRAY_SIZE
    assert profile.timeout_min <= cluster.PARTITION_MAX_TIME_MIN
    assert profile.gpus_per_node == 0


@pytest.mark.parametrize("text, line, fragments", [
    ("timeout_min: 10\npartiton: debug\n", 2,
     ["partiton: unknown key (did you mean 'partition'?); allowed keys:"]),
    ("partition: debug\n", None, ["timeout_min: missing", "submitit would otherwise use 5"]),
    ("timeout_min: 10\ncpus_per_task: two\n", 2,
     ["cpus_per_task: expected an integer >= 1, got 'two'"]),
    ("timeout_min: 10\ngpus_per_node: true\n", 2, ["gpus_per_node: expected an integer >= 0"]),
    ("timeout_min: 1.5\n", 1, ["timeout_min: expected an integer >= 1, got 1.5"]),
    ("timeout_min: 10\nmem_gb: 0\n", 2, ["mem_gb: expected a number > 0 or null"]),
    ("timeout_min: 10\nsetup: module load cuda\n", 2, ["setup: expected a list of shell lines"]),
    ("timeout_min: 10\npartition: null\npartition: gpu\n", 3,
     ["partition: duplicate key (first given on line 2)"]),
    ("timeout_min: 10\nadditional_parameters:\n  mail-type: END\n  partition: gpu\n", 4,
     ["additional_parameters.partition", "set by the profile key 'partition'"]),
    ("timeout_min: 10\nadditional_parameters:\n  output: x.log\n", 3,
     ["additional_parameters.output", "set by submitit"]),
    ("timeout_min: 10\nadditional_parameters:\n  dependency: afterok:12\n", 3,
     ["additional_parameters.dependency", "set by harness.run per job array"]),
    ("timeout_min: 10\nadditional_parameters:\n  --requeue: true\n", 3,
     ["without dashes"]),
    ("timeout_min: 10\nadditional_parameters:\n  nice: [1, 2]\n", 3,
     ["additional_parameters.nice: expected a string, number or true"]),
    ("timeout_min: 1\nsignal_delay_s: 90\n", 2,
     ["signal_delay_s: 90 s is not shorter than the time limit (1 min)"]),
    ("timeout_min: 10\ngpus_per_node: 8\ntasks_per_node: 1\n", 3,
     ["gpus_per_node, tasks_per_node: gpus_per_node: 8 with tasks_per_node: 1",
      "7 GPU(s) per node would sit idle and still be billed", "set tasks_per_node: 8"]),
    ("timeout_min: 10\ngpus_per_node: 2\n", 2,
     ["gpus_per_node: 2 with tasks_per_node: 1", "1 GPU(s) per node would sit idle"]),
    ("timeout_min: 10\ngpus_per_node: 1\ntasks_per_node: 2\n", 3, ["2 processes would share 1 GPU(s)"]),
    ("timeout_min: 10\ntasks_per_node: 0\n", 2, ["tasks_per_node: expected an integer >= 1"]),
    ("timeout_min: 10\nadditional_parameters:\n  ntasks-per-node: 2\n", 3,
     ["set by the profile key 'tasks_per_node'"]),
    ("timeout_min: 10\npartition: [debug\n", 3, ["YAML syntax error"]),
    ("- timeout_min: 10\n", 1, ["expected a mapping of profile keys"]),
    ("", None, ["empty file"]),
    ("timeout_min: 10\nsrun_args: --cpu-bind=cores\n", 2, ["srun_args: expected a list of srun options"]),
    ("timeout_min: 10\nsrun_args: [-K]\n", 2, ["srun_args: '-K': write each srun option as one long option"]),
    ("timeout_min: 10\nsrun_args: [--cpu-bind, cores]\n", 2, ["'cores': write each srun option"]),
    ("timeout_min: 10\nsrun_args: [--kill-on-bad-exit=0]\n", 2,
     ["srun's --kill-on-bad-exit is set by the harness (a failing task ends the step)"]),
    ("timeout_min: 10\nsrun_args: [--output=x.log]\n", 2, ["srun's --output is set by submitit"]),
    ("timeout_min: 10\nsrun_args: [--ntasks-per-node=4]\n", 2, ["set by the profile key 'tasks_per_node'"]),
    ("timeout_min: 10\ncollective_timeout_s: 0\n", 2, ["collective_timeout_s: expected an integer >= 1"]),
])
def test_bad_profiles_name_file_line_key_and_allowed(tmp_path: Path, text: str, line: int | None,
                                                      fragments: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: " if line else f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, message


def test_unknown_profile_name_suggests_the_closest() -> None:
    with pytest.raises(ProfileError, match="no SLURM profile named 'localhots' \\(did you mean "
                                           "'localhost'\\?\\); available: .*generic_gpu"):
        load_profile("localhots")


def test_profiles_directory_can_be_overridden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "timeout_min: 5\n", name="tiny")
    monkeypatch.setenv("SOFTDIMO_SLURM_PROFILES", str(tmp_path))
    assert list_profiles() == ["tiny"]
    assert load_profile("tiny").timeout_min == 5
    assert PROFILES_DIR.name == "profiles"


def test_submitit_key_check_catches_typos_and_types(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    with pytest.raises(ProfileError, match="slurm_partiton: not a submitit parameter; allowed: "
                                           ".*slurm_partition"):
        check_submitit_parameters({"slurm_partiton": "gpu"}, path)
    with pytest.raises(ProfileError, match="timeout_min: submitit expects int, got 1.5"):
        check_submitit_parameters({"timeout_min": 1.5}, path)
    # Both are what submitit itself refuses.
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="debug")
    with pytest.raises(NameError):
        executor.update_parameters(slurm_partiton="gpu")
    with pytest.raises(AssertionError):
        executor.update_parameters(timeout_min=1.5)

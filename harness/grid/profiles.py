"""SLURM resource profiles: named YAML files in `slurm/profiles/` that a grid's
`scales.<scale>.resources` refers to.

A profile says where and how one cell runs (partition, nodes and tasks per node, GPUs, CPUs,
memory, time limit, account, QoS, constraint, extra sbatch and srun options, the collective
timeout of its processes) and what the cluster allows (array size limit, requeue cap). srun always
runs with `--kill-on-bad-exit=1`: a task that fails ends the others at once. A cell runs one process per task and, with GPUs, one GPU per
process (docs/distributed.md), so a profile whose gpus_per_node differs from tasks_per_node is
refused: GPUs without a process would sit idle and still be billed. `to_submitit_parameters` turns it into `AutoExecutor.update_parameters` keyword arguments,
checked against submitit's own list, so a mistake fails when the grid is loaded, not in sbatch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from submitit import AutoExecutor, SlurmExecutor

from harness.contracts.distributed import DEFAULT_COLLECTIVE_TIMEOUT_S
from harness.contracts.registry import did_you_mean
from harness.grid.yaml_lines import LineMap, YamlFileError, line_of, parse_yaml

PROFILES_DIR = Path(__file__).resolve().parents[2] / "slurm" / "profiles"
PROFILES_ENV = "SOFTDIMO_SLURM_PROFILES"  # overrides PROFILES_DIR

# sbatch options (long names, `-` as `_`) that a profile key sets, and those submitit sets
# itself: `additional_parameters` may not contradict them.
PROFILE_OWNED_SBATCH = {
    "partition": "partition", "time": "timeout_min", "account": "account", "qos": "qos",
    "constraint": "constraint", "cpus_per_task": "cpus_per_task",
    "gpus_per_node": "gpus_per_node", "mem": "mem_gb", "signal": "signal_delay_s",
    "array": "array_parallelism", "nodes": "nodes", "ntasks_per_node": "tasks_per_node",
}
SUBMITIT_OWNED_SBATCH = {"output", "error", "open_mode", "job_name", "wrap"}
# srun options the harness and submitit set, and the profile keys that own the step's resources:
# `srun_args` may not set them.
HARNESS_SRUN_ARGS = ("--kill-on-bad-exit=1",)
OWNED_SRUN = {"kill_on_bad_exit": "the harness (a failing task ends the step)", "output": "submitit",
              "error": "submitit", "unbuffered": "submitit", **{
                  k: f"the profile key {v!r}" for k, v in PROFILE_OWNED_SBATCH.items()
                  if k in ("nodes", "ntasks_per_node", "cpus_per_task", "gpus_per_node", "mem", "time",
                           "partition", "account", "qos", "constraint", "signal")},
              "ntasks": "the profile keys 'nodes' and 'tasks_per_node'"}
LAUNCHER_OWNED_SBATCH = {"dependency"}   # set per array by the launcher (harness.grid.dependencies)

#----------------------------------------------------------------------------


# One named resource profile; every field maps to one sbatch option or one submitit setting.
@dataclass(frozen=True)
class SlurmProfile:
    name: str
    path: Path
    timeout_min: int                      # time limit (minutes); required, submitit's default is 5
    description: str = ""
    partition: str | None = None          # None = the cluster's default partition
    nodes: int = 1
    tasks_per_node: int = 1               # processes of a cell per node (one per GPU)
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None           # None = the partition's default memory
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None         # node features, e.g. "a100|h100"
    additional_parameters: Mapping[str, Any] = field(default_factory=dict)  # verbatim #SBATCH
    array_parallelism: int = 256          # array tasks running at once (`%N`)
    max_array_size: int = 1001            # the cluster's MaxArraySize: tasks per array at most
    signal_delay_s: int = 90              # USR2 this long before the time limit (checkpoint)
    max_num_timeout: int = 3              # requeues after a time limit before giving up
    setup: tuple[str, ...] = ()           # shell lines before srun (module load, env exports)
    srun_args: tuple[str, ...] = ()       # extra srun options, `--name` or `--name=value` each
    collective_timeout_s: int = DEFAULT_COLLECTIVE_TIMEOUT_S  # the processes' collective timeout

    # The processes a cell runs over: nodes x tasks_per_node.
    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node


# A problem in a profile file; the message names the file, the line, the key and what is allowed.
class ProfileError(ValueError):
    def __init__(self, path: Path, key: str | None, message: str, line: int | None = None):
        self.path, self.key, self.line = path, key, line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


# What each YAML key accepts: (kinds, nullable, lower bound, description for messages).
@dataclass(frozen=True)
class _Rule:
    kind: str            # "int", "number", "str", "mapping", "lines", "options"
    nullable: bool = False
    lo: float | None = None
    open_lo: bool = False

    def allowed(self) -> str:
        text = {"int": "an integer", "number": "a number", "str": "a string",
                "mapping": "a mapping of sbatch option -> value",
                "lines": "a list of shell lines (strings)",
                "options": "a list of srun options, each '--name' or '--name=value'"}[self.kind]
        if self.lo is not None:
            text += f" {'>' if self.open_lo else '>='} {self.lo:g}"
        return text + (" or null" if self.nullable else "")


RULES: dict[str, _Rule] = {
    "timeout_min": _Rule("int", lo=1),
    "description": _Rule("str"),
    "partition": _Rule("str", nullable=True),
    "nodes": _Rule("int", lo=1),
    "tasks_per_node": _Rule("int", lo=1),
    "gpus_per_node": _Rule("int", lo=0),
    "cpus_per_task": _Rule("int", lo=1),
    "mem_gb": _Rule("number", nullable=True, lo=0, open_lo=True),
    "account": _Rule("str", nullable=True),
    "qos": _Rule("str", nullable=True),
    "constraint": _Rule("str", nullable=True),
    "additional_parameters": _Rule("mapping"),
    "array_parallelism": _Rule("int", lo=1),
    "max_array_size": _Rule("int", lo=1),
    "signal_delay_s": _Rule("int", lo=0),
    "max_num_timeout": _Rule("int", lo=0),
    "setup": _Rule("lines"),
    "srun_args": _Rule("options"),
    "collective_timeout_s": _Rule("int", lo=1),
}
REQUIRED = ("timeout_min",)

#----------------------------------------------------------------------------


# The directory profiles are looked up in ($SOFTDIMO_SLURM_PROFILES, else slurm/profiles/).
def profiles_dir() -> Path:
    return Path(os.environ.get(PROFILES_ENV, PROFILES_DIR))


# Names of the available profiles (file stems), sorted.
def list_profiles(directory: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (directory or profiles_dir()).glob("*.yaml"))


# Load and validate a profile given by name (a file in the profiles directory) or by path.
def load_profile(name_or_path: str | Path, directory: Path | None = None) -> SlurmProfile:
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        path = Path(text)
    else:
        path = (directory or profiles_dir()) / f"{text}.yaml"
        if not path.exists():
            names = list_profiles(directory)
            raise ProfileError(path, None, f"no SLURM profile named {text!r}{did_you_mean(text, names)}; "
                               f"available: {', '.join(names) or '(none)'}")
    if not path.exists():
        raise ProfileError(path, None, "profile file does not exist")
    return _parse(path, path.read_text())


def _parse(path: Path, text: str) -> SlurmProfile:
    try:
        doc = parse_yaml(text, path)
    except YamlFileError as e:
        raise ProfileError(path, None, e.message, e.line or None) from None
    if doc is None:
        raise ProfileError(path, None, "empty file; a profile needs at least timeout_min")
    if not isinstance(doc, LineMap):
        raise ProfileError(path, None, f"expected a mapping of profile keys, got {type(doc).__name__}", 1)
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for key, value in doc.items():
        line = line_of(doc, key)
        if not isinstance(key, str):
            raise ProfileError(path, repr(key), "keys must be strings", line)
        if key not in RULES:
            raise ProfileError(path, key, f"unknown key{did_you_mean(key, RULES)}; allowed keys: "
                               f"{', '.join(RULES)}", line)
        values[key], lines[key] = value, line
        if key == "additional_parameters" and isinstance(value, LineMap):
            lines.update({f"additional_parameters.{k}": line_of(value, k) for k in value})

    for key in REQUIRED:
        if key not in values:
            raise ProfileError(path, key, "missing; every profile must state its time limit in "
                               "minutes explicitly (submitit would otherwise use 5)")
    checked = {k: _check(path, k, v, lines[k]) for k, v in values.items()}
    if "additional_parameters" in checked:
        _check_additional(path, checked["additional_parameters"], lines)
    if "srun_args" in checked:
        _check_srun_args(path, checked["srun_args"], lines["srun_args"])
    profile = SlurmProfile(name=path.stem, path=path, **checked)
    if profile.signal_delay_s >= profile.timeout_min * 60:
        raise ProfileError(path, "signal_delay_s", f"{profile.signal_delay_s} s is not shorter than "
                           f"the time limit ({profile.timeout_min} min): the checkpoint signal would "
                           f"arrive at start", lines.get("signal_delay_s"))
    if profile.gpus_per_node and profile.gpus_per_node != profile.tasks_per_node:
        gpus, tasks = profile.gpus_per_node, profile.tasks_per_node
        why = (f"{gpus - tasks} GPU(s) per node would sit idle and still be billed" if gpus > tasks else
               f"{tasks} processes would share {gpus} GPU(s)")
        raise ProfileError(path, "gpus_per_node, tasks_per_node", (
            f"gpus_per_node: {gpus} with tasks_per_node: {tasks}: a cell runs one process per task and "
            f"one GPU per process, so {why}; set tasks_per_node: {gpus} (one task per GPU)"),
            lines.get("tasks_per_node", lines.get("gpus_per_node")))
    return profile


# Check one value against its rule; returns it normalised (lists -> tuples, ints -> floats).
def _check(path: Path, key: str, value: Any, line: int) -> Any:
    rule = RULES[key]

    def bad() -> ProfileError:
        return ProfileError(path, key, f"expected {rule.allowed()}, got {value!r}", line)

    if value is None:
        if rule.nullable:
            return None
        raise bad()
    if rule.kind in ("int", "number"):
        if isinstance(value, bool) or not isinstance(value, int if rule.kind == "int" else (int, float)):
            raise bad()
        if rule.lo is not None and (value <= rule.lo if rule.open_lo else value < rule.lo):
            raise bad()
        return float(value) if rule.kind == "number" else value
    if rule.kind == "str":
        if not isinstance(value, str):
            raise bad()
        return value
    if rule.kind == "mapping":
        if not isinstance(value, dict):
            raise bad()
        return dict(value)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad()
    return tuple(value)


# `srun_args`: long options, one per item (a value after `=`), none that the harness, submitit or
# a profile key sets.
def _check_srun_args(path: Path, options: tuple[str, ...], line: int) -> None:
    for option in options:
        name = option.split("=", 1)[0]
        if not name.startswith("--") or len(name) < 4 or " " in name:
            raise ProfileError(path, "srun_args", f"{option!r}: write each srun option as one long option, "
                               f"'--name' or '--name=value' (e.g. '--cpu-bind=cores')", line)
        owner = OWNED_SRUN.get(name[2:].replace("-", "_"))
        if owner is not None:
            raise ProfileError(path, "srun_args", f"{option!r}: srun's {name} is set by {owner}", line)


# `additional_parameters`: sbatch option names with scalar values, none that a profile key or
# submitit already sets.
def _check_additional(path: Path, extra: Mapping[Any, Any], lines: Mapping[str, int]) -> None:
    for option, value in extra.items():
        key = f"additional_parameters.{option}"
        line = lines.get(key)
        if not isinstance(option, str) or not option:
            raise ProfileError(path, key, "option names must be non-empty strings", line)
        if isinstance(value, (dict, list)) or value is None:
            raise ProfileError(path, key, f"expected a string, number or true, got {value!r}", line)
        if value is False:
            raise ProfileError(path, key, "false is not an sbatch value; remove the option", line)
        name = option.replace("-", "_")
        if option.startswith("-") or len(option) == 1:
            raise ProfileError(path, key, "write the long sbatch option name without dashes, "
                               "e.g. `requeue: true` for --requeue", line)
        if name in PROFILE_OWNED_SBATCH:
            raise ProfileError(path, key, f"sbatch option --{option} is set by the profile key "
                               f"{PROFILE_OWNED_SBATCH[name]!r}; use that instead", line)
        if name in SUBMITIT_OWNED_SBATCH:
            raise ProfileError(path, key, f"sbatch option --{option} is set by submitit", line)
        if name in LAUNCHER_OWNED_SBATCH:
            raise ProfileError(path, key, f"sbatch option --{option} is set by harness.run per job array "
                               f"(cells that start after the cells they need)", line)


#----------------------------------------------------------------------------


# The keyword arguments of `AutoExecutor.update_parameters` for this profile (unset options
# omitted), validated against the keys and types submitit accepts.
def to_submitit_parameters(profile: SlurmProfile) -> dict[str, Any]:
    params: dict[str, Any] = {
        "timeout_min": profile.timeout_min,
        "cpus_per_task": profile.cpus_per_task,
        "nodes": profile.nodes,
        "slurm_ntasks_per_node": profile.tasks_per_node,
        "gpus_per_node": profile.gpus_per_node or None,   # --gpus-per-node=0 fails without GRES
        "mem_gb": profile.mem_gb,
        "slurm_partition": profile.partition,
        "slurm_account": profile.account,
        "slurm_qos": profile.qos,
        "slurm_constraint": profile.constraint,
        "slurm_array_parallelism": profile.array_parallelism,
        "slurm_signal_delay_s": profile.signal_delay_s,
        "slurm_additional_parameters": dict(profile.additional_parameters) or None,
        "slurm_setup": list(profile.setup) or None,
        "slurm_srun_args": [*HARNESS_SRUN_ARGS, *profile.srun_args],
    }
    params = {k: v for k, v in params.items() if v is not None}
    check_submitit_parameters(params, profile.path)
    return params


# The keyword arguments of the `AutoExecutor` constructor for this profile (the requeue cap
# is a constructor argument in submitit, not an `update_parameters` key).
def to_submitit_executor_kwargs(profile: SlurmProfile) -> dict[str, Any]:
    return {"slurm_max_num_timeout": profile.max_num_timeout}


# Raise ProfileError unless every key is one `AutoExecutor.update_parameters` accepts for SLURM,
# with the type submitit asserts for generic keys.
def check_submitit_parameters(params: Mapping[str, Any], path: Path) -> None:
    generic = AutoExecutor._typed_parameters()
    slurm_keys = SlurmExecutor._valid_parameters()
    for key, value in params.items():
        if key in generic:
            expected = (int, float) if generic[key] is float else generic[key]
            if not isinstance(value, expected) or isinstance(value, bool) and expected is not bool:
                raise ProfileError(path, key, f"submitit expects {generic[key].__name__}, got {value!r}")
        elif not (key.startswith("slurm_") and key[len("slurm_"):] in slurm_keys):
            raise ProfileError(path, key, "not a submitit parameter; allowed: "
                               f"{', '.join(sorted(generic))}, "
                               f"{', '.join('slurm_' + k for k in sorted(slurm_keys))}")


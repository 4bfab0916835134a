"""Live monitoring of runs through accelerate's experiment trackers (`--log-with tensorboard`).

The launcher hands the chosen trackers to its jobs in SOFTDIMO_LOG_WITH (a comma-separated list of
accelerate tracker names, or `all` for every one installed). Rank 0 of a cell starts them under the
run's folder (`<run dir>/tracking/`), records the configuration (the spec's parameters) and logs, as
they happen: every distillation step's losses and diagnostics (`train/<key>`), every point of the
training curves (`curve/<metric>`), and the final evaluation (`eval/<metric>`). The trackers are
how a run is watched, not what it computes: they are recorded in the run's provenance and are no
part of its spec or run id.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

LOG_WITH_ENV = "SOFTDIMO_LOG_WITH"
TRACKING_DIR = "tracking"              # <run dir>/tracking/: the trackers' local files

#----------------------------------------------------------------------------


# The tracker names accelerate knows, and those whose package is installed here.
def known_trackers() -> tuple[list[str], list[str]]:
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers
    return sorted(LOGGER_TYPE_TO_CLASS), sorted(str(t.value) for t in get_available_trackers())


# The trackers of a `--log-with` value ("tensorboard", "tensorboard,wandb", "all"); ValueError
# naming what is known and installed when one is unknown or its package is missing.
def parse_log_with(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    known, installed = known_trackers()
    if names == ["all"]:
        if not installed:
            raise ValueError(f"--log-with all: no tracker of accelerate's ({', '.join(known)}) is installed; "
                             f"pip install tensorboard")
        return installed
    for name in names:
        if name not in known:
            raise ValueError(f"--log-with {name!r}: not a tracker of accelerate; known: {', '.join(known)}, or all")
        if name not in installed:
            raise ValueError(f"--log-with {name!r}: its package is not installed here (installed: "
                             f"{', '.join(installed) or 'none'}); for tensorboard: pip install tensorboard")
    if not names:
        raise ValueError("--log-with: name at least one tracker, e.g. tensorboard")
    return list(dict.fromkeys(names))


# The trackers a job was asked for ($SOFTDIMO_LOG_WITH), none when unset.
def requested() -> list[str]:
    value = os.environ.get(LOG_WITH_ENV, "")
    return parse_log_with(value) if value.strip() else []


# The trackers of one run (rank 0's; every other process, and a run without trackers, log nothing).
class RunTrackers:
    def __init__(self, trackers: Sequence[Any] = (), folder: Path | None = None) -> None:
        self.trackers, self.folder = list(trackers), folder

    # Start `names` under `<run_dir>/tracking/` with the run's configuration.
    @classmethod
    def start(cls, names: Sequence[str], run_dir: Path, project: str, config: Mapping[str, Any]) -> "RunTrackers":
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS
        folder = run_dir / TRACKING_DIR
        trackers = []
        for name in names:
            tracker_cls = LOGGER_TYPE_TO_CLASS[name]
            tracker = (tracker_cls(project, logging_dir=str(folder)) if tracker_cls.requires_logging_directory
                       else tracker_cls(project))
            tracker.start()
            tracker.store_init_configuration({k: _config_value(v) for k, v in config.items()})
            trackers.append(tracker)
        return cls(trackers, folder)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.trackers]

    # Log finite scalars at `step`, each key prefixed by `prefix/`.
    def log(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        scalars = {f"{prefix}/{k}": float(v) for k, v in values.items()
                   if isinstance(v, (int, float)) and math.isfinite(v)}
        if scalars:
            for tracker in self.trackers:
                tracker.log(scalars, step=step)

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()


NO_TRACKERS = RunTrackers()


def _config_value(value: Any) -> bool | int | float | str:
    return value if isinstance(value, (bool, int, float, str)) else str(value)

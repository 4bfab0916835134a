"""Registers the submitit executors `debug`, `local` and `slurm` (see `harness.executors`)."""
from __future__ import annotations

from harness import registry
from harness.executors import EXECUTORS

for _entry in EXECUTORS:
    registry.executors.register(_entry.name, _entry)

"""Registers the submitit executors `debug`, `local` and `slurm` (see `harness.executors`)."""
from __future__ import annotations

from harness.executors import EXECUTORS, registered

for _entry in EXECUTORS:
    registered.register(_entry.name, _entry)

"""Shared pytest fixtures."""
from __future__ import annotations

from slurm_cluster import slurm_cluster  # noqa: F401  (session fixture for tests marked `slurm`)

"""Importing this package registers every built-in entry, one module per area."""
from harness.builtin import baselines, executors  # noqa: F401

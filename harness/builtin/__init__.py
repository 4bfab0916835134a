"""Importing this package registers every built-in registry entry."""
from harness.builtin import metrics_paper  # noqa: F401

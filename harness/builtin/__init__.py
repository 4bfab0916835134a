"""Importing this package registers every built-in registry entry."""
from harness.builtin import core, digits  # noqa: F401

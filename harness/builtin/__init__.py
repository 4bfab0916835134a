"""Built-in registry entries, one module per area; importing this package registers them all."""
from __future__ import annotations

from harness.builtin import core, digits, maskbit, maskgen, refine  # noqa: F401

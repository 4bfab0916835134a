"""Built-in registry entries, one module per area; importing this package registers them all."""
from harness.builtin import maskbit  # noqa: F401

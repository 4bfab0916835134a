"""Every built-in registry entry: importing this module registers them all (`plugins.load_builtins`)."""
from __future__ import annotations

from harness.builtin import (baselines, core, digits, glyphs, maskbit,  # noqa: F401
                             maskgen, maskgit, meissonic, metrics_paper, metrics_preference,
                             metrics_t2i_fid, protocols, refine, shapes)

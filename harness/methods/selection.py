"""The file of what best-of-N chose, beside a run's record (`selection.npz`): per selected image, in
the run's sample order, `index` (the candidate kept, 0 = the plain sample), each selection reward's
raw score of it (one array per reward name, in the reward's reported scale), `combined` (its
combined score under `sample.select_combine`) and `rewards` (the reward names)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from softdimo.files import atomic_write
from softdimo.refine.selection import SelectionLog

RESERVED = ("index", "combined", "rewards")   # array names that are not a reward's

#----------------------------------------------------------------------------


# Write a selection log atomically as `path` (npz); a reward named like a reserved array is refused.
def save_selection(log: SelectionLog, path: Path) -> None:
    clash = sorted(set(log.rewards) & set(RESERVED))
    if clash:
        raise ValueError(f"reward name(s) {', '.join(clash)} clash with the arrays of {path.name}")
    arrays = {k: v.numpy() for k, v in log.tensors().items()}
    atomic_write(path, lambda tmp: np.savez_compressed(tmp, rewards=np.array(list(log.rewards)), **arrays))

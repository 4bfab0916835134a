"""The ground floor: the contracts every stage shares (the record of a cell, the entry types and
their registries, protocol ids) and the few modules they need (processes, failures, held samples,
trackers). Nothing here imports another folder of `harness`."""

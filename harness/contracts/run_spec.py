"""The record of one cell, the contract every stage shares: `RunSpec` (a fully resolved cell; the
hash of its canonical JSON is the run id), the spec version, the parameters added since it, and
`CellError`, the problem with one key of one cell. Resolving a grid's cell into a `RunSpec` is
`harness.grid.spec`'s job.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

SPEC_VERSION = 1
AXIS_KEYS = ("teacher", "method", "relaxation", "refinement", "seed")
SCALES = ("mini", "paper")
NONE = "none"
# Parameters added after SPEC_VERSION 1, with their defaults. A spec's JSON (its record's spec, and
# the canonical JSON its run id hashes) leaves one out while it holds its default, and `from_json`
# puts the default back, so adding a parameter changes neither the run id nor the recorded spec of
# a cell that does not set it: stored records stay the records of their cells. A cell that sets
# another value is a new run with a new id.
ADDED_PARAMS: dict[str, Any] = {"sample.select_combine": "sum", "distill.init_from": "",
                                "distill.init_optimizer": False, "gan.real_mix": 0.5, "gan.hard_fakes": False,
                                "gan.paired_masks": False, "gan.feature_matching": 0.0, "gan.d_warmup": 0,
                                "distill.precision": "fp32"}

#----------------------------------------------------------------------------


# One cell of an experiment matrix, with every parameter resolved.
@dataclass(frozen=True)
class RunSpec:
    scale: str
    teacher: str
    method: str
    relaxation: str
    refinement: str
    seed: int
    params: tuple[tuple[str, Any], ...]     # sorted (`<stage>.<field>`, value) pairs
    plugins: tuple[str, ...] = ()

    # The canonical JSON that the run id hashes (sorted keys, no whitespace).
    def canonical_json(self) -> str:
        return json.dumps({"spec_version": SPEC_VERSION, **self.to_json()}, sort_keys=True,
                          separators=(",", ":"), allow_nan=False)

    @functools.cached_property
    def run_id(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def param(self, key: str) -> Any:
        return dict(self.params)[key]

    # The values of one stage as its configuration dataclass.
    def stage(self, name: str, config_cls: type) -> Any:
        prefix = name + "."
        return config_cls(**{k[len(prefix):]: v for k, v in self.params if k.startswith(prefix)})

    # A short human-readable label: the axes, then parameters that differ from their defaults.
    def description(self, defaults: Mapping[str, Any] | None = None) -> str:
        parts = [self.teacher, self.method]
        if self.relaxation != NONE:
            parts.append(self.relaxation)
        if self.refinement != NONE:
            parts.append("+" + self.refinement)
        parts.append(f"s{self.seed}")
        if defaults is not None:
            parts += [f"{k}={_short(v)}" for k, v in self.params if defaults.get(k) != v]
        return " ".join(parts)

    # The spec as JSON values; parameters added since SPEC_VERSION are left out at their default.
    def to_json(self) -> dict[str, Any]:
        return {"scale": self.scale, "teacher": self.teacher, "method": self.method,
                "relaxation": self.relaxation, "refinement": self.refinement, "seed": self.seed,
                "params": {k: list(v) if isinstance(v, tuple) else v for k, v in self.params
                           if k not in ADDED_PARAMS or v != ADDED_PARAMS[k]},
                "plugins": list(self.plugins)}

    # The spec of `to_json`'s values (a record's spec); an added parameter that the JSON leaves out
    # takes its default where the spec has the parameter's stage.
    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "RunSpec":
        given = {k: tuple(v) if isinstance(v, list) else v for k, v in d["params"].items()}
        stages = {k.partition(".")[0] for k in given}
        given.update({k: v for k, v in ADDED_PARAMS.items() if k.partition(".")[0] in stages and k not in given})
        params = tuple(sorted(given.items()))
        return cls(d["scale"], d["teacher"], d["method"], d["relaxation"], d["refinement"],
                   int(d["seed"]), params, tuple(d.get("plugins", ())))


def _short(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, tuple) else str(v)


# Every problem found in one request (a grid file, an evaluation), one line each naming what is
# wrong; nothing was launched or computed.
class ProblemsError(ValueError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


# A problem with one key of one cell; the grid loader adds the file and line.
class CellError(ValueError):
    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}")

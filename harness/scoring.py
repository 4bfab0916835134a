"""The one metric loop: every metric a cell names (`eval.metrics`) on one set of samples, each
value with its protocol, and which values report a reward model the cell optimised (fine-tuning,
TTEO or best-of-N selection), so that the report can mark them "(optimised)".
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from harness import registry
from harness.entries import EvalInput, MetricValue, RunContext
from harness.spec import RunSpec, optimised_rewards
from softdimo.teachers.base import Teacher

#----------------------------------------------------------------------------


# The values of the cell's metrics on the samples, and the names of those that report a reward
# the cell optimised. Two metrics producing the same value name is an error.
def score(spec: RunSpec, teacher: Teacher | None, ctx: RunContext, images: Tensor, conditions: Sequence[Any],
          tokens: Tensor | None, samples: Any = None) -> tuple[dict[str, MetricValue], set[str]]:
    values: dict[str, MetricValue] = {}
    optimised: set[str] = set()
    rewards = optimised_rewards(spec)
    inp = EvalInput(spec, teacher, images, list(conditions), tokens, samples)
    for name in spec.param("eval.metrics"):
        entry = registry.metrics.get(name)
        for key, value in entry.compute(inp, ctx).items():
            if key in values:
                raise ValueError(f"metric value {key!r} produced twice (by {name!r} and earlier)")
            values[key] = value
            if entry.reward is not None and entry.reward in rewards:
                optimised.add(key)
    return values, optimised

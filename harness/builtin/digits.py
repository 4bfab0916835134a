"""The mini-scale digits teacher and its metrics."""
from __future__ import annotations

from harness.contracts import registry
from harness.contracts.entries import RunContext, TeacherEntry, per_image_metric
from harness.grid.conditions import DIGIT_NAMES
from harness.methods.metrics import digits as digits_metrics
from softdimo.teachers.digits import DigitsConfig, DigitsTeacher, DigitsWorld, build_digits_teacher, cache_entry


def _build(config: DigitsConfig, ctx: RunContext) -> DigitsTeacher:
    return build_digits_teacher(config, ctx.cache_dir, ctx.log)


# Per-teacher overrides of the stage defaults: refinements continue the Di[M]O student after 100 of
# the 200 distillation steps (the other mini budgets are the stage defaults).
DEFAULT_PARAMS = {"distill.refine_start": 100}

registry.teachers.register("digits", TeacherEntry(
    "digits", DigitsConfig, _build, scales=("mini",), default_params=DEFAULT_PARAMS,
    default_metrics=("digits_fd", "digits_acc", "digits_pr", "digits_struct"),
    build_world=lambda config, ctx: DigitsWorld(config), class_names=lambda: DIGIT_NAMES, work_key=cache_entry,
    description="class-conditional MaskGIT on scikit-learn's 8x8 digits, trained here (mini scale)"))

for _entry in digits_metrics.NETWORK_METRICS.entries(applies_to=("digits",)):
    registry.metrics.register(_entry.name, _entry)
registry.metrics.register("digits_struct", per_image_metric(
    "digits_struct", digits_metrics.extract_pixels, digits_metrics.reduce_structure, applies_to=("digits",),
    description="within-class covariance error and neighbour mutual information (context use)"))

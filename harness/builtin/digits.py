"""The mini-scale digits teacher and its metrics."""
from __future__ import annotations

from harness import registry
from harness.conditions import DIGIT_NAMES
from harness.entries import RunContext, TeacherEntry, per_image_metric
from harness.metrics import digits as digits_metrics
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

_M = digits_metrics
for _name, _extract, _reduce, _desc in (
        ("digits_fd", _M.extract_features, _M.reduce_fd, "Frechet distance on digits-cnn-v1 features (FID analogue)"),
        ("digits_acc", _M.extract_correct, _M.reduce_accuracy, "independent-classifier accuracy (GenEval analogue)"),
        ("digits_pr", _M.extract_features, _M.reduce_precision_recall, "k-NN precision / recall (k=3)"),
        ("digits_struct", _M.extract_pixels, _M.reduce_structure,
         "within-class covariance error and neighbour mutual information (context use)")):
    registry.metrics.register(_name, per_image_metric(_name, _extract, _reduce, applies_to=("digits",),
                                                      description=_desc))

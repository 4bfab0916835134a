"""The mini-scale learned-codebook world `glyphs`: teacher (VQ tokenizer + MaskGIT) and its metrics.
The class-conditional calibration rungs (`real`, `marginals_class`, `marginals_uncond`,
`uniform`; harness/methods/references.py) apply to it as they are: they read its world's real tokens."""
from __future__ import annotations

from typing import Any

from harness.contracts import registry
from harness.contracts.entries import RunContext, TeacherEntry, per_image_metric
from harness.methods.metrics import glyphs as glyphs_metrics
from softdimo.data.glyphs import CLASS_NAMES
from softdimo.teachers.glyphs import (GlyphsConfig, GlyphsTeacher, GlyphsWorld, build_glyphs_teacher,
                                      build_glyphs_world, cache_entry)


def _build(config: GlyphsConfig, ctx: RunContext) -> GlyphsTeacher:
    return build_glyphs_teacher(config, ctx.cache_dir, ctx.log)


def _build_world(config: GlyphsConfig, ctx: RunContext) -> GlyphsWorld:
    return build_glyphs_world(config, ctx.cache_dir, ctx.log)


# Per-teacher overrides of the stage defaults: refinements continue the Di[M]O student after 100 of
# the 200 distillation steps; phi's CFG weight in the loss is the released MaskGIT run's 2.0 (here:
# student FD 193 against 274 at 1.0, seed 0, benchmarks/README.md "Glyphs") and the teacher's own
# sampler guides at 2.0 too (FD 69 against 209 at K = 16). The other budgets are the stage defaults.
DEFAULT_PARAMS: dict[str, Any] = {"distill.refine_start": 100, "distill.teacher_cfg": 2.0, "sample.cfg": 2.0}

registry.teachers.register("glyphs", TeacherEntry(
    "glyphs", GlyphsConfig, _build, scales=("mini",), default_params=DEFAULT_PARAMS,
    default_metrics=("glyphs_fd", "glyphs_acc", "glyphs_pr", "glyphs_colour"),
    build_world=_build_world, class_names=lambda: CLASS_NAMES, work_key=cache_entry,
    description="class-conditional MaskGIT over the codes of a VQ tokenizer (learned codebook and decoder) "
                "of procedural 32x32 glyphs, both trained here (mini scale)"))

for _entry in glyphs_metrics.NETWORK_METRICS.entries(applies_to=("glyphs",)):
    registry.metrics.register(_entry.name, _entry)
registry.metrics.register("glyphs_colour", per_image_metric(
    "glyphs_colour", glyphs_metrics.extract_colour, glyphs_metrics.reduce_colour, applies_to=("glyphs",),
    description="exact colour consistency: share of ink pixels on the sample's majority colour (token agreement)"))

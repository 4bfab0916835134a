"""Built-in methods (Di[M]O, the teacher's sampler, the class-conditional calibration rungs) and relaxations."""
from __future__ import annotations

from harness import methods
from harness.contracts import registry
from harness.contracts.entries import MethodEntry, RelaxationEntry
from harness.grid.spec import RunSpec
from harness.methods import students
from harness.methods.references import CLASS_RUNGS
from softdimo.relax import relax_gumbel, relax_hard, relax_soft

registry.relaxations.register("hard", RelaxationEntry(
    "hard", relax_hard, differentiable=False, params=(),
    description="Di[M]O: sampled one-hot tokens, no gradient"))
# Every built-in relaxation draws x_theta = argmax(z/T + g) from the same noise (`sample_as`), and
# straight-through's forward value one_hot - sg(y) + y is exactly one_hot in floating point
# (tests/softdimo/test_dimo_math.py, `forward_as`): without a gradient-consuming refinement gumbel and soft
# train hard's student.
registry.relaxations.register("gumbel", RelaxationEntry(
    "gumbel", relax_gumbel, differentiable=True, forward_as="hard", sample_as="hard", params=("relax.gumbel_tau",),
    description="straight-through Gumbel-softmax (relax.gumbel_tau)"))
registry.relaxations.register("soft", RelaxationEntry(
    "soft", relax_soft, differentiable=True, sample_as="hard", params=(),
    description="Soft-Di[M]O: expected embedding sum_j p_j E_j"))

_REFERENCE_STAGES = ("teacher", "eval")
registry.methods.register("dimo", MethodEntry(
    "dimo", ("teacher", "distill", "relax", "sample", "eval"), methods.run_dimo, uses_relaxation=True,
    uses_refinement=True, test_time=True, label=methods.dimo_label, work=students.work,
    parent_param=students.INIT_FROM, check_parent=students.check_continuation,
    description="one-step Di[M]O distillation with a relaxation (and a refinement)"))
registry.methods.register("teacher_sampler", MethodEntry(
    "teacher_sampler", ("teacher", "sample", "eval"), methods.run_teacher_sampler,
    label=methods.teacher_label, work=lambda spec, world_size: students.teacher_work(spec),
    description="the teacher's own K-step sampler"))


# A class rung builds the teacher (and trains it, once) only where the teacher has no world of its own.
def _rung_work(spec: RunSpec, world_size: int) -> tuple[tuple[str, ...], ...]:
    return () if registry.teachers.get(spec.teacher).build_world else students.teacher_work(spec)


for _name, _rung in CLASS_RUNGS.items():
    registry.methods.register(_name, MethodEntry(
        _name, _REFERENCE_STAGES, _rung.run, label=lambda spec: CLASS_RUNGS[spec.method].label,
        work=_rung_work, description=f"calibration reference: {_rung.label}"))

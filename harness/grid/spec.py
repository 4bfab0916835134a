"""Resolving one cell of a grid into its `RunSpec` (`harness.contracts.run_spec`), every problem of the cell
named: the stages a cell reads, their typed values, the checks across keys.

Resolution order for every `<stage>.<field>` parameter (later wins): the stage dataclass default
< the teacher's defaults < the grid's `params` < `scales.<scale>.params` < the cell's own values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from harness.contracts import registry
from harness.contracts.entries import MethodEntry, RefinementEntry, RelaxationEntry, TeacherEntry
from harness.contracts.run_spec import NONE, SCALES, CellError, RunSpec
from softdimo.config import DistillConfig, RelaxConfig, SampleConfig
from softdimo.params import param, schema

DEFAULT_METHOD = "dimo"                  # a cell naming a relaxation or refinement without a method

#----------------------------------------------------------------------------


# Evaluation of a run's samples.
@dataclass(frozen=True)
class EvalConfig:
    samples: int = param(2000, lo=1, help="images generated and evaluated")
    metrics: tuple = param((), help="metric names; empty = the teacher's default metrics")
    grid_images: int = param(100, lo=0, hi=400, help="images in the record's sample grid PNG")
    curve_samples: int = param(1000, lo=1, help="images behind each point of a training curve "
                                               "(distill.eval_every > 0)")


STAGE_CONFIGS: dict[str, type] = {
    "distill": DistillConfig, "relax": RelaxConfig, "sample": SampleConfig, "eval": EvalConfig,
}

#----------------------------------------------------------------------------


# The configuration class of every stage a cell reads, given its method and refinement.
def stage_classes(teacher: TeacherEntry, method: MethodEntry,
                  refinement: RefinementEntry | None) -> dict[str, type]:
    out: dict[str, type] = {}
    for stage in method.stages:
        out[stage] = teacher.config_cls if stage == "teacher" else STAGE_CONFIGS[stage]
    if refinement is not None and refinement.stage is not None and refinement.config_cls is not None:
        out[refinement.stage] = refinement.config_cls
    return out


# Every stage name any teacher, method or refinement could read (for "unknown stage" errors).
def known_stages() -> set[str]:
    stages = set(STAGE_CONFIGS) | {"teacher"}
    stages |= {e.stage for _, e in registry.refinements.items() if e.stage}
    return stages


# Every problem found in one cell (independent problems together), each a CellError.
class CellErrors(ValueError):
    def __init__(self, errors: list[CellError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


class _Problems:
    # Collects the CellErrors of one cell; `check` runs a step and keeps its error.
    def __init__(self) -> None:
        self.errors: list[CellError] = []

    def add(self, key: str, message: str) -> None:
        self.errors.append(CellError(key, message))

    def check(self, step: Any, *args: Any) -> Any:
        try:
            return step(*args)
        except CellError as e:
            self.errors.append(e)
            return None

    def raise_if_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise CellErrors(self.errors)


# The method of a cell: its own, or `dimo` when it names a relaxation or a refinement without one
# (what such a cell means); None when it has none.
def cell_method(cell: Mapping[str, Any]) -> Any:
    if "method" in cell:
        return cell["method"]
    if cell.get("relaxation", NONE) != NONE or cell.get("refinement", NONE) != NONE:
        return DEFAULT_METHOD
    return None


# Resolve one cell (axis values and `<stage>.<field>` values) into a RunSpec; raises CellError for
# one problem and CellErrors for several independent ones (all found in one pass).
def resolve_cell(cell: Mapping[str, Any], scale: str, plugins: tuple[str, ...] = (),
                 grid_params: Mapping[str, Any] | None = None) -> RunSpec:
    if scale not in SCALES:
        raise CellError("scale", f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
    problems = _Problems()
    method_name = cell_method(cell)
    for key, value in (("teacher", cell.get("teacher")), ("method", method_name), ("seed", cell.get("seed"))):
        if value is None:
            problems.add(key, "missing; every cell needs teacher, method and seed")
    teacher = problems.check(_lookup, registry.teachers, "teacher", cell["teacher"]) if "teacher" in cell else None
    method = problems.check(_lookup, registry.methods, "method", method_name) if method_name else None
    seed = cell.get("seed")
    if "seed" in cell and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        problems.add("seed", f"expected a non-negative integer, got {seed!r}")
    if teacher is not None and scale not in teacher.scales:
        problems.add("teacher", f"teacher {teacher.name!r} runs at scale(s) {', '.join(teacher.scales)}, "
                                f"not {scale!r}")
    relaxation, refinement = cell.get("relaxation", NONE), cell.get("refinement", NONE)
    if method is not None:
        relax_entry = problems.check(_relaxation, method, relaxation)
        ref_entry = problems.check(_refinement, method, refinement, relax_entry)
    else:                                    # the names alone, without the method to check them against
        relax_entry, ref_entry = (problems.check(_lookup, reg, axis, value) if value != NONE else None
                                  for axis, reg, value in (("relaxation", registry.relaxations, relaxation),
                                                           ("refinement", registry.refinements, refinement)))
    overrides = {**(teacher.default_params if teacher is not None else {}), **(grid_params or {}),
                 **{k: v for k, v in cell.items() if "." in k}}
    if teacher is None or method is None or (relaxation != NONE and relax_entry is None) \
            or (refinement != NONE and ref_entry is None):
        # The stages a cell reads depend on these; each parameter is still checked against the
        # stages it could belong to, so that one run names every problem of the cell.
        classes = _possible_classes(teacher, method, refinement, ref_entry)
        for key, value in overrides.items():
            problems.check(_set_value, {}, classes, key, value)
        problems.raise_if_any()

    classes = stage_classes(teacher, method, ref_entry)
    values: dict[str, Any] = {}
    for stage, cls in classes.items():
        for name, spec in schema(cls).items():
            values[f"{stage}.{name}"] = spec.default
    for key, value in overrides.items():
        problems.check(_set_value, values, classes, key, value)

    if "eval" in classes:
        problems.check(_check_metrics, values, teacher)
    if ref_entry is not None and ref_entry.check is not None and ref_entry.stage in classes:
        prefix = ref_entry.stage + "."
        problems.check(ref_entry.check, ref_entry.config_cls(**{k[len(prefix):]: v for k, v in values.items()
                                                              if k.startswith(prefix)}), teacher.name)
    if "sample" in classes:
        problems.check(_check_test_time, values, method, teacher)
    if "distill" in classes:
        problems.check(_check_distill, values)
    problems.raise_if_any()
    return RunSpec(scale, teacher.name, method.name, relaxation, refinement, seed,
                   tuple(sorted(values.items())), tuple(plugins))


# The stages a cell whose teacher, method, relaxation or refinement is wrong could read, with their
# configuration classes: its method's (every stage when the method is unknown; the teacher's only
# when the teacher is known), and the refinement's (every refinement's when the named one is unknown).
def _possible_classes(teacher: TeacherEntry | None, method: MethodEntry | None, refinement: Any,
                      ref_entry: RefinementEntry | None) -> dict[str, type]:
    stages = method.stages if method is not None else ("teacher", *STAGE_CONFIGS)
    out = {s: STAGE_CONFIGS[s] for s in stages if s in STAGE_CONFIGS}
    if "teacher" in stages and teacher is not None:
        out["teacher"] = teacher.config_cls
    if ref_entry is not None:
        refs = [ref_entry]
    else:
        refs = [e for _, e in registry.refinements.items()] if refinement != NONE else []
    out.update({e.stage: e.config_cls for e in refs if e.stage is not None and e.config_cls is not None})
    return out


# The relaxation entry of a cell, checked against its method; None when the method takes none.
def _relaxation(method: MethodEntry, relaxation: Any) -> RelaxationEntry | None:
    if not method.uses_relaxation:
        if relaxation != NONE:
            raise CellError("relaxation", f"method {method.name!r} takes no relaxation (got {relaxation!r}); "
                                          f"allowed: none")
        return None
    if relaxation == NONE:
        raise CellError("relaxation", f"method {method.name!r} needs a relaxation; allowed: "
                                      f"{', '.join(registry.relaxations.names())}")
    entry = _lookup(registry.relaxations, "relaxation", relaxation)
    for declared in (entry.forward_as, entry.sample_as):
        if declared is not None and declared not in registry.relaxations:
            kind = "forward_as" if declared == entry.forward_as else "sample_as"
            raise CellError("relaxation", f"relaxation {relaxation!r} declares {kind} {declared!r}, which is not "
                                          f"registered; allowed: {', '.join(registry.relaxations.names())}")
    return entry


# The refinement entry of a cell, checked against its method and relaxation; None without one.
def _refinement(method: MethodEntry, refinement: Any, relax_entry: RelaxationEntry | None) -> RefinementEntry | None:
    if refinement == NONE:
        return None
    if not method.uses_refinement:
        raise CellError("refinement", f"method {method.name!r} takes no refinement (got {refinement!r}); "
                                      f"allowed: none")
    entry = _lookup(registry.refinements, "refinement", refinement)
    if entry.needs_gradient and relax_entry is not None and not relax_entry.differentiable:
        grads = [n for n, e in registry.relaxations.items() if e.differentiable]
        free = [n for n, e in registry.refinements.items() if not e.needs_gradient]
        alt = f"; or a refinement that needs none: {', '.join(free)}" if free else ""
        raise CellError("refinement", f"refinement {refinement!r} needs gradients through the generator's "
                                      f"output, but relaxation {relax_entry.name!r} passes none (sampled tokens "
                                      f"are not differentiable); use relaxation {' or '.join(grads)}{alt}")
    return entry


# Set one `<stage>.<field>` value (checked) if the cell reads that stage.
def _set_value(values: dict[str, Any], classes: Mapping[str, type], key: str, value: Any) -> None:
    stage, _, name = key.partition(".")
    if stage not in classes:
        if stage not in known_stages():
            raise CellError(key, f"unknown stage {stage!r}{registry.did_you_mean(stage, known_stages())}; "
                                 f"allowed stages: {', '.join(sorted(known_stages()))}")
        return                           # a stage this cell's method does not read
    fields = schema(classes[stage])
    if name not in fields:
        raise CellError(key, f"unknown parameter of stage {stage!r}{registry.did_you_mean(name, fields)}; "
                             f"allowed: {', '.join(sorted(fields))}")
    try:
        values[key] = fields[name].check(value)
    except ValueError as e:
        choices = fields[name].choices
        hint = registry.did_you_mean(value, map(str, choices)) if choices and isinstance(value, str) else ""
        raise CellError(key, f"{e}{hint}") from None


# eval.metrics: the teacher's defaults when empty; each registered and applicable to the teacher.
def _check_metrics(values: dict[str, Any], teacher: TeacherEntry) -> None:
    metrics = values["eval.metrics"] or teacher.default_metrics
    for m in metrics:
        entry = _lookup(registry.metrics, "eval.metrics", m)
        if "*" not in entry.applies_to and teacher.name not in entry.applies_to:
            raise CellError("eval.metrics", f"metric {m!r} does not apply to teacher {teacher.name!r}; it "
                                            f"applies to {', '.join(entry.applies_to)}")
    values["eval.metrics"] = tuple(metrics)


# Reward model names of one key: registered and applicable to the teacher.
def check_reward_names(key: str, names: Any, teacher: str) -> None:
    for name in names:
        entry = _lookup(registry.rewards, key, name)
        if "*" not in entry.applies_to and teacher not in entry.applies_to:
            raise CellError(key, f"reward model {name!r} does not apply to teacher {teacher!r}; "
                            f"it applies to {', '.join(entry.applies_to)}")


# The reward models a cell optimises: its refinement's `<stage>.models`, the reward TTEO ascends
# and the best-of-N selector.
def optimised_rewards(spec: RunSpec) -> set[str]:
    params = dict(spec.params)
    out: set[str] = set()
    if spec.refinement != NONE and spec.refinement in registry.refinements:
        stage = registry.refinements.get(spec.refinement).stage
        out |= set(params.get(f"{stage}.models", ()))
    if params.get("sample.tteo_steps", 0) > 0:
        out |= set(params.get("sample.tteo_reward", ()))
    if params.get("sample.best_of_n", 1) > 1:
        out |= set(params.get("sample.select_reward", ()))
    return out


# Test-time scaling (`sample.tteo_*`, `sample.best_of_n`): only for methods that honour it, and
# with the reward models it needs.
def _check_test_time(values: Mapping[str, Any], method: MethodEntry, teacher: TeacherEntry) -> None:
    steps, n = values["sample.tteo_steps"], values["sample.best_of_n"]
    if (steps > 0 or n > 1) and not method.test_time:
        able = [name for name, e in registry.methods.items() if e.test_time]
        key = "sample.tteo_steps" if steps > 0 else "sample.best_of_n"
        raise CellError(key, f"method {method.name!r} does not do test-time scaling (TTEO / best-of-N); "
                        f"methods that do: {', '.join(able) or '(none)'}")
    if steps > 0 and not values["sample.tteo_reward"]:
        raise CellError("sample.tteo_reward", f"empty, but sample.tteo_steps = {steps}; name the reward "
                        f"model(s) TTEO ascends; allowed: {', '.join(registry.rewards.names())}")
    if n > 1 and not values["sample.select_reward"]:
        raise CellError("sample.select_reward", f"empty, but sample.best_of_n = {n}; name the reward "
                        f"model(s) that score the candidates; allowed: {', '.join(registry.rewards.names())}")
    check_reward_names("sample.tteo_reward", values["sample.tteo_reward"], teacher.name)
    check_reward_names("sample.select_reward", values["sample.select_reward"], teacher.name)


# Distillation settings that only make sense together.
def _check_distill(values: Mapping[str, Any]) -> None:
    if values["distill.weight_decay"] and values["distill.optimizer"] != "adamw":
        raise CellError("distill.weight_decay", f"{values['distill.weight_decay']} needs distill.optimizer "
                        f"'adamw' (decoupled weight decay, as the released code applies it); allowed with "
                        f"'adam': 0")
    r_range = values["distill.r_init_range"]
    if r_range and (len(r_range) != 2 or any(isinstance(r, bool) or not isinstance(r, (int, float))
                                             or not 0 <= r <= 1 for r in r_range) or r_range[0] > r_range[1]):
        raise CellError("distill.r_init_range", f"expected [a, b] with 0 <= a <= b <= 1 (r_init ~ U[a, b] "
                        f"per step) or an empty list, got {list(r_range)!r}")
    if values["distill.sigma_init_schedule"] != "fixed" and values["distill.sigma_init_warmup"] < 1:
        raise CellError("distill.sigma_init_warmup", f"schedule {values['distill.sigma_init_schedule']!r} "
                        f"needs the warm-up length in steps; allowed: an integer >= 1")


def _lookup(reg: registry.Registry, key: str, name: Any) -> Any:
    if not isinstance(name, str):
        raise CellError(key, f"expected a name, got {name!r}; allowed: {', '.join(reg.names())}")
    try:
        return reg.get(name)
    except registry.UnknownNameError as e:
        raise CellError(key, str(e)) from None


# The default value of every parameter a spec holds (for descriptions: what differs from defaults).
def spec_defaults(spec: RunSpec) -> dict[str, Any]:
    teacher = registry.teachers.get(spec.teacher)
    method = registry.methods.get(spec.method)
    ref = registry.refinements.get(spec.refinement) if spec.refinement != NONE else None
    out: dict[str, Any] = {}
    for stage, cls in stage_classes(teacher, method, ref).items():
        out.update({f"{stage}.{n}": s.default for n, s in schema(cls).items()})
    out.update(teacher.default_params)
    out["eval.metrics"] = tuple(teacher.default_metrics)
    return out

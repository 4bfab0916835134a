"""Run ids: a hash of the resolved spec, stable across processes, independent of the order in
which the grid gave things, and different whenever any value changes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.contracts import registry
from harness.contracts.run_spec import ADDED_PARAMS, CellError, RunSpec
from harness.grid import load_grid
from harness.grid.spec import STAGE_CONFIGS, resolve_cell
from softdimo.params import schema

CELL = {"teacher": "toy", "method": "toy_student", "relaxation": "toy_soft",
        "refinement": "toy_sharpen", "seed": 3, "distill.steps": 7}


def test_run_id_stable_across_processes():
    spec = resolve_cell(CELL, "mini", ("toy_lab",), {"eval.samples": 12})
    code = ("import json, sys, harness.builtin, toy_lab; from harness.grid.spec import resolve_cell; "
            "print(resolve_cell(json.loads(sys.argv[1]), 'mini', ('toy_lab',), "
            "{'eval.samples': 12}).run_id)")
    root = Path(__file__).resolve().parents[2]
    ids = {subprocess.run([sys.executable, "-c", code, json.dumps(CELL)], capture_output=True,
                          text=True, check=True, cwd=root,
                          env={"PYTHONPATH": f"{root}:{root / 'tests' / 'plugins'}",
                               "PYTHONHASHSEED": str(seed)}).stdout.strip()
           for seed in (1, 2)}
    assert ids == {spec.run_id}
    assert len(spec.run_id) == 16 and int(spec.run_id, 16) >= 0


def test_run_id_independent_of_order():
    a = resolve_cell(CELL, "mini", (), {"eval.samples": 12, "sample.temperature": 0.5})
    b = resolve_cell(dict(reversed(list(CELL.items()))), "mini", (),
                     {"sample.temperature": 0.5, "eval.samples": 12})
    c = resolve_cell({**CELL, "eval.samples": 12}, "mini", (), {"sample.temperature": 0.5})
    assert a.run_id == b.run_id == c.run_id
    assert RunSpec.from_json(json.loads(json.dumps(a.to_json()))) == a


TEST_TIME_PREFIXES = ("sample.tteo_", "sample.best_of_n", "sample.select_reward")


# Parameters whose other values need another parameter set with them: (new value, the other values).
TOGETHER = {"distill.r_init_range": ((0.2, 0.4), {}),
            "distill.weight_decay": (0.01, {"distill.optimizer": "adamw"}),
            "distill.sigma_init_schedule": ("warmup_linear", {"distill.sigma_init_warmup": 10}),
            "distill.init_from": ("0123456789abcdef", {})}   # a parent's run id


def test_run_id_changes_with_every_parameter():
    base = resolve_cell(CELL, "mini")
    ids = {base.run_id}
    changed = 0
    classes = {**STAGE_CONFIGS, "teacher": registry.teachers.get("toy").config_cls,
               "toyref": registry.refinements.get("toy_sharpen").config_cls}
    for key, value in base.params:
        stage, _, name = key.partition(".")
        if key.startswith(TEST_TIME_PREFIXES):   # toy_student refuses test-time scaling (below)
            continue
        p = schema(classes[stage])[name]
        extra: dict = {}
        if key in TOGETHER:
            new, extra = TOGETHER[key]
        elif p.type is bool:
            new = not value
        elif p.choices:
            new = next(c for c in p.choices if c != value)
        elif p.type is tuple:
            new = ("toy_std",) if value != ("toy_std",) else ("toy_mean",)
        elif p.type is int:
            new = value + 1 if p.hi is None or value + 1 <= p.hi else value - 1
        else:
            new = value / 2 if value else 0.5
        spec = resolve_cell({**CELL, **extra, key: new}, "mini")
        assert spec.param(key) == new
        ids.add(spec.run_id)
        changed += 1
    for axis, value in (("seed", 4), ("refinement", "none")):
        ids.add(resolve_cell({**CELL, axis: value}, "mini").run_id)
        changed += 1
    with pytest.raises(CellError, match="does not do test-time scaling"):
        resolve_cell({**CELL, "sample.best_of_n": 2}, "mini")
    ids.add(resolve_cell({**CELL, "relaxation": "toy_hard", "refinement": "none"}, "mini").run_id)
    changed += 1
    ids.add(resolve_cell(CELL, "mini", ("toy_lab",)).run_id)   # plugins are part of the spec
    assert len(ids) == changed + 2
    assert changed > 30                          # every field of every stage was varied


def test_to_json_has_every_field_and_id_scheme_is_design_md():
    import dataclasses
    import hashlib
    spec = resolve_cell(CELL, "mini", ("toy_lab",))
    assert set(spec.to_json()) == {f.name for f in dataclasses.fields(RunSpec)}
    # docs/design.md: sha256 of the canonical JSON (sorted keys, no spaces, spec_version), 16 hex.
    d = dataclasses.asdict(spec)
    d["params"] = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.params
                   if ADDED_PARAMS.get(k, object()) != v}
    d["plugins"] = list(spec.plugins)
    body = json.dumps({"spec_version": 1, **d}, sort_keys=True, separators=(",", ":"))
    assert spec.run_id == hashlib.sha256(body.encode()).hexdigest()[:16]


# Run ids of cells stored before parameters were added (ADDED_PARAMS). If one of these grids
# changes a value on purpose, its cells are new runs: update the id with the change.
ROOT = Path(__file__).resolve().parents[2]
STORED_IDS = {("soft_vs_hard", 0): "321be072e79d53c6",
              ("soft_vs_hard", 3): "a7a77a472ca5b9eb",          # a GAN cell (the gan.* additions)
              ("tteo_best_of_n", -1): "347ff4578aaca631"}


def test_added_parameters_keep_the_run_ids_of_stored_cells():
    for (grid, i), run_id in STORED_IDS.items():
        spec = load_grid(ROOT / "ablations" / f"{grid}.yaml").specs[i]
        assert spec.run_id == run_id, f"the run id of {grid} cell {i} changed: its stored record is orphaned"
        params = dict(spec.params)
        added = {k: v for k, v in ADDED_PARAMS.items() if k.partition(".")[0] in {n.partition(".")[0] for n in params}}
        assert added, f"{grid} cell {i} has no added parameter to check"
        assert all(params[k] == v and k not in spec.to_json()["params"] for k, v in added.items())
        assert RunSpec.from_json(spec.to_json()) == spec


def test_an_added_parameter_off_its_default_is_recorded_and_a_new_run():
    cell = {"teacher": "digits", "method": "dimo", "relaxation": "soft", "seed": 0, "sample.best_of_n": 2,
            "sample.select_reward": ["digits_reward"]}
    default, zscore = resolve_cell(cell, "mini"), resolve_cell({**cell, "sample.select_combine": "zscore"}, "mini")
    assert default.run_id != zscore.run_id
    assert zscore.to_json()["params"]["sample.select_combine"] == "zscore"
    assert RunSpec.from_json(zscore.to_json()) == zscore
    reference = resolve_cell({"teacher": "digits", "method": "real", "seed": 0}, "mini")
    assert RunSpec.from_json(reference.to_json()) == reference      # no sample stage: nothing put back


def test_paper_teachers_default_to_their_released_dropout_and_the_reported_gan_weight():
    # Meissonic's released trainer: phi in eval mode, dropout layers p = 0 (theta and psi too);
    # MaskGIT's: train mode at 0.1 (the field defaults). w_GAN: the paper's 200 for the ImageNet teachers.
    meissonic = dict(resolve_cell({"teacher": "meissonic", "method": "dimo", "relaxation": "hard", "seed": 0},
                                  "paper").params)
    assert meissonic["distill.dropout"] == meissonic["distill.teacher_dropout"] == 0.0
    assert meissonic["distill.mask_schedule"] == "cosine_clamped"
    for teacher in ("maskgit", "maskbit"):
        params = dict(resolve_cell({"teacher": teacher, "method": "dimo", "relaxation": "soft", "refinement": "gan",
                                    "seed": 0}, "paper").params)
        assert params["gan.weight"] == 200.0 and params["distill.teacher_dropout"] == 0.1, teacher

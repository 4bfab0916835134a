"""The refinement ablation grids: every mini-scale cell resolves (axes, stages, rewards)."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

import harness.builtin  # noqa: F401
from harness import assets, run
from harness.grid import load_grid
from harness.spec import resolve_cell

ABLATIONS = Path(__file__).resolve().parents[1] / "ablations"
GRIDS = {"soft_vs_gumbel_gan": 6, "dimo_gan_only": 9, "gan_mask_range": 6, "tteo_best_of_n": 45,
         "reward_finetune": 12}


def _mini_cells(doc: dict[str, Any]) -> list[dict[str, Any]]:
    # The grid format's products (a mapping, or a list of mappings) with the mini scale's params.
    matrix = doc["matrix"] if isinstance(doc["matrix"], list) else [doc["matrix"]]
    params = {**doc.get("params", {}), **doc.get("scales", {}).get("mini", {}).get("params", {})}
    cells = []
    for product in matrix:
        keys = list(product)
        for values in itertools.product(*(product[k] for k in keys)):
            cells.append({**params, **dict(zip(keys, values))})
    return cells


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_ablation_grid_cells_resolve_at_mini_scale(name: str) -> None:
    doc = yaml.safe_load((ABLATIONS / f"{name}.yaml").read_text())
    assert doc["name"] == name and doc["scale"] == "mini" and {"mini", "paper"} <= set(doc["scales"])
    specs = [resolve_cell(cell, "mini") for cell in _mini_cells(doc)]
    assert len({s.run_id for s in specs}) == GRIDS[name]
    assert {s.teacher for s in specs} == {"digits"}


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_ablation_grid_validates_at_paper_scale_and_names_its_assets(name: str, tmp_path, monkeypatch) -> None:
    # Every paper-scale cell resolves (rewards registered and applicable); before a launch the
    # missing released files are named: teachers' weights, metric networks and reward models.
    for _, asset in assets.manifest.items():             # look only under tmp_path
        if asset.env_var:
            monkeypatch.delenv(asset.env_var, raising=False)
    monkeypatch.setenv("SOFTDIMO_ASSETS", str(tmp_path / "assets"))
    for var in ("XDG_CACHE_HOME", "TORCH_HOME", "HF_HOME", "HF_HUB_CACHE", "HPS_ROOT"):
        monkeypatch.setenv(var, str(tmp_path / "caches" / var))
    grid = load_grid(ABLATIONS / f"{name}.yaml", scale="paper")
    problems = "\n".join(run.missing_assets(grid, grid.specs))
    teacher = {s.teacher for s in grid.specs}
    assert ("maskbit_generator_14bit" if teacher == {"maskbit"} else "maskgen_vq_l") in problems
    if teacher == {"maskgen"}:
        assert "'clip-vit-g-14-laion2b-s12b-b42k' is missing" in problems and "'hps-v2.1' is missing" in problems

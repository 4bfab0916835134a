"""The refinement ablation grids: every mini-scale cell resolves (axes, stages, rewards)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness import run
from harness.grid import load_grid
from harness.store import assets

ABLATIONS = Path(__file__).resolve().parents[2] / "ablations"
GRIDS = {"soft_vs_gumbel_gan": 40, "dimo_gan_only": 15, "gan_mask_range": 10, "tteo_best_of_n": 45,
         "reward_finetune": 20}


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_ablation_grid_cells_resolve_at_mini_scale(name: str) -> None:
    doc = yaml.safe_load((ABLATIONS / f"{name}.yaml").read_text())
    assert doc["name"] == name and doc["scale"] == "mini" and {"mini", "paper"} <= set(doc["scales"])
    specs = load_grid(ABLATIONS / f"{name}.yaml").specs
    assert len({s.run_id for s in specs}) == len(specs) == GRIDS[name]
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
    weights = {"maskbit": "maskbit_generator_14bit", "maskgit": "maskgit_imagenet256", "maskgen": "maskgen_vq_l",
               "meissonic": "meissonic_transformer"}
    assert teacher <= set(weights) and all(f"'{weights[t]}' is missing" in problems for t in teacher)
    if "maskgen" in teacher:
        assert "'clip-vit-g-14-laion2b-s12b-b42k' is missing" in problems and "'hps-v2.1' is missing" in problems

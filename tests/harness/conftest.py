"""Shared fixtures of the harness tests: the `toy_lab` plugin on the path of this process and of
every job subprocess, grid files written from text, and the records of a results root."""
from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "tests" / "plugins"
for _p in (str(PLUGINS), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)
# Jobs started by submitit's local executor import the harness and the plugin from these paths.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), str(PLUGINS)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

import toy_lab  # noqa: E402,F401


# A grid file made from (dedented) YAML text.
@pytest.fixture
def write_grid(tmp_path: Path):
    def write(text: str, name: str = "grid.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path
    return write


# Every record.json under a results root.
@pytest.fixture
def record_files():
    def find(root: Path) -> list[Path]:
        return sorted(root.rglob("record.json")) if root.exists() else []
    return find


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch):
    for var in ("TOY_LAB_FAIL", "TOY_LAB_CRASH", "TOY_LAB_FILL", "TOY_LAB_FAIL_RANK", "TOY_LAB_CRASH_RANK",
                "TOY_LAB_FAIL_SCORING",
                "SOFTDIMO_CACHE", "SOFTDIMO_THREADS",
                "SOFTDIMO_BASELINES", "SOFTDIMO_SLURM_PROFILES"):
        monkeypatch.delenv(var, raising=False)


# Assets looked for only under tmp_path: no asset's own variable, no upstream caches.
@pytest.fixture
def isolated_assets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from harness.store import assets
    for _, asset in assets.manifest.items():
        if asset.env_var:
            monkeypatch.delenv(asset.env_var, raising=False)
    monkeypatch.setenv("SOFTDIMO_ASSETS", str(tmp_path / "assets"))
    for var in ("XDG_CACHE_HOME", "TORCH_HOME", "HF_HOME", "HF_HUB_CACHE", "HPS_ROOT"):
        monkeypatch.setenv(var, str(tmp_path / "caches" / var))
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    return tmp_path / "assets"

"""Fixtures of the paper-metric tests: seeded random weights in the released files' formats, placed
under a temporary asset root (so the harness finds them the way it finds a user's real files), and
tiny image folders. Nothing is downloaded.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.methods.metrics.random_weights import write_cleanfid_inception, write_tfidelity_inception
from harness.store import assets

N_SAMPLES, N_REFERENCE, SIZE = 10, 8, 32
CACHE_VARIABLES = ("SOFTDIMO_INCEPTION_TORCHSCRIPT", "SOFTDIMO_INCEPTION_TFIDELITY", "SOFTDIMO_ADM_IMAGENET256",
                   "SOFTDIMO_HPS_V20", "SOFTDIMO_HPS_V21", "SOFTDIMO_CLIP_VIT_G_14", "SOFTDIMO_GENEVAL_DETECTOR",
                   "SOFTDIMO_COCO_FID_STATS", "SOFTDIMO_COCO30K_CAPTIONS", "SOFTDIMO_MJHQ30K_IMAGES",
                   "SOFTDIMO_MJHQ30K_META", "SOFTDIMO_CACHE")


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    torch.set_num_threads(1)


# Seeded Inception weights: torch-fidelity's state dict and clean-fid's TorchScript archive.
@pytest.fixture(scope="session")
def inception_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inception")
    return {"tfidelity": write_tfidelity_inception(root / "weights-inception-2015-12-05-6726825d.pth", seed=0),
            "torchscript": write_cleanfid_inception(root / "inception-2015-12-05.pt", seed=0)}


# Let a test's stand-in file pass for a released asset whose sha256 (or its prefix) is published: the
# manifest entry takes the stand-in's hash for this test (the check itself still runs).
@pytest.fixture()
def stand_in(monkeypatch: pytest.MonkeyPatch):
    def accept(name: str, path: Path) -> Path:
        asset = assets.manifest.get(name)
        monkeypatch.setitem(assets.manifest._entries, name,
                            dataclasses.replace(asset, sha256=assets.sha256_file(path), sha256_prefix=None))
        return path
    return accept


# A temporary asset root holding the seeded Inception files under their manifest names (accepted as
# stand-ins); every library cache variable points into the temporary folder, so no real file on this
# machine is used.
@pytest.fixture()
def asset_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inception_files: dict[str, Path], stand_in) -> Path:
    root = tmp_path / "assets"
    (root / "cleanfid").mkdir(parents=True)
    (root / "torch-fidelity").mkdir()
    (root / "cleanfid" / "inception-2015-12-05.pt").symlink_to(inception_files["torchscript"])
    (root / "torch-fidelity" / "weights-inception-2015-12-05-6726825d.pth").symlink_to(inception_files["tfidelity"])
    stand_in("inception-2015-12-05-tfidelity", inception_files["tfidelity"])
    monkeypatch.setenv("SOFTDIMO_ASSETS", str(root))
    for var in CACHE_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    for var, sub in (("TORCH_HOME", "torch"), ("HF_HOME", "hf"), ("HF_HUB_CACHE", "hf/hub"), ("HPS_ROOT", "hps")):
        monkeypatch.setenv(var, str(tmp_path / "caches" / sub))
    return root


def _write_images(folder: Path, n: int, seed: int, lo: int, hi: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = rng.integers(lo, hi, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{i:06d}.png")
    return folder


# Tiny sample and reference folders (different seeds and intensity ranges, so FID is not ~0).
@pytest.fixture(scope="session")
def image_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    return {"samples": _write_images(root / "samples", N_SAMPLES, seed=1, lo=0, hi=256),
            "reference": _write_images(root / "reference", N_REFERENCE, seed=2, lo=40, hi=220)}

"""PRDC against a direct NumPy implementation of Naeem et al.'s definitions, and on the protocol path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from harness.methods.metrics import fid
from harness.methods.metrics.features import features_of, load_extractor
from harness.methods.metrics.prdc import knn_radii, prdc
from harness.methods.samples import open_samples


# Naeem et al. (2020), written from the definitions with full distance matrices.
def numpy_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    d_rr, d_ff, d_rf = cdist(real, real), cdist(fake, fake), cdist(real, fake)
    r_real = np.sort(d_rr, axis=1)[:, k]
    r_fake = np.sort(d_ff, axis=1)[:, k]
    inside = d_rf < r_real[:, None]                       # [real, fake]
    return {"precision": inside.any(axis=0).mean(),
            "recall": (d_rf < r_fake[None, :]).any(axis=1).mean(),
            "density": inside.sum() / (k * fake.shape[0]),
            "coverage": (d_rf.min(axis=1) < r_real).mean()}


@pytest.mark.parametrize("k", [1, 3, 5])
def test_prdc_equals_numpy(k):
    rng = np.random.default_rng(k)
    real = rng.normal(size=(57, 6))
    fake = rng.normal(size=(43, 6)) * 1.3 + 0.4
    ours = prdc(real, fake, k=k, block=8)                  # blocks smaller than the sets
    ref = numpy_prdc(real, fake, k)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
    assert 0 < ours["precision"] < 1 and 0 < ours["coverage"] < 1


def test_prdc_known_values():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    # k=1: every real radius is 1; fake 0.5 lies in the balls of 0 and 1, fake 10 in none.
    out = prdc(real, np.array([[0.5], [10.0]]), k=1)
    assert out["precision"] == 0.5
    assert out["density"] == 1.0                           # (2 + 0) / (1 * 2)
    assert out["coverage"] == 0.5                          # reals 0 and 1 have fake 0.5 within radius 1
    assert out["recall"] == 1.0                            # fake radii are 9.5: every real is inside the ball of 0.5


def test_prdc_identical_sets_are_perfect():
    x = np.random.default_rng(0).normal(size=(30, 4))
    out = prdc(x, x + 1e-9, k=3)
    assert out["precision"] == 1.0 and out["recall"] == 1.0 and out["coverage"] == 1.0


def test_knn_radii_needs_more_points_than_k():
    with pytest.raises(ValueError, match="k=3 nearest neighbours need more than 3 points"):
        knn_radii(torch.zeros(3, 2), 3)


def test_prdc_on_protocol_features(asset_root, image_dirs):
    protocol = fid.FIDProtocol("test-prdc", "torch-fidelity/inception-v3-compat", None, None, None, prdc_k=2)
    values = fid.evaluate(open_samples(image_dirs["samples"]), protocol, ["prdc"], reference=image_dirs["reference"])
    extractor = load_extractor("torch-fidelity/inception-v3-compat",
                               asset_root / "torch-fidelity" / "weights-inception-2015-12-05-6726825d.pth")
    real = features_of(open_samples(image_dirs["reference"]), extractor).pool.astype(np.float64)
    fake = features_of(open_samples(image_dirs["samples"]), extractor).pool.astype(np.float64)
    ref = numpy_prdc(real, fake, 2)
    for key in ("precision", "recall", "density", "coverage"):
        assert values[key].value == pytest.approx(ref[key], abs=1e-12)
        assert values[key].protocol["prdc_k"] == 2 and values[key].protocol["reference_num_images"] == 8

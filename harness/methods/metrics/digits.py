"""Mini-scale metrics for the digits teacher, each an honest small-scale analogue of a paper metric.

- `digits_fd`: Frechet distance between digits-cnn-v1 features of the samples and of the held-out
  test split (360 images) quantised like the teacher's tokens (the FID analogue).
- `digits_acc`: accuracy of an independent classifier (digits-mlp-v1) against the conditioning
  labels (the GenEval analogue).
- `digits_pr`: k-NN precision and recall (Kynkaenniemi et al., k = 3) on the same features.
- `digits_struct`: classifier-free structure: the relative Frobenius error of the mean within-class
  64x64 pixel covariance against the test split (`digits_cov_err`), and the mean within-class
  mutual information of adjacent pixels with the Miller-Madow correction (`digits_nbr_mi`).
  Independent per-pixel sampling matches variances but has no off-diagonal covariance and no
  neighbour information, so these separate a model that uses context from per-pixel marginals,
  which FD at this scale cannot for shorter-trained teachers (benchmarks/README.md, calibration
  ladder).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from torch import Tensor

from harness.contracts.entries import EvalInput, MetricValue, RunContext, labels_of
from harness.methods.metrics.class_world import ClassWorldMetrics, feature_statistics
from harness.methods.metrics.digits_nets import NETS, load_net
from softdimo.data import digits as data

#----------------------------------------------------------------------------
# Pure computations (numpy, float64); Frechet distance and precision / recall: class_world.py.


# Mean within-class covariance (64 x 64) of flattened images [N, 64] with labels [N].
def within_class_covariance(pixels: np.ndarray, labels: np.ndarray) -> np.ndarray:
    covs = [np.cov(pixels[labels == c].astype(np.float64), rowvar=False)
            for c in range(data.NUM_CLASSES) if (labels == c).sum() > 1]
    return np.mean(covs, axis=0)


# Relative Frobenius error ||S_W(x) - S_W(ref)||_F / ||S_W(ref)||_F of within-class covariances.
def covariance_error(pixels: np.ndarray, labels: np.ndarray, ref_pixels: np.ndarray,
                     ref_labels: np.ndarray) -> float:
    s, s_ref = within_class_covariance(pixels, labels), within_class_covariance(ref_pixels, ref_labels)
    return float(np.linalg.norm(s - s_ref) / np.linalg.norm(s_ref))


# Horizontally and vertically adjacent pixel pairs of the 8x8 grid (112 pairs).
@lru_cache(maxsize=None)
def adjacent_pairs() -> np.ndarray:
    pairs = []
    for r in range(data.SIDE):
        for c in range(data.SIDE):
            i = r * data.SIDE + c
            if c + 1 < data.SIDE:
                pairs.append((i, i + 1))
            if r + 1 < data.SIDE:
                pairs.append((i, i + data.SIDE))
    return np.array(pairs)


def _entropy_mm(counts: np.ndarray, n: int) -> float:
    # Plug-in entropy with the Miller-Madow bias correction (m - 1) / (2n).
    p = counts[counts > 0] / n
    return float(-(p * np.log(p)).sum() + (len(p) - 1) / (2.0 * n))


# Mean within-class mutual information (nats) between adjacent pixels of level tokens [N, 64].
def neighbour_mutual_information(levels: np.ndarray, labels: np.ndarray, num_levels: int) -> float:
    values = []
    for c in range(data.NUM_CLASSES):
        x = levels[labels == c]
        n = len(x)
        if n < 2:
            continue
        for i, j in adjacent_pairs():
            joint = np.bincount(x[:, i] * num_levels + x[:, j], minlength=num_levels ** 2)
            h_i = _entropy_mm(np.bincount(x[:, i], minlength=num_levels), n)
            h_j = _entropy_mm(np.bincount(x[:, j], minlength=num_levels), n)
            values.append(h_i + h_j - _entropy_mm(joint, n))
    return float(np.mean(values))


#----------------------------------------------------------------------------
# Metric entries.


@lru_cache(maxsize=None)
def _reference(levels: int) -> dict[str, np.ndarray]:
    images, labels = data.split_images("test", levels)
    tokens, _ = data.split_tokens("test", levels)
    feats = _features(images)
    mu, sigma = feature_statistics(feats)
    return {"features": feats, "mu": mu, "sigma": sigma, "pixels": images.flatten(1).numpy(),
            "labels": labels.numpy(), "tokens": tokens.numpy()}


def _levels(inp: EvalInput) -> int:
    return int(inp.spec.param("teacher.levels"))


def _protocol(name: str, inp: EvalInput, **extra: object) -> dict[str, object]:
    levels = _levels(inp)
    return {"name": name, "implementation": "softdimo-harness digits metrics v1",
            "reference": f"digits-test-split-L{levels}", "reference_n": len(_reference(levels)["labels"]),
            "levels": levels, "samples": inp.total, **extra}


# digits_fd (FID analogue), digits_acc (GenEval analogue), digits_pr: the shared network metrics on
# digits-cnn-v1 / digits-mlp-v1 against the test split quantised like the teacher's tokens.
NETWORK_METRICS = ClassWorldMetrics("digits", load_net, {k: NETS[k].name for k in ("features", "classifier")},
                                     lambda inp: _reference(_levels(inp)), _protocol)
_features = NETWORK_METRICS.features


def _images_as_levels(images: Tensor, levels: int) -> Tensor:
    # Map images in [0, 1] back to the nearest level index (exact for decoded hard tokens).
    return (images.flatten(1) * (levels - 1)).round().clamp(0, levels - 1).long()


# Per image: its pixels [64] and their level indices (digits_struct).
def extract_pixels(inp: EvalInput, ctx: RunContext) -> dict[str, np.ndarray]:
    return {"pixels": inp.images.flatten(1).numpy(), "levels": _images_as_levels(inp.images, _levels(inp)).numpy()}


# digits_struct: within-class covariance error (lower is better) and neighbour MI (context use).
def reduce_structure(inp: EvalInput, arrays: dict[str, np.ndarray], ctx: RunContext) -> dict[str, MetricValue]:
    levels = _levels(inp)
    ref = _reference(levels)
    labels = labels_of(inp.conditions).numpy()
    err = covariance_error(arrays["pixels"].astype(np.float64), labels, ref["pixels"], ref["labels"])
    mi = neighbour_mutual_information(arrays["levels"], labels, levels)
    proto_err = _protocol("digits-covariance-error", inp)
    proto_mi = _protocol("digits-neighbour-mi", inp, estimator="plug-in + Miller-Madow")
    return {"digits_cov_err": MetricValue(err, False, proto_err),
            "digits_nbr_mi": MetricValue(mi, True, proto_mi)}

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
import torch
from torch import Tensor

from harness.entries import EvalInput, MetricValue, RunContext, labels_of
from harness.metrics.digits_nets import NETS, load_net
from softdimo.data import digits as data

K_NEIGHBOURS = 3
FEATURE_BATCH = 1000

#----------------------------------------------------------------------------
# Pure computations (numpy, float64).


# Frechet distance between Gaussians N(mu1, s1) and N(mu2, s2), in float64:
# |mu1 - mu2|^2 + tr(s1) + tr(s2) - 2 tr((s1 s2)^(1/2)), the trace of the square root taken as the
# sum of square roots of the (real, non-negative) eigenvalues of s1 s2.
def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    eig = np.linalg.eigvals(s1 @ s2).real
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


# Mean and covariance of features [N, D] in float64.
def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = features.astype(np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


# k-NN precision / recall (Kynkaenniemi et al. 2019): the fraction of fake samples inside the real
# manifold (balls to each real point's k-th neighbour), and of real samples inside the fake one.
def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = K_NEIGHBOURS) -> tuple[float, float]:
    def radii(x: np.ndarray) -> np.ndarray:
        d = _pairwise(x, x)
        return np.sort(d, axis=1)[:, k]          # column 0 is the point itself

    def coverage(x: np.ndarray, ref: np.ndarray, ref_radii: np.ndarray) -> float:
        return float((_pairwise(x, ref) <= ref_radii[None, :]).any(axis=1).mean())

    real, fake = real.astype(np.float64), fake.astype(np.float64)
    return coverage(fake, real, radii(real)), coverage(real, fake, radii(fake))


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


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


@torch.no_grad()
def _features(images: Tensor) -> np.ndarray:
    net, _ = load_net("features")
    chunks = [net.features(images[i:i + FEATURE_BATCH].float()) for i in range(0, len(images), FEATURE_BATCH)]
    return torch.cat(chunks).double().numpy()


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


def _images_as_levels(images: Tensor, levels: int) -> Tensor:
    # Map images in [0, 1] back to the nearest level index (exact for decoded hard tokens).
    return (images.flatten(1) * (levels - 1)).round().clamp(0, levels - 1).long()


# Per image: its digits-cnn-v1 features (digits_fd, digits_pr).
def extract_features(inp: EvalInput, ctx: RunContext) -> dict[str, np.ndarray]:
    return {"features": _features(inp.images).astype(np.float32)}


# digits_fd: Frechet distance of digits-cnn-v1 features against the quantised test split.
def reduce_fd(inp: EvalInput, arrays: dict[str, np.ndarray], ctx: RunContext) -> dict[str, MetricValue]:
    ref = _reference(_levels(inp))
    mu, sigma = feature_statistics(arrays["features"].astype(np.float64))
    _, sha = load_net("features")
    value = frechet_distance(mu, sigma, ref["mu"], ref["sigma"])
    proto = _protocol("digits-fd", inp, features=NETS["features"].name, features_sha256=sha)
    return {"digits_fd": MetricValue(value, False, proto)}


# Per image: whether the independent classifier digits-mlp-v1 predicts its conditioning label.
@torch.no_grad()
def extract_correct(inp: EvalInput, ctx: RunContext) -> dict[str, np.ndarray]:
    net, _ = load_net("classifier")
    pred = torch.cat([net(inp.images[i:i + FEATURE_BATCH].float()).argmax(1)
                      for i in range(0, len(inp.images), FEATURE_BATCH)])
    return {"correct": (pred == labels_of(inp.conditions)).numpy()}


# digits_acc: accuracy of the independent classifier digits-mlp-v1 against the conditioning labels.
def reduce_accuracy(inp: EvalInput, arrays: dict[str, np.ndarray], ctx: RunContext) -> dict[str, MetricValue]:
    _, sha = load_net("classifier")
    value = torch.from_numpy(arrays["correct"]).float().mean().item()
    proto = _protocol("digits-class-accuracy", inp, classifier=NETS["classifier"].name, classifier_sha256=sha)
    return {"digits_acc": MetricValue(value, True, proto)}


# digits_pr: k-NN precision and recall on digits-cnn-v1 features against the test split.
def reduce_precision_recall(inp: EvalInput, arrays: dict[str, np.ndarray], ctx: RunContext) -> dict[str, MetricValue]:
    ref = _reference(_levels(inp))
    _, sha = load_net("features")
    p, r = precision_recall(ref["features"], arrays["features"].astype(np.float64))
    proto = _protocol("digits-precision-recall", inp, features=NETS["features"].name, features_sha256=sha,
                      k=K_NEIGHBOURS)
    return {"digits_precision": MetricValue(p, True, proto), "digits_recall": MetricValue(r, True, proto)}


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

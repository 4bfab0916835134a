"""What the class-conditional mini worlds' metrics share (digits, glyphs): committed metric networks
(their specification, loading with the weights' sha256, the command that re-trains them), the
pure feature statistics, and the three network metrics: Frechet distance and k-NN precision /
recall on a fixed feature network against a held-out reference, and the accuracy of an
independent classifier against the conditioning labels. Each network metric is per-image
(`harness.methods.scoring`): its `extract_*` half runs on every batch of samples where it was made (the
features, or whether the classifier is right), its `reduce_*` half on the gathered arrays.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from harness.contracts.entries import EvalInput, MetricEntry, MetricValue, RunContext, labels_of, per_image_metric
from harness.store.assets import sha256_file
from softdimo.files import atomic_write

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


#----------------------------------------------------------------------------
# Committed metric networks.


# A committed network: its name, class, weights file, and training seed, epochs and learning rate.
@dataclass(frozen=True)
class NetSpec:
    name: str
    make: Callable[[], nn.Module]
    filename: str
    seed: int
    epochs: int
    lr: float


# A loader of committed networks `key -> (network in eval mode, frozen; sha256 of its weights)`,
# each read once from `weights_dir`; a missing file names the command that re-creates it.
def committed_loader(nets: Mapping[str, NetSpec], weights_dir: Path, world: str, module: str
                     ) -> Callable[[str], tuple[nn.Module, str]]:
    loaded: dict[str, tuple[nn.Module, str]] = {}

    def load(key: str) -> tuple[nn.Module, str]:
        if key not in loaded:
            spec = nets[key]
            path = weights_dir / spec.filename
            if not path.is_file():
                raise FileNotFoundError(f"{world} metric network {spec.name} missing at {path}; "
                                        f"re-create it with `python -m {module}`")
            net = spec.make()
            net.load_state_dict(load_file(str(path)))
            loaded[key] = (net.eval().requires_grad_(False), sha256_file(path))
        return loaded[key]
    return load


# One batch's loss of a network being trained: (network, the batch's item indices, the run's generator).
BatchLoss = Callable[[nn.Module, Tensor, torch.Generator], Tensor]


# Train `spec`'s network deterministically on 1 thread: the spec's seed sets the initial weights and a
# generator that orders the `n` training items of `load() -> (n, batch_loss)` each epoch, in batches
# of `batch`; Adam at the spec's rate. Logs each epoch's last loss; returns the network in eval mode.
def train_deterministic(spec: NetSpec, batch: int, load: Callable[[], tuple[int, BatchLoss]],
                        log: Callable[[str], None] = print) -> nn.Module:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(spec.seed)
        net = spec.make()
        n, batch_loss = load()
        g = torch.Generator().manual_seed(spec.seed)
        opt = torch.optim.Adam(net.parameters(), lr=spec.lr)
        for epoch in range(spec.epochs):
            order = torch.randperm(n, generator=g)
            for i in range(0, n, batch):
                loss = batch_loss(net, order[i:i + batch], g)
                opt.zero_grad()
                loss.backward()
                opt.step()
            log(f"{spec.name}: epoch {epoch + 1}/{spec.epochs}, last loss {loss.item():.4f}")
        return net.eval()
    finally:
        torch.set_num_threads(threads)


# The command that re-trains committed networks: `train(spec)` for each chosen one, saved under
# --out, then a line with its hash and `describe(key, net)` (its held-out quality).
def retrain_main(world: str, nets: Mapping[str, NetSpec], default_out: Path,
                 train: Callable[[NetSpec], nn.Module], describe: Callable[[str, nn.Module], str]) -> None:
    parser = argparse.ArgumentParser(description=f"Re-train the {world} metric networks.")
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--nets", nargs="+", choices=sorted(nets), default=sorted(nets),
                        help="which networks to re-train (default: all)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for key, spec in nets.items():
        if key not in args.nets:
            continue
        net = train(spec)
        path = args.out / spec.filename
        atomic_write(path, lambda tmp: save_file(net.state_dict(), str(tmp)))
        print(f"{key}: {spec.name} sha256 {sha256_file(path)} {describe(key, net)}")


#----------------------------------------------------------------------------
# The network metrics of a class-conditional world.


# Images in batches of FEATURE_BATCH, float32 in the standard memory layout: a decoder may return
# channels-last images, on which a convolution sums in another order (the same images would score
# differently from a file).
def _batches(images: Tensor) -> Iterator[Tensor]:
    for i in range(0, len(images), FEATURE_BATCH):
        yield images[i:i + FEATURE_BATCH].float().contiguous()


# FD, precision / recall and classifier accuracy of one world, named `<prefix>_fd`, `_precision`,
# `_recall`, `_acc`: `load_net("features" | "classifier")` gives its committed networks (the feature
# network has `features(images)`), `reference(inp)` the held-out reference's "features", "mu" and
# "sigma", `protocol(name, inp, **extra)` the protocol of a value.
@dataclass(frozen=True)
class ClassWorldMetrics:
    prefix: str
    load_net: Callable[[str], tuple[nn.Module, str]]
    net_names: Mapping[str, str]
    reference: Callable[[EvalInput], dict[str, Any]]
    protocol: Callable[..., dict[str, object]]

    # Features [N, D] (float64) of images under the feature network, in batches.
    @torch.no_grad()
    def features(self, images: Tensor) -> np.ndarray:
        net, _ = self.load_net("features")
        return torch.cat([net.features(batch) for batch in _batches(images)]).double().numpy()

    # Per image: its features under the feature network, stored as float32 (<prefix>_fd, _pr).
    def extract_features(self, inp: EvalInput, ctx: RunContext) -> dict[str, np.ndarray]:
        return {"features": self.features(inp.images).astype(np.float32)}

    # <prefix>_fd: Frechet distance of the samples' features against the reference's.
    def reduce_fd(self, inp: EvalInput, arrays: dict[str, np.ndarray], ctx: RunContext) -> dict[str, MetricValue]:
        ref = self.reference(inp)
        mu, sigma = feature_statistics(arrays["features"].astype(np.float64))
        _, sha = self.load_net("features")
        value = frechet_distance(mu, sigma, ref["mu"], ref["sigma"])
        proto = self.protocol(f"{self.prefix}-fd", inp, features=self.net_names["features"], features_sha256=sha)
        return {f"{self.prefix}_fd": MetricValue(value, False, proto)}

    # Per image: whether the independent classifier predicts its conditioning label (<prefix>_acc).
    @torch.no_grad()
    def extract_correct(self, inp: EvalInput, ctx: RunContext) -> dict[str, np.ndarray]:
        net, _ = self.load_net("classifier")
        pred = torch.cat([net(batch).argmax(1) for batch in _batches(inp.images)])
        return {"correct": (pred == labels_of(inp.conditions)).numpy()}

    # <prefix>_acc: accuracy of the independent classifier against the conditioning labels.
    def reduce_accuracy(self, inp: EvalInput, arrays: dict[str, np.ndarray], ctx: RunContext
                        ) -> dict[str, MetricValue]:
        _, sha = self.load_net("classifier")
        value = torch.from_numpy(arrays["correct"]).float().mean().item()
        proto = self.protocol(f"{self.prefix}-class-accuracy", inp, classifier=self.net_names["classifier"],
                              classifier_sha256=sha)
        return {f"{self.prefix}_acc": MetricValue(value, True, proto)}

    # <prefix>_precision / _recall: k-NN precision and recall on the features against the reference.
    def reduce_precision_recall(self, inp: EvalInput, arrays: dict[str, np.ndarray], ctx: RunContext
                                ) -> dict[str, MetricValue]:
        ref = self.reference(inp)
        _, sha = self.load_net("features")
        p, r = precision_recall(ref["features"], arrays["features"].astype(np.float64))
        proto = self.protocol(f"{self.prefix}-precision-recall", inp, features=self.net_names["features"],
                              features_sha256=sha, k=K_NEIGHBOURS)
        return {f"{self.prefix}_precision": MetricValue(p, True, proto),
                f"{self.prefix}_recall": MetricValue(r, True, proto)}

    # The registry entries of the three metrics, `<prefix>_fd`, `_acc` and `_pr`, for `applies_to`.
    def entries(self, applies_to: tuple[str, ...]) -> list[MetricEntry]:
        return [per_image_metric(f"{self.prefix}_{suffix}", extract, reduce, applies_to=applies_to, description=desc)
                for suffix, extract, reduce, desc in (
                    ("fd", self.extract_features, self.reduce_fd,
                     f"Frechet distance on {self.net_names['features']} features (FID analogue)"),
                    ("acc", self.extract_correct, self.reduce_accuracy,
                     "independent-classifier accuracy (GenEval analogue)"),
                    ("pr", self.extract_features, self.reduce_precision_recall,
                     f"k-NN precision / recall (k={K_NEIGHBOURS})"))]

"""FID, Inception Score, KID and PRDC under named protocols (docs/metrics.md).

A protocol names everything that changes the numbers: the feature extractor (library, mode,
weights), the reference statistics, the exact number of samples, the resolution, the IS splits
and seed, the KID subsets, the PRDC k. The table `FID_PROTOCOLS` is the only place these choices
are made; `evaluate` computes the requested metrics of one sample set under one protocol, and
every `MetricValue` carries the protocol fields that produced it.

- FID: float64 statistics of pool3 features; d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}).
  With the rank-revealing pivoted Cholesky factor S1 = P L L^T P^T (LAPACK dpstrf), the
  eigenvalues of S1 S2 are those of the symmetric PSD matrix L^T (P^T S2 P) L, so
  tr (S1 S2)^{1/2} = sum sqrt(eigvalsh(L^T P^T S2 P L)): no complex parts, exact for rank-deficient
  S1 (few samples). It equals clean-fid's `frechet_distance` (scipy sqrtm) and torch-fidelity's
  (eigvals) to < 1e-9 relative on full-rank statistics, several times faster.
- IS: torch-fidelity's estimator on `logits_unbiased` (Di[M]O computed IS with torch-fidelity):
  features shuffled with `rng_seed`, then `is_splits` splits.
- KID: torch-fidelity's unbiased polynomial-kernel MMD over `kid_subsets` random subsets.
- PRDC: `harness.methods.metrics.prdc` (Naeem et al., k = `prdc_k`) against the reference images.

Text-to-image protocols (MS-COCO FID-30k, MJHQ-30K) also name the prompt set their samples must be
made from (`prompts`, see `harness.methods.metrics.t2i_prompts`); the metrics of a run check its prompts
against it, an outside sample set is taken on trust (its count is checked).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from harness.contracts.entries import MetricValue
from harness.contracts.registry import Registry
from harness.methods.metrics import prdc as prdc_mod
from harness.methods.metrics.features import (EXTRACTORS, FeatureSet, GaussianStats, InceptionExtractor, Reference,
                                      check_tfidelity_kwargs, features_of, load_extractor,
                                      load_reference)
from harness.methods.samples import SampleSource
from harness.store import assets

FID_METRICS = ("fid", "inception_score", "kid", "prdc")
FRECHET_METHOD = "pivoted-cholesky-float64"

# The reference sets: the ADM ImageNet-256 batch (Dhariwal & Nichol's guided-diffusion evaluation),
# T2IBenchmark's MS-COCO statistics and the MJHQ-30K images.
REFERENCE_ASSETS = assets.declare(
    assets.Asset("adm-imagenet256-ref-batch", "adm/VIRTUAL_imagenet256_labeled.npz",
                 "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/256/"
                 "VIRTUAL_imagenet256_labeled.npz",
                 env_var="SOFTDIMO_ADM_IMAGENET256",
                 description="ADM ImageNet-256 reference batch: mu/sigma (FID) and 10k images arr_0 (PRDC); "
                             "sha256 not published"),
    assets.Asset("t2ibenchmark-coco-val2014-fid-stats", "t2ibenchmark/MS-COCO_val2014_fid_stats.npz",
                 "https://github.com/boomb0om/text2image-benchmark/releases/download/v0.0.1/"
                 "MS-COCO_val2014_fid_stats.npz (T2IBenchmark caches it in ~/.cache/T2IBenchmark/)",
                 env_var="SOFTDIMO_COCO_FID_STATS",
                 description="T2IBenchmark's MS-COCO val2014 pool3 mu/sigma (its pytorch-fid Inception, centre "
                             "crop, PIL bicubic 299): the reference of COCO FID-30k; sha256 not published"),
    assets.Asset("mjhq30k-images", "mjhq30k/mjhq30k_imgs.zip",
                 "https://huggingface.co/datasets/playgroundai/MJHQ-30K/resolve/main/mjhq30k_imgs.zip (3.6 GB; "
                 "read in place, not unpacked)",
                 sha256="dacdc4328f294696ef0ee389be4bcf3fc96d112060ef10c13384836b54d4a8ec",
                 env_var="SOFTDIMO_MJHQ30K_IMAGES",
                 search=(assets.HF_HUB + "/datasets--playgroundai--MJHQ-30K/snapshots/*/mjhq30k_imgs.zip",),
                 description="the 30,000 MJHQ-30K reference images (1024 x 1024 JPEG, <category>/<id>.jpg); sha256 "
                             "from the hub's LFS pointer"),
)

#----------------------------------------------------------------------------
# The protocol table.


# One evaluation protocol for FID / IS / KID / PRDC (class- or text-conditional).
@dataclass(frozen=True)
class FIDProtocol:
    name: str
    features: str                    # extractor of FID, KID and PRDC (features.EXTRACTORS key)
    num_samples: int | None          # exact number of samples required; None = any (recorded)
    resolution: int | None           # required image height = width; None = any (recorded)
    reference: str | None            # asset of the default reference; None = one must be given
    is_features: str = "torch-fidelity/inception-v3-compat"
    is_splits: int = 10
    is_shuffle: bool = True
    rng_seed: int = 2020             # torch-fidelity's default seed (IS shuffle, KID subsets)
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    prdc_k: int = prdc_mod.DEFAULT_K
    prompts: str | None = None       # text-to-image: the prompt set (t2i_prompts) the samples are made from
    description: str = ""

    def __post_init__(self) -> None:
        for key in (self.features, self.is_features):
            if key not in EXTRACTORS:
                raise ValueError(f"protocol {self.name!r}: unknown extractor {key!r}; allowed: "
                                 f"{', '.join(EXTRACTORS)}")
        if not EXTRACTORS[self.is_features].has_logits:
            raise ValueError(f"protocol {self.name!r}: IS needs logits; {self.is_features!r} has none")
        check_tfidelity_kwargs(isc_splits=self.is_splits, samples_shuffle=self.is_shuffle,
                               rng_seed=self.rng_seed, kid_subsets=self.kid_subsets,
                               kid_subset_size=self.kid_subset_size)

    # The assets this protocol reads for the given metrics (checked before a grid launches).
    def assets(self, metrics: Sequence[str] = FID_METRICS) -> list[str]:
        out = [EXTRACTORS[self.features].weights_asset] if set(metrics) - {"inception_score"} else []
        if "inception_score" in metrics:
            out.append(EXTRACTORS[self.is_features].weights_asset)
        if self.reference and set(metrics) - {"inception_score"}:
            out.append(self.reference)
        return list(dict.fromkeys(out))


FID_PROTOCOLS: Registry[FIDProtocol] = Registry("FID protocol")

_ADM = dict(reference="adm-imagenet256-ref-batch", resolution=256)
for _p in (
    FIDProtocol("imagenet256-fid50k-adm", "clean-fid/legacy_tensorflow", 50_000, **_ADM,
                description="Di[M]O / Soft-Di[M]O ImageNet-256: 50k class-balanced samples, clean-fid "
                            "legacy_tensorflow features vs the ADM mu/sigma; IS by torch-fidelity; PRDC "
                            "(k=3) vs the ADM 10k reference images"),
    FIDProtocol("imagenet256-fid-adm", "clean-fid/legacy_tensorflow", None, **_ADM,
                description="as imagenet256-fid50k-adm with any sample count (e.g. FID-5k ablations); "
                            "the count is recorded, so it never matches a 50k number"),
    FIDProtocol("imagenet256-fid50k-adm-tfidelity", "torch-fidelity/inception-v3-compat", 50_000, **_ADM,
                description="ADM reference and 50k samples with torch-fidelity's inception-v3-compat "
                            "features (a cross-implementation check, about 1e-3 apart)"),
    FIDProtocol("coco30k-fid-t2ibenchmark", "torch-fidelity/t2ibenchmark", 30_000, None,
                "t2ibenchmark-coco-val2014-fid-stats", prompts="coco30k-t2ibenchmark",
                description="MS-COCO FID-30k as Di[M]O's text-to-image evaluation computes it (T2IBenchmark): one "
                            "image per COCO-30k caption, any resolution, centre crop + PIL bicubic to 299, "
                            "pytorch-fid Inception weights, vs T2IBenchmark's val2014 mu/sigma"),
    FIDProtocol("coco-fid-t2ibenchmark", "torch-fidelity/t2ibenchmark", None, None,
                "t2ibenchmark-coco-val2014-fid-stats", prompts="coco30k-t2ibenchmark",
                description="as coco30k-fid-t2ibenchmark on the first N captions (count recorded; never a 30k number)"),
    FIDProtocol("mjhq30k-fid30k-clean", "clean-fid/clean", 30_000, None, "mjhq30k-images", prompts="mjhq30k",
                description="MJHQ-30K FID: one image per meta_data.json prompt (10 categories x 3,000), any "
                            "resolution, clean-fid 'clean' features vs the 30k MJHQ images (1024 px, resized "
                            "to 299 by the same PIL bicubic)"),
    FIDProtocol("mjhq30k-fid-clean", "clean-fid/clean", None, None, "mjhq30k-images", prompts="mjhq30k",
                description="as mjhq30k-fid30k-clean on the first N prompts (count recorded; never a 30k number)"),
    FIDProtocol("fid-legacy-tf", "clean-fid/legacy_tensorflow", None, None, None,
                description="clean-fid legacy_tensorflow features against a given reference"),
    FIDProtocol("fid-clean", "clean-fid/clean", None, None, None,
                description="clean-fid 'clean' (PIL bicubic) features against a given reference; "
                            "not comparable with legacy numbers"),
    FIDProtocol("fid-tfidelity", "torch-fidelity/inception-v3-compat", None, None, None,
                description="torch-fidelity inception-v3-compat features against a given reference"),
):
    FID_PROTOCOLS.register(_p.name, _p)


#----------------------------------------------------------------------------
# The estimators.


# Frechet distance between N(mu1, S1) and N(mu2, S2) in float64 (pivoted-Cholesky form, see above).
def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    from scipy.linalg import lapack
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"statistics do not match: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}")
    factor, piv, rank, info = lapack.dpstrf((s1 + s1.T) / 2, lower=1)
    if info < 0:
        raise ValueError(f"pivoted Cholesky of sigma1 failed (LAPACK dpstrf info={info})")
    L = np.tril(factor)[:, :rank]                                       # P^T S1 P = L L^T
    perm = piv - 1
    m = L.T @ s2[np.ix_(perm, perm)] @ L
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


# Inception Score (mean, std over splits) of logits_unbiased [N, 1008], by torch-fidelity.
def inception_score(logits: np.ndarray, splits: int = 10, shuffle: bool = True,
                    rng_seed: int = 2020) -> tuple[float, float]:
    from torch_fidelity.metric_isc import isc_features_to_metric
    if len(logits) < splits:
        raise ValueError(f"IS with {splits} splits needs at least {splits} images, got {len(logits)}")
    out = isc_features_to_metric(torch.from_numpy(logits), splits, shuffle, rng_seed)
    return out["inception_score_mean"], out["inception_score_std"]


# Kernel Inception Distance (mean, std over subsets) of samples vs reference, by torch-fidelity.
def kernel_inception_distance(samples: np.ndarray, reference: np.ndarray, subsets: int = 100,
                              subset_size: int = 1000, rng_seed: int = 2020) -> tuple[float, float]:
    from torch_fidelity.metric_kid import kid_features_to_metric
    if min(len(samples), len(reference)) < subset_size:
        raise ValueError(f"KID subsets of {subset_size} need at least that many samples ({len(samples)}) "
                         f"and reference images ({len(reference)})")
    kwargs = check_tfidelity_kwargs(kid_subsets=subsets, kid_subset_size=subset_size,
                                    rng_seed=rng_seed, verbose=False)
    out = kid_features_to_metric(torch.from_numpy(samples), torch.from_numpy(reference), **kwargs)
    return out["kernel_inception_distance_mean"], out["kernel_inception_distance_std"]


#----------------------------------------------------------------------------
# Evaluation of a sample set under a protocol.


# Raise unless a sample set (`name`: n images of resolution (h, w)) has the protocol's exact count
# and resolution (the tools skip silently).
def check_samples(name: str, n: int, resolution: tuple[int, int], protocol: FIDProtocol) -> None:
    if protocol.num_samples is not None and n != protocol.num_samples:
        loose = [p.name for _, p in FID_PROTOCOLS.items() if p.num_samples is None
                 and p.features == protocol.features and p.reference == protocol.reference]
        hint = f"; protocol {loose[0]!r} accepts any count and records it" if loose else ""
        raise ValueError(f"{name}: {n} images, but protocol {protocol.name!r} needs exactly "
                         f"{protocol.num_samples}{hint}")
    h, w = resolution
    if protocol.resolution is not None and (h, w) != (protocol.resolution, protocol.resolution):
        raise ValueError(f"{name}: images are {h}x{w}, protocol {protocol.name!r} needs "
                         f"{protocol.resolution}x{protocol.resolution}")


def _protocol(protocol: FIDProtocol | str) -> FIDProtocol:
    return FID_PROTOCOLS.get(protocol) if isinstance(protocol, str) else protocol


def _check_metrics(metrics: Sequence[str]) -> None:
    unknown = [m for m in metrics if m not in FID_METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown FID-protocol metrics {unknown}; allowed: {', '.join(FID_METRICS)}")


# Per image of `samples` (e.g. one process's batch): what `metrics` need under `protocol`: `pool`
# [n, 2048] (pool3 of the FID / KID / PRDC extractor), `logits` [n, 1008] (the IS extractor's) and
# `hw` [n, 2] (the image's height and width).
def extract(samples: SampleSource, protocol: FIDProtocol | str, metrics: Sequence[str] = FID_METRICS,
            device: torch.device | str = "cpu", batch_size: int = 50, num_workers: int = 0) -> dict[str, np.ndarray]:
    protocol = _protocol(protocol)
    _check_metrics(metrics)
    out = {"hw": np.tile(np.array(samples.resolution, dtype=np.int64), (len(samples), 1))}
    if set(metrics) - {"inception_score"}:
        extractor = load_extractor(protocol.features, assets.resolve(EXTRACTORS[protocol.features].weights_asset),
                                   device)
        out["pool"] = features_of(samples, extractor, batch_size, num_workers).pool
    if "inception_score" in metrics:
        is_extractor = load_extractor(protocol.is_features,
                                      assets.resolve(EXTRACTORS[protocol.is_features].weights_asset), device)
        out["logits"] = features_of(samples, is_extractor, batch_size, num_workers).logits
    return out


# Compute `metrics` (subset of FID_METRICS) of `samples` under `protocol`; keys of the result:
# fid, inception_score, kid, precision, recall, density, coverage.
def evaluate(samples: SampleSource, protocol: FIDProtocol | str, metrics: Sequence[str] = FID_METRICS,
             reference: Path | str | None = None, reference_name: str | None = None,
             device: torch.device | str = "cpu", batch_size: int = 50, num_workers: int = 0,
             cache_dir: Path | None = None, sample_meta: dict[str, Any] | None = None) -> dict[str, MetricValue]:
    protocol = _protocol(protocol)
    _check_metrics(metrics)
    check_samples(samples.name, len(samples), samples.resolution, protocol)
    _reference_path(protocol, reference, reference_name, bool(set(metrics) - {"inception_score"}))  # before extracting
    arrays = extract(samples, protocol, metrics, device, batch_size, num_workers)
    return evaluate_features(arrays, protocol, metrics, samples.name, reference, reference_name, device,
                             batch_size, num_workers, cache_dir, sample_meta)


# `evaluate` from every image's arrays (`extract`, in index order; e.g. gathered from the processes
# of a cell): the statistics are accumulated in chunks of `batch_size` in index order, as
# `extract_features` does over a whole set, so the values equal `evaluate` on the same images.
def evaluate_features(arrays: dict[str, np.ndarray], protocol: FIDProtocol | str, metrics: Sequence[str],
                      name: str = "samples", reference: Path | str | None = None, reference_name: str | None = None,
                      device: torch.device | str = "cpu", batch_size: int = 50, num_workers: int = 0,
                      cache_dir: Path | None = None, sample_meta: dict[str, Any] | None = None
                      ) -> dict[str, MetricValue]:
    protocol = _protocol(protocol)
    _check_metrics(metrics)
    hw = arrays["hw"]
    resolution = (int(hw[0, 0]), int(hw[0, 1]))
    check_samples(name, len(hw), resolution, protocol)
    needs_reference = bool(set(metrics) - {"inception_score"})
    ref_path, ref_name = _reference_path(protocol, reference, reference_name, needs_reference)
    base = _base_protocol(protocol, len(hw), resolution, sample_meta)
    out: dict[str, MetricValue] = {}

    if needs_reference:
        extractor = load_extractor(protocol.features, assets.resolve(EXTRACTORS[protocol.features].weights_asset),
                                   device)
        ref = load_reference(ref_path, extractor, ref_name, batch_size, num_workers, cache_dir)
        pool = arrays["pool"]
        shared = {**base, **extractor.describe(), **ref.describe()}
        if "fid" in metrics:
            stats = GaussianStats(pool.shape[1])
            for i in range(0, len(pool), batch_size):
                stats.update(torch.from_numpy(pool[i:i + batch_size]))
            out["fid"] = MetricValue(frechet_distance(stats.mu, stats.sigma, ref.mu, ref.sigma), False,
                                     {**shared, "metric": "fid", "feature_layer": "pool3",
                                      "frechet": FRECHET_METHOD, "reference_num_images": ref.num_images
                                      if ref.num_images is not None else "precomputed"})
        if "kid" in metrics or "prdc" in metrics:
            ref_feats = _reference_features(ref, extractor, batch_size, num_workers, cache_dir)
            if "kid" in metrics:
                kid, _ = kernel_inception_distance(pool, ref_feats.pool, protocol.kid_subsets,
                                                   protocol.kid_subset_size, protocol.rng_seed)
                out["kid"] = MetricValue(kid, False, {
                    **shared, "metric": "kid", "kid_estimator": f"torch-fidelity {_tf_version()} poly3",
                    "kid_subsets": protocol.kid_subsets, "kid_subset_size": protocol.kid_subset_size,
                    "rng_seed": protocol.rng_seed, "reference_num_images": ref_feats.n})
            if "prdc" in metrics:
                values = prdc_mod.prdc(ref_feats.pool, pool, protocol.prdc_k, device)
                for key, value in values.items():
                    out[key] = MetricValue(value, True, {**shared, "metric": key, "prdc_k": protocol.prdc_k,
                                                         "prdc": "naeem2020", "reference_num_images": ref_feats.n})

    if "inception_score" in metrics:
        is_extractor = load_extractor(protocol.is_features,
                                      assets.resolve(EXTRACTORS[protocol.is_features].weights_asset), device)
        mean, _ = inception_score(arrays["logits"], protocol.is_splits, protocol.is_shuffle, protocol.rng_seed)
        out["inception_score"] = MetricValue(mean, True, {
            **base, **is_extractor.describe(), "metric": "inception_score", "feature_layer": "logits_unbiased",
            "is_estimator": f"torch-fidelity {_tf_version()}", "is_splits": protocol.is_splits,
            "is_shuffle": protocol.is_shuffle, "rng_seed": protocol.rng_seed})
    return out


# Reference path and name: an explicit one, else the protocol's asset (resolved, hash-checked).
def _reference_path(protocol: FIDProtocol, reference: Path | str | None, name: str | None,
                    needed: bool) -> tuple[Path | None, str | None]:
    if not needed:
        return None, None
    if reference is not None:
        return Path(reference), name or Path(reference).stem
    if protocol.reference is None:
        raise ValueError(f"protocol {protocol.name!r} has no default reference: pass one (an npz with "
                         f"mu/sigma, or a folder / npz of reference images)")
    return assets.resolve(protocol.reference), name or protocol.reference


# Features of the reference images (KID and PRDC need them; mu/sigma alone do not suffice).
def _reference_features(ref: Reference, extractor: InceptionExtractor, batch_size: int,
                        num_workers: int, cache_dir: Path | None) -> FeatureSet:
    if ref.images is None:
        raise ValueError(f"reference {ref.name!r} holds only mu/sigma; KID and PRDC need reference "
                         f"images (an npz with arr_0, like the ADM batch, or a folder)")
    return features_of(ref.images, extractor, batch_size, num_workers, cache_dir)


def _base_protocol(protocol: FIDProtocol, n: int, resolution: tuple[int, int], meta: dict[str, Any] | None
                   ) -> dict[str, Any]:
    h, w = resolution
    base: dict[str, Any] = {"name": protocol.name, "num_samples": n,
                            "resolution": h if h == w else f"{h}x{w}"}
    if meta and meta.get("uint8_conversion"):
        base["uint8_conversion"] = meta["uint8_conversion"]
    return base


def _tf_version() -> str:
    from torch_fidelity.version import __version__
    return __version__

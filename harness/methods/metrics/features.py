"""Inception-v3 (TF 2015-12-05) features of sample sets, through clean-fid or torch-fidelity.

Four extractors, named `<library>/<mode>`:

- `clean-fid/legacy_tensorflow`: clean-fid's TorchScript Inception resizing inside the network
  like TF (Di[M]O's FID: yuanzhi-zhu/DiMO evaluation/fid.py);
- `clean-fid/clean`: PIL bicubic resize to 299 in float outside the network, same TorchScript
  model (a different metric: never compare it with legacy numbers);
- `torch-fidelity/inception-v3-compat`: torch-fidelity's port of the TF graph (pool3 2048-d and the
  1008-way `logits_unbiased` used by the Inception Score);
- `torch-fidelity/t2ibenchmark`: the same network and weights fed the way T2IBenchmark
  (boomb0om/text2image-benchmark, the COCO-30k FID of Di[M]O's text-to-image evaluation) feeds its
  pytorch-fid Inception: centre crop to the short side (offsets floored), PIL bicubic resize to
  299 x 299 quantised to uint8, x / 255 * 2 - 1; pool3 only.

Weights always come from local files (assets): clean-fid's `InceptionV3W` with `download=False`;
torch-fidelity's network is built empty and given the state dict read weights-only (torch-fidelity's
own loader unpickles its weight file in full, so the path is never passed to it).
Images reach each network the way the library's own folder reader delivers them (the same PIL
decode, resize and tensor conversion), so features equal the library's; statistics are accumulated
in float64.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from harness.contracts.registry import did_you_mean
from harness.methods.samples import SampleSource, open_samples
from harness.store import assets
from harness.store.assets import sha256_file
from softdimo.files import atomic_write
from softdimo.teachers.weights import load_strict, read_state_dict

CLEANFID_WEIGHTS_NAME = "inception-2015-12-05.pt"  # the file name InceptionV3W(path) opens
INCEPTION_SIZE = 299
# torch-fidelity's Inception modules from the input to pool3, in forward order.
POOL3_LAYERS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool")
T2IBENCHMARK_PREPROCESS = "rgb>center_crop(short,floor)>pil_bicubic(299,uint8)>x/255*2-1"

# The Inception weights the FID-family extractors read.
INCEPTION_ASSETS = assets.declare(
    assets.Asset("inception-2015-12-05-torchscript", "cleanfid/inception-2015-12-05.pt",
                 "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
                 env_var="SOFTDIMO_INCEPTION_TORCHSCRIPT",
                 description="TF-2015 Inception-v3 as TorchScript (StyleGAN2-ADA); clean-fid's feature extractor "
                             "(clean-fid itself downloads it to /tmp, which is never read); sha256 not published"),
    assets.Asset("inception-2015-12-05-tfidelity", "torch-fidelity/weights-inception-2015-12-05-6726825d.pth",
                 "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth",
                 env_var="SOFTDIMO_INCEPTION_TFIDELITY",
                 search=("{TORCH_HOME}/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth",),
                 sha256_prefix="6726825d",
                 description="TF-2015 Inception-v3 state dict for torch-fidelity's inception-v3-compat; the "
                             "release names the file by the first 8 hex digits of its sha256 (torch.hub's "
                             "convention), the full digest is not published"),
)

#----------------------------------------------------------------------------
# torch-fidelity keyword arguments.


# Check keyword arguments for torch-fidelity against `torch_fidelity.defaults.DEFAULTS`: the library
# silently ignores unknown names (e.g. the fork-only `fid_statistics_file`), so a typo would pass.
def check_tfidelity_kwargs(**kwargs: Any) -> dict[str, Any]:
    from torch_fidelity.defaults import DEFAULTS
    for key, value in kwargs.items():
        if key not in DEFAULTS:
            raise ValueError(f"torch-fidelity {_version('torch-fidelity')} has no keyword argument "
                             f"{key!r}{did_you_mean(key, DEFAULTS)} (it would be ignored silently); known: {', '.join(sorted(DEFAULTS))}")
        if key == "feature_extractor_internal_dtype" and value == "float64":
            raise ValueError("feature_extractor_internal_dtype='float64' is mapped to float32 by "
                             "torch-fidelity 0.4.0 (helpers.text_to_dtype); it would not do what it says")
    return dict(kwargs)


#----------------------------------------------------------------------------
# Extractors.


# How one named extractor computes features.
@dataclass(frozen=True)
class ExtractorSpec:
    key: str                # "<library>/<mode>"
    library: str            # "clean-fid" or "torch-fidelity"
    mode: str               # clean-fid mode, torch-fidelity extractor name, or "t2ibenchmark"
    weights_asset: str      # asset holding the weights file
    has_logits: bool        # provides the 1008-way logits_unbiased (Inception Score)
    preprocess: str = ""    # recorded in protocols when set (the library default otherwise)


EXTRACTORS: dict[str, ExtractorSpec] = {s.key: s for s in (
    ExtractorSpec("clean-fid/legacy_tensorflow", "clean-fid", "legacy_tensorflow",
                  "inception-2015-12-05-torchscript", has_logits=False),
    ExtractorSpec("clean-fid/clean", "clean-fid", "clean", "inception-2015-12-05-torchscript", has_logits=False),
    ExtractorSpec("torch-fidelity/inception-v3-compat", "torch-fidelity", "inception-v3-compat",
                  "inception-2015-12-05-tfidelity", has_logits=True),
    ExtractorSpec("torch-fidelity/t2ibenchmark", "torch-fidelity", "t2ibenchmark",
                  "inception-2015-12-05-tfidelity", has_logits=False, preprocess=T2IBENCHMARK_PREPROCESS),
)}


# A loaded extractor: images in the library's input format -> (pool3 [B, 2048], logits or None).
class InceptionExtractor:
    def __init__(self, spec: ExtractorSpec, weights: Path, device: torch.device):
        self.spec, self.weights, self.device = spec, Path(weights), torch.device(device)
        self.weights_sha256 = sha256_file(self.weights)
        self.version = _version(spec.library)
        if spec.library == "clean-fid":
            self.model = _load_cleanfid_model(self.weights, spec.mode, self.device)
        else:
            self.model = load_tfidelity_inception(self.weights, self.device)

    # A Dataset over a sample source producing what the library's folder reader produces.
    def dataset(self, source: SampleSource) -> Dataset:
        if self.spec.library == "clean-fid":
            return _CleanFIDImages(source, self.spec.mode)
        if self.spec.mode == "t2ibenchmark":
            return _T2IBenchmarkImages(source)
        return _TorchFidelityImages(source)

    @torch.no_grad()
    def __call__(self, batch: Tensor) -> tuple[Tensor, Tensor | None]:
        batch = batch.to(self.device)
        if self.spec.library == "clean-fid":
            return self.model(batch), None
        if self.spec.mode == "t2ibenchmark":
            return pool3_body(self.model)(batch).flatten(1), None
        pool, logits = self.model(batch)
        return pool, logits

    # A key for caches: changes whenever the features could change.
    def cache_key(self) -> str:
        body = json.dumps({"extractor": self.spec.key, "weights_sha256": self.weights_sha256,
                           "library": self.spec.library, "version": self.version}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()

    # Protocol fields describing these features.
    def describe(self) -> dict[str, Any]:
        out = {"features": self.spec.key, "implementation": self.spec.library,
               "implementation_version": self.version, "feature_weights": self.weights.name,
               "feature_weights_sha256": self.weights_sha256}
        return {**out, "preprocess": self.spec.preprocess} if self.spec.preprocess else out


# Load (once per process and file version) the extractor `key` with weights from a local file.
def load_extractor(key: str, weights: Path, device: str | torch.device = "cpu") -> InceptionExtractor:
    if key not in EXTRACTORS:
        raise KeyError(f"unknown feature extractor {key!r}; allowed: {', '.join(EXTRACTORS)}")
    st = Path(weights).stat()
    return _load_extractor(key, str(Path(weights).resolve()), str(device), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4)
def _load_extractor(key: str, weights: str, device: str, mtime_ns: int, size: int) -> InceptionExtractor:
    return InceptionExtractor(EXTRACTORS[key], Path(weights), torch.device(device))


def _load_cleanfid_model(weights: Path, mode: str, device: torch.device) -> Callable:
    from cleanfid.inception_torchscript import InceptionV3W
    resize_inside = mode == "legacy_tensorflow"
    if weights.name == CLEANFID_WEIGHTS_NAME:
        return InceptionV3W(str(weights.parent), download=False, resize_inside=resize_inside).to(device).eval()
    # InceptionV3W opens <folder>/inception-2015-12-05.pt: link a differently named file into a fresh
    # private folder (mkdtemp: mode 0700, unpredictable name), which goes once the file is loaded.
    with tempfile.TemporaryDirectory(prefix="softdimo-cleanfid-") as folder:
        (Path(folder) / CLEANFID_WEIGHTS_NAME).symlink_to(weights.resolve())
        model = InceptionV3W(folder, download=False, resize_inside=resize_inside)
    return model.to(device).eval()


# torch-fidelity's `FeatureExtractorInceptionV3` (pool3 and logits_unbiased) without weights: its
# constructor insists on unpickling a weight file, so it is given an empty one written here and its
# loading is skipped while it is built.
def empty_tfidelity_inception() -> nn.Module:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
            return None

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)
        kwargs = check_tfidelity_kwargs(feature_extractor_weights_path=str(empty))
        model = _Unloaded("inception-v3-compat", ["2048", "logits_unbiased"], **kwargs)
    model.__class__ = FeatureExtractorInceptionV3       # loads normally from here on
    return model


# torch-fidelity's Inception with weights read weights-only from `weights` and loaded strictly.
def load_tfidelity_inception(weights: Path, device: torch.device | str = "cpu") -> nn.Module:
    model = empty_tfidelity_inception()
    load_strict(model, read_state_dict(weights, "torch-fidelity Inception weights"), str(weights))
    return model.to(device)


# The modules of a torch-fidelity Inception from its (normalised, 299 x 299) input to pool3.
def pool3_body(model: nn.Module) -> nn.Sequential:
    return nn.Sequential(*(getattr(model, name) for name in POOL3_LAYERS))


# clean-fid's ResizeDataset.__getitem__ after the image is decoded: resize for the mode, then
# ToTensor (x255 for uint8 results) -> float [3, H, W] in [0, 255].
class _CleanFIDImages(Dataset):
    def __init__(self, source: SampleSource, mode: str):
        from cleanfid.resize import build_resizer
        from torchvision.transforms import ToTensor
        self.source, self.fn_resize, self.to_tensor = source, build_resizer(mode), ToTensor()

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> Tensor:
        resized = self.fn_resize(self.source[i])
        if resized.dtype == np.uint8:
            return self.to_tensor(np.array(resized)) * 255
        return self.to_tensor(resized)


# T2IBenchmark's InceptionV3FE preprocessing: centre crop to the short side (offsets floored),
# PIL bicubic resize to 299 x 299 in uint8, ToTensor, 2x - 1 -> float [3, 299, 299] in [-1, 1].
class _T2IBenchmarkImages(Dataset):
    def __init__(self, source: SampleSource):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> Tensor:
        image = self.source[i]
        h, w = image.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        crop = Image.fromarray(np.ascontiguousarray(image[top:top + side, left:left + side]))
        resized = np.asarray(crop.resize((INCEPTION_SIZE, INCEPTION_SIZE), resample=Image.BICUBIC))
        x = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).float().div(255)
        return 2 * x - 1


# torch-fidelity's ImagesPathDataset: the RGB image as a uint8 tensor [3, H, W].
class _TorchFidelityImages(Dataset):
    def __init__(self, source: SampleSource):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.source[i].transpose(2, 0, 1)))


#----------------------------------------------------------------------------
# Statistics and feature sets.


# Streaming mean and covariance in float64: sum x and sum x x^T, unbiased covariance at the end
# (the accumulation of EDM's fid.py).
class GaussianStats:
    def __init__(self, dim: int):
        self.n = 0
        self.sum = torch.zeros(dim, dtype=torch.float64)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)

    def update(self, features: Tensor) -> None:
        x = features.detach().to("cpu", torch.float64)
        self.n += x.shape[0]
        self.sum += x.sum(0)
        self.outer += x.T @ x

    @property
    def mu(self) -> np.ndarray:
        return (self.sum / self.n).numpy()

    @property
    def sigma(self) -> np.ndarray:
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 images, got {self.n}")
        mu = self.sum / self.n
        return ((self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)).numpy()


# Features of one sample set under one extractor.
@dataclass
class FeatureSet:
    n: int
    mu: np.ndarray                   # float64 [2048]
    sigma: np.ndarray                # float64 [2048, 2048]
    pool: np.ndarray                 # float32 [N, 2048]
    logits: np.ndarray | None        # float32 [N, 1008] (torch-fidelity only)


# Run the extractor over every image of a source, in index order.
def extract_features(source: SampleSource, extractor: InceptionExtractor, batch_size: int = 50,
                     num_workers: int = 0) -> FeatureSet:
    loader = DataLoader(extractor.dataset(source), batch_size=batch_size, shuffle=False,
                        drop_last=False, num_workers=num_workers)
    stats, pools, logits = GaussianStats(2048), [], []
    for batch in loader:
        pool, logit = extractor(batch)
        stats.update(pool)
        pools.append(pool.to("cpu", torch.float32).numpy())
        if logit is not None:
            logits.append(logit.to("cpu", torch.float32).numpy())
    if stats.n != len(source):
        raise RuntimeError(f"{source.name}: extracted {stats.n} of {len(source)} images")
    return FeatureSet(stats.n, stats.mu, stats.sigma, np.concatenate(pools),
                      np.concatenate(logits) if logits else None)


_MEMO: dict[tuple[str, str, int], FeatureSet] = {}
_MEMO_SIZE = 4


# `extract_features`, remembered per (content, extractor) in this process (several metrics of one
# protocol share a pass) and, when `cache_dir` is given, on disk under a content-derived name.
def features_of(source: SampleSource, extractor: InceptionExtractor, batch_size: int = 50,
                num_workers: int = 0, cache_dir: Path | None = None) -> FeatureSet:
    key = (source.content_sha256(), extractor.cache_key(), len(source))
    if key in _MEMO:
        return _MEMO[key]
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "metrics" / "inception-features" / f"{key[0][:24]}-{key[1][:16]}.npz"
        if path.is_file():
            with np.load(path) as d:
                feats = FeatureSet(int(d["n"]), d["mu"], d["sigma"], d["pool"],
                                   d["logits"] if "logits" in d.files else None)
            if feats.n == len(source):
                return _remember(key, feats)
    feats = extract_features(source, extractor, batch_size, num_workers)
    if path is not None:
        _save_features(path, feats, {"source": source.name, "content_sha256": key[0],
                                     **extractor.describe()})
    return _remember(key, feats)


def _remember(key: tuple[str, str, int], feats: FeatureSet) -> FeatureSet:
    if len(_MEMO) >= _MEMO_SIZE:
        _MEMO.pop(next(iter(_MEMO)))
    _MEMO[key] = feats
    return feats


def _save_features(path: Path, feats: FeatureSet, provenance: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"n": np.int64(feats.n), "mu": feats.mu, "sigma": feats.sigma, "pool": feats.pool}
    if feats.logits is not None:
        arrays["logits"] = feats.logits
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays))
    atomic_write(path.with_suffix(".json"), json.dumps(provenance, indent=2, sort_keys=True))


#----------------------------------------------------------------------------
# Reference statistics.


# The reference side of FID / KID / PRDC: mu/sigma, and the features of reference images if any.
@dataclass
class Reference:
    name: str
    sha256: str                      # of the npz file, or of the image folder's content
    mu: np.ndarray                   # float64
    sigma: np.ndarray                # float64
    num_images: int | None           # None: statistics precomputed elsewhere (e.g. ADM mu/sigma)
    images: SampleSource | None      # reference images (ADM arr_0, or the folder) for KID / PRDC

    def describe(self) -> dict[str, Any]:
        return {"reference": self.name, "reference_sha256": self.sha256}


# A reference from an npz with `mu`/`sigma` (and optionally images `arr_0`), or from a folder / an
# npz of images only, whose statistics are computed once and cached under a content-derived name.
def load_reference(path: Path, extractor: InceptionExtractor, name: str | None = None,
                   batch_size: int = 50, num_workers: int = 0, cache_dir: Path | None = None) -> Reference:
    path = Path(path)
    name = name or path.stem
    if path.is_file() and path.suffix == ".npz":
        with np.load(path) as data:
            keys = set(data.files)
            if {"mu", "sigma"} <= keys:
                mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
                if mu.shape != (2048,) or sigma.shape != (2048, 2048):
                    raise ValueError(f"{path}: mu {mu.shape} / sigma {sigma.shape}; expected (2048,) "
                                     f"and (2048, 2048) pool3 statistics")
                images = SampleSource(str(path), npz=path) if "arr_0" in keys else None
                return Reference(name, sha256_file(path), mu, sigma, None, images)
            if "arr_0" not in keys:
                raise KeyError(f"{path}: neither mu/sigma nor arr_0 (keys: {', '.join(sorted(keys))})")
    source = open_samples(path)
    feats = features_of(source, extractor, batch_size, num_workers, cache_dir)
    return Reference(name, source.content_sha256(), feats.mu, feats.sigma, feats.n, source)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"

"""Samples for evaluation: written once, per index, in a layout every evaluator reads.

Image i of a run draws its noise from its own stream (`ImageNoise(seed, [i])`), so a sample set
does not depend on the batch size, the shard order or the number of GPUs. Images are converted to
uint8 in exactly one way (`to_uint8`) and written in shards of consecutive indices:

    <dir>/000000.png ... <dir>/049999.png           PNG folder (clean-fid, torch-fidelity, HPS, ...)
    <dir>/shards/000000-001000.npz                  uint8 NHWC `arr_0` and `labels` of one shard
    <dir>/samples.npz                               all shards merged: the ADM evaluator's input
    <dir>/manifest.json                             count, resolution, seed, labels, conversion

A shard is complete when its npz (or, for PNG-only sets, all its PNGs) exists, so an interrupted
job resumes where it stopped. `open_samples` reads a PNG/JPEG folder, an npz or a zip archive of
images (e.g. a released reference set, read in place) as one indexable sequence of HWC uint8
images, and hashes its content for run ids and caches.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from harness.store.assets import sha256_file
from softdimo.files import atomic_write
from softdimo.teachers.base import ImageNoise

# The one float -> uint8 conversion of the harness. For y = 2x - 1 in [-1, 1] it equals
# EDM/ADM's `clip(127.5 y + 128)` truncation, i.e. rounding to nearest.
UINT8_CONVERSION = "floor(255*clamp(x,0,1)+0.5)"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
SAMPLE_FORMATS = ("png", "npz")

#----------------------------------------------------------------------------
# Conversion and labels.


# Images [N, C, H, W] float in [0, 1] -> uint8 [N, H, W, C] (UINT8_CONVERSION).
def to_uint8(images: Tensor) -> np.ndarray:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, C, H, W] with C in (1, 3), got {tuple(images.shape)}")
    x = images.detach().to(torch.float32).clamp(0.0, 1.0).mul(255.0).add(0.5).floor()
    x = x.to(torch.uint8).permute(0, 2, 3, 1)
    if x.shape[-1] == 1:
        x = x.expand(-1, -1, -1, 3)
    return np.ascontiguousarray(x.cpu().numpy())


# Class-balanced labels: label(i) = i mod num_classes (50 per class for 50k ImageNet samples).
def balanced_labels(n: int, num_classes: int = 1000) -> list[int]:
    return [i % num_classes for i in range(n)]


#----------------------------------------------------------------------------
# Writing.


# Writes the shards of one sample set; safe to resume; `finalize` merges and writes the manifest.
@dataclass
class SampleWriter:
    out_dir: Path
    total: int
    shard_size: int = 1000
    formats: tuple[str, ...] = SAMPLE_FORMATS
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        bad = [f for f in self.formats if f not in SAMPLE_FORMATS]
        if bad or not self.formats:
            raise ValueError(f"sample formats {list(self.formats)}: allowed {list(SAMPLE_FORMATS)}")
        if self.total < 1 or self.shard_size < 1:
            raise ValueError(f"total ({self.total}) and shard_size ({self.shard_size}) must be >= 1")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "shards").mkdir(exist_ok=True)

    # [start, stop) index ranges of all shards.
    def shards(self) -> list[tuple[int, int]]:
        return [(s, min(s + self.shard_size, self.total)) for s in range(0, self.total, self.shard_size)]

    def shard_path(self, start: int, stop: int) -> Path:
        return self.out_dir / "shards" / f"{start:06d}-{stop:06d}.npz"

    def is_complete(self, start: int, stop: int) -> bool:
        if "npz" in self.formats:
            return self.shard_path(start, stop).is_file()
        return all((self.out_dir / f"{i:06d}.png").is_file() for i in range(start, stop))

    # Write one whole shard: uint8 images [stop-start, H, W, 3] and their labels.
    def write_shard(self, start: int, images: np.ndarray, labels: Sequence[Any]) -> None:
        stop = start + len(images)
        if (start, stop) not in self.shards():
            raise ValueError(f"[{start}, {stop}) is not a shard of {self.total} images in shards of "
                             f"{self.shard_size}")
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"shard images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
        if len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        if "png" in self.formats:
            for offset, image in enumerate(images):
                atomic_write(self.out_dir / f"{start + offset:06d}.png",
                             lambda tmp, image=image: Image.fromarray(image).save(tmp, format="PNG"))
        if "npz" in self.formats:
            atomic_write(self.shard_path(start, stop),
                         lambda tmp: np.savez(tmp, arr_0=images, labels=np.asarray(_json_labels(labels))))

    def _check_complete(self) -> None:
        missing = [s for s in self.shards() if not self.is_complete(*s)]
        if missing:
            raise RuntimeError(f"{self.out_dir}: {len(missing)} of {len(self.shards())} shards are not "
                               f"written yet, first [{missing[0][0]}, {missing[0][1]})")

    # The written npz shards as one sample set, read one shard at a time (never loaded whole).
    def read(self) -> "ShardedSamples":
        if "npz" not in self.formats:
            raise ValueError(f"{self.out_dir}: reading shards needs the npz format")
        self._check_complete()
        return ShardedSamples(str(self.out_dir), [self.shard_path(*s) for s in self.shards()], self.shard_size,
                              self.total)

    # Check that every shard is written, merge npz shards into samples.npz, write manifest.json.
    def finalize(self) -> Path:
        self._check_complete()
        if "npz" in self.formats:
            merge_npz_shards([self.shard_path(*s) for s in self.shards()], self.out_dir / "samples.npz")
        first = open_samples(self.shard_path(*self.shards()[0]) if "npz" in self.formats else self.out_dir)
        manifest = {"count": self.total, "resolution": list(first[0].shape[:2]),
                    "uint8_conversion": UINT8_CONVERSION, "shard_size": self.shard_size,
                    "formats": list(self.formats), **self.meta}
        atomic_write(self.out_dir / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
        return self.out_dir


# Generate and write a whole sample set: shard k goes to rank k mod world_size; image i uses
# ImageNoise(seed, [i]); `generate(conditions, noise)` returns images [B, C, H, W] in [0, 1].
def generate_samples(generate: Callable[[list[Any], ImageNoise], Tensor], conditions: Sequence[Any],
                     out_dir: Path, seed: int, batch_size: int = 50, shard_size: int = 1000,
                     formats: tuple[str, ...] = SAMPLE_FORMATS, rank: int = 0, world_size: int = 1,
                     device: torch.device | str = "cpu", meta: dict[str, Any] | None = None) -> SampleWriter:
    writer = SampleWriter(Path(out_dir), len(conditions), shard_size, formats,
                          {"seed": seed, **(meta or {})})
    for k, (start, stop) in enumerate(writer.shards()):
        if k % world_size != rank or writer.is_complete(start, stop):
            continue
        parts = []
        for b in range(start, stop, batch_size):
            indices = list(range(b, min(b + batch_size, stop)))
            noise = ImageNoise(seed, indices, device)
            with torch.no_grad():
                parts.append(to_uint8(generate([conditions[i] for i in indices], noise)))
        writer.write_shard(start, np.concatenate(parts), list(conditions[start:stop]))
    if world_size == 1:
        writer.finalize()
    return writer


# Concatenate npz shards (arr_0 in index order) into one npz without holding them all in memory.
def merge_npz_shards(shards: Sequence[Path], out: Path) -> None:
    first = np.load(shards[0])["arr_0"]
    total = sum(_npz_length(p) for p in shards)
    header = {"descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False,
              "shape": (total, *first.shape[1:])}

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("arr_0.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_2_0(f, header)
                for p in shards:
                    arr = np.load(p)["arr_0"]
                    if arr.shape[1:] != first.shape[1:] or arr.dtype != first.dtype:
                        raise ValueError(f"{p}: images {arr.dtype} {arr.shape[1:]} differ from "
                                         f"{shards[0]}: {first.dtype} {first.shape[1:]}")
                    f.write(np.ascontiguousarray(arr).tobytes())
    atomic_write(out, write)


def _npz_length(path: Path) -> int:
    with zipfile.ZipFile(path) as zf, zf.open("arr_0.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
            else np.lib.format.read_array_header_2_0
        shape, _, _ = read_header(f)
    return int(shape[0])


def _json_labels(labels: Sequence[Any]) -> list[Any]:
    return [x if isinstance(x, (int, str)) else str(x) for x in labels]




#----------------------------------------------------------------------------
# Reading.


# A sample set as an indexable sequence of HWC uint8 RGB images (a folder, an npz or an array).
class SampleSource(Sequence[np.ndarray]):
    def __init__(self, name: str, files: list[Path] | None = None, array: np.ndarray | None = None,
                 npz: Path | None = None):
        self.name, self.files, self._array, self.npz = name, files, array, npz
        self._digest: str | None = None

    # The images as an array (npz and in-memory sources); loads an npz on first use.
    @property
    def array(self) -> np.ndarray | None:
        if self._array is None and self.npz is not None:
            self._array = _load_npz_images(self.npz)
        return self._array

    def __len__(self) -> int:
        return len(self.files) if self.files is not None else len(self.array)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        if self.files is not None:
            with Image.open(self.files[i]) as im:
                return np.array(im.convert("RGB"))
        return self.array[i]

    # (height, width) of the first image.
    @property
    def resolution(self) -> tuple[int, int]:
        return tuple(self[0].shape[:2])  # type: ignore[return-value]

    # sha256 of the content: the npz file, the (name, file sha256) list of a folder, or the array bytes.
    def content_sha256(self) -> str:
        if self._digest is None:
            h = hashlib.sha256()
            if self.npz is not None:
                h.update(sha256_file(self.npz).encode())
            elif self.files is not None:
                for f in self.files:
                    h.update(f"{f.name}\0{sha256_file(f)}\n".encode())
            else:
                h.update(f"{self.array.dtype}{self.array.shape}".encode())
                h.update(np.ascontiguousarray(self.array).data)
            self._digest = h.hexdigest()
        return self._digest


# The uint8 images of consecutive npz shards (`SampleWriter`) as one sequence; one shard is in
# memory at a time. The content hash is that of the shard files, in order.
class ShardedSamples(SampleSource):
    def __init__(self, name: str, shards: list[Path], shard_size: int, count: int):
        super().__init__(name)
        self.shards, self.shard_size, self.count = shards, shard_size, count
        self._loaded: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        if not 0 <= i < self.count:
            raise IndexError(f"{self.name}: image {i} of {self.count}")
        k = i // self.shard_size
        if self._loaded is None or self._loaded[0] != k:
            self._loaded = (k, _load_npz_images(self.shards[k]))
        return self._loaded[1][i - k * self.shard_size]

    def content_sha256(self) -> str:
        if self._digest is None:
            self._digest = hashlib.sha256("".join(sha256_file(p) for p in self.shards).encode()).hexdigest()
        return self._digest


# The PNG/JPEG members of a zip archive (any depth, sorted by name) read in place; the content
# hash is the archive's sha256. The archive is opened once per process (data-loader workers too).
class ZipSamples(SampleSource):
    def __init__(self, path: Path):
        super().__init__(str(path))
        self.path = Path(path)
        with zipfile.ZipFile(self.path) as zf:
            self.members = sorted(m.filename for m in zf.infolist() if not m.is_dir()
                                  and m.filename.lower().endswith(IMAGE_EXTENSIONS)
                                  and not m.filename.startswith("__MACOSX/"))
        if not self.members:
            raise FileNotFoundError(f"{path}: a zip archive without {'/'.join(IMAGE_EXTENSIONS)} images")
        self._zip: tuple[int, zipfile.ZipFile] | None = None

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        if self._zip is None or self._zip[0] != os.getpid():
            self._zip = (os.getpid(), zipfile.ZipFile(self.path))
        with Image.open(io.BytesIO(self._zip[1].read(self.members[i]))) as im:
            return np.array(im.convert("RGB"))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_zip": None}

    def content_sha256(self) -> str:
        if self._digest is None:
            self._digest = sha256_file(self.path)
        return self._digest


# Open a folder of PNG/JPEG images (top level, sorted by name; a folder with only samples.npz
# opens that), an npz with uint8 NHWC `arr_0`, or a zip archive of PNG/JPEG images.
def open_samples(path: str | Path) -> SampleSource:
    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        return SampleSource(str(path), npz=path)
    if path.is_file() and path.suffix == ".zip":
        return ZipSamples(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if files:
            return SampleSource(str(path), files=files)
        if (path / "samples.npz").is_file():
            return SampleSource(str(path / "samples.npz"), npz=path / "samples.npz")
        raise FileNotFoundError(f"{path}: no {'/'.join(IMAGE_EXTENSIONS)} images and no samples.npz")
    raise FileNotFoundError(f"{path}: expected a folder of images, an .npz file with uint8 NHWC arr_0 or a "
                            f".zip archive of images")


# An in-memory sample set: uint8 [N, H, W, 3].
def array_samples(images: np.ndarray, name: str = "array") -> SampleSource:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{name}: expected uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    return SampleSource(name, array=images)


def _load_npz_images(path: Path) -> np.ndarray:
    with np.load(path) as data:
        if "arr_0" not in data:
            raise KeyError(f"{path}: no key 'arr_0' (keys: {', '.join(data.files)}); expected uint8 NHWC images")
        arr = data["arr_0"]
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"{path}: arr_0 is {arr.dtype} {arr.shape}; expected uint8 [N, H, W, 3]")
    return arr

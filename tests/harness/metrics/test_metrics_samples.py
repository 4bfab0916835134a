"""Sample writing: per-index seeds (batch-size and world-size independent), shards, resume, the one
uint8 conversion, class-balanced labels, and the readers."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from harness.methods.samples import (UINT8_CONVERSION, SampleWriter, balanced_labels, generate_samples,
                             merge_npz_shards, open_samples, to_uint8)


def test_to_uint8_rounds_to_nearest_and_equals_edm():
    x = torch.tensor([0.0, 0.5 / 255, 0.49 / 255, 0.5, 1.0, -0.2, 1.3]).view(1, 1, 1, 7).expand(1, 3, 1, 7)
    out = to_uint8(x)[0, 0, :, 0]
    np.testing.assert_array_equal(out, [0, 1, 0, 128, 255, 0, 255])
    y = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 2 - 1
    edm = (y * 127.5 + 128).clip(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(to_uint8((y + 1) / 2), edm)
    assert to_uint8(torch.zeros(1, 1, 4, 4)).shape == (1, 4, 4, 3)          # grey -> RGB


def test_balanced_labels_50_per_class():
    counts = Counter(balanced_labels(50_000))
    assert len(counts) == 1000 and set(counts.values()) == {50}


def _generate(calls: list[int]):
    # A toy generator: images are the per-index noise itself, scaled by the label.
    def generate(conditions, noise):
        calls.append(len(conditions))
        scale = torch.tensor([0.5 + 0.1 * c for c in conditions]).view(-1, 1, 1, 1)
        return noise.rand(3, 8, 8) * scale
    return generate


def test_samples_do_not_depend_on_batch_size_or_world_size(tmp_path):
    labels = balanced_labels(10, num_classes=3)
    generate_samples(_generate([]), labels, tmp_path / "a", seed=7, batch_size=3, shard_size=4)
    for rank in range(2):
        generate_samples(_generate([]), labels, tmp_path / "b", seed=7, batch_size=5, shard_size=4,
                         rank=rank, world_size=2)
    SampleWriter(tmp_path / "b", 10, shard_size=4).finalize()
    a, b = open_samples(tmp_path / "a"), open_samples(tmp_path / "b")
    assert len(a) == 10 and a.content_sha256() == b.content_sha256()
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "samples.npz")["arr_0"],
                                  np.load(tmp_path / "b" / "samples.npz")["arr_0"])
    other_seed = generate_samples(_generate([]), labels, tmp_path / "c", seed=8, batch_size=3, shard_size=4)
    assert open_samples(other_seed.out_dir).content_sha256() != a.content_sha256()
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["count"] == 10 and manifest["uint8_conversion"] == UINT8_CONVERSION
    assert manifest["seed"] == 7 and manifest["resolution"] == [8, 8]
    assert np.load(tmp_path / "a" / "shards" / "000008-000010.npz")["labels"].tolist() == labels[8:]


def test_resume_regenerates_only_missing_shards(tmp_path):
    labels = balanced_labels(9, num_classes=3)
    generate_samples(_generate([]), labels, tmp_path, seed=1, batch_size=2, shard_size=4)
    before = np.load(tmp_path / "samples.npz")["arr_0"]
    (tmp_path / "shards" / "000004-000008.npz").unlink()
    calls: list[int] = []
    generate_samples(_generate(calls), labels, tmp_path, seed=1, batch_size=2, shard_size=4)
    assert calls == [2, 2]                                   # one shard of 4, in batches of 2
    np.testing.assert_array_equal(np.load(tmp_path / "samples.npz")["arr_0"], before)


def test_finalize_refuses_incomplete_sets(tmp_path):
    writer = SampleWriter(tmp_path, 6, shard_size=4)
    writer.write_shard(0, np.zeros((4, 2, 2, 3), np.uint8), [0, 1, 2, 3])
    with pytest.raises(RuntimeError, match="1 of 2 shards are not written yet, first \\[4, 6\\)"):
        writer.finalize()
    with pytest.raises(ValueError, match="not a shard"):
        writer.write_shard(1, np.zeros((4, 2, 2, 3), np.uint8), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="uint8"):
        writer.write_shard(4, np.zeros((2, 2, 2, 3), np.float32), [0, 1])


def test_png_only_sets_and_readers(tmp_path):
    generate_samples(_generate([]), [0, 1, 2], tmp_path / "png", seed=3, batch_size=2, shard_size=2,
                     formats=("png",))
    assert sorted(p.name for p in (tmp_path / "png").glob("*.png")) == ["000000.png", "000001.png", "000002.png"]
    assert not (tmp_path / "png" / "samples.npz").exists()
    with pytest.raises(ValueError, match="allowed"):
        SampleWriter(tmp_path / "x", 3, formats=("jpg",))
    with pytest.raises(FileNotFoundError, match="no .png/.jpg/.jpeg images and no samples.npz"):
        open_samples(tmp_path / "png" / "shards")
    np.savez(tmp_path / "bad.npz", images=np.zeros((1, 2, 2, 3), np.uint8))
    with pytest.raises(KeyError, match="no key 'arr_0'"):
        open_samples(tmp_path / "bad.npz")[0]


def test_merge_npz_shards_streams_in_order(tmp_path):
    parts = [np.full((n, 2, 3, 3), i, np.uint8) for i, n in enumerate((3, 1, 2))]
    paths = []
    for i, part in enumerate(parts):
        paths.append(tmp_path / f"{i}.npz")
        np.savez(paths[-1], arr_0=part)
    merge_npz_shards(paths, tmp_path / "all.npz")
    np.testing.assert_array_equal(np.load(tmp_path / "all.npz")["arr_0"], np.concatenate(parts))

"""The built-in paper metric entries, called as a run calls them (EvalInput, RunContext)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.contracts import registry
from harness.contracts.entries import EvalInput, RunContext
from harness.methods.metrics import fid, hps
from harness.methods.metrics.features import features_of, load_extractor
from harness.methods.metrics.random_weights import register_open_clip_config, write_open_clip
from harness.methods.samples import UINT8_CONVERSION, array_samples, generate_samples, open_samples
from harness.store import baselines


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# A stand-in ADM batch: mu/sigma and 256x256 images arr_0, placed where the asset is looked for.
@pytest.fixture()
def adm_batch(asset_root):
    ref = (np.random.default_rng(5).integers(30, 230, (8, 256, 256, 3))).astype(np.uint8)
    extractor = load_extractor("clean-fid/legacy_tensorflow", asset_root / "cleanfid" / "inception-2015-12-05.pt")
    stats = features_of(array_samples(ref), extractor)
    path = asset_root / "adm" / "VIRTUAL_imagenet256_labeled.npz"
    path.parent.mkdir()
    np.savez(path, arr_0=ref, mu=stats.mu, sigma=stats.sigma)
    return path


def test_imagenet_entries_on_written_samples(adm_batch, tmp_path):
    labels = list(range(10))
    generate_samples(lambda conds, noise: noise.rand(3, 256, 256), labels, tmp_path / "samples", seed=0,
                     batch_size=5, shard_size=5)
    ctx = RunContext(tmp_path / "run", tmp_path / "cache")
    inp = EvalInput(spec=None, teacher=None, images=torch.zeros(0), conditions=labels, tokens=None,
                    samples=tmp_path / "samples")
    value = registry.metrics.get("fid").compute(inp, ctx)["fid"]
    direct = fid.evaluate(open_samples(tmp_path / "samples"), "imagenet256-fid-adm", ["fid"], reference=adm_batch)
    assert value.value == pytest.approx(direct["fid"].value, rel=1e-12)
    assert value.protocol["name"] == "imagenet256-fid-adm" and value.protocol["num_samples"] == 10
    assert value.protocol["reference"] == "adm-imagenet256-ref-batch"
    assert value.protocol["uint8_conversion"] == UINT8_CONVERSION        # read from the manifest
    prdc = registry.metrics.get("prdc").compute(inp, ctx)
    assert set(prdc) == {"precision", "recall", "density", "coverage"}
    assert prdc["precision"].protocol["reference_num_images"] == 8


def test_imagenet_entries_on_in_memory_images(adm_batch, tmp_path):
    images = _images(6, 256, seed=3)
    inp = EvalInput(spec=None, teacher=None, images=images, conditions=list(range(6)), tokens=None)
    value = registry.metrics.get("fid").compute(inp, RunContext(tmp_path / "run", tmp_path / "cache"))["fid"]
    assert value.protocol["uint8_conversion"] == UINT8_CONVERSION and value.protocol["num_samples"] == 6
    small = EvalInput(spec=None, teacher=None, images=_images(6, 32, 3), conditions=list(range(6)), tokens=None)
    with pytest.raises(ValueError, match="needs 256x256"):
        registry.metrics.get("fid").compute(small, RunContext(tmp_path / "run", tmp_path / "cache"))


def test_hps_entry_pairs_and_benchmark(asset_root, tmp_path, monkeypatch, stand_in):
    arch = register_open_clip_config(tmp_path / "cfg", "softdimo-tiny-clip-entries")
    monkeypatch.setattr(hps, "HPS_ARCH", arch)
    stand_in("hps-v2.1", write_open_clip(asset_root / "hpsv2" / "HPS_v2.1_compressed.pt", arch, fmt="hps", seed=1))
    stand_in("hps-v2.0", write_open_clip(asset_root / "hpsv2" / "HPS_v2_compressed.pt", arch, fmt="hps", seed=2))
    bench = {s: [f"{s} prompt {i}" for i in range(2)] for s in hps.HPS_STYLES}
    for style, prompts in bench.items():
        (asset_root / "hpsv2" / "benchmark").mkdir(parents=True, exist_ok=True)
        (asset_root / "hpsv2" / "benchmark" / f"{style}.json").write_text(json.dumps(prompts))
    ctx = RunContext(tmp_path / "run", tmp_path / "cache")

    pairs = EvalInput(None, None, _images(3, 32, 0), ["a", "b", "c"], None)
    out = registry.metrics.get("hps").compute(pairs, ctx)
    assert set(out) == {"hps"} and out["hps"].protocol["name"] == "hpsv2-pairs-v2.1"

    prompts = [p for s in hps.HPS_STYLES for p in bench[s]]
    full = EvalInput(None, None, _images(8, 32, 1), prompts, None)
    out = registry.metrics.get("hps").compute(full, ctx)
    assert out["hps"].protocol["name"] == "hpsv2-benchmark-v2.1" and "hps_anime" in out
    assert (ctx.run_dir / "hps_benchmark_v2.1" / "photo" / "00001.jpg").is_file()
    old = registry.metrics.get("hps_v2.0").compute(full, ctx)
    assert set(old) == {"hps_v2.0", *(f"hps_v2.0_{s}" for s in hps.HPS_STYLES)}
    assert old["hps_v2.0"].protocol["hps_version"] == "v2.0"


# The stored ImageNet-256 numbers compare with a run's: the protocol a run records under the 50k
# protocol (here the any-count protocol of 10 images, renamed as a 50k run would record it) agrees
# with Di[M]O's FID / IS / PRDC rows on every field both record, and Soft-Di[M]O's FID by assumption.
def test_stored_imagenet_numbers_match_what_a_run_records(adm_batch, tmp_path):
    from harness.contracts.protocol import protocol_mismatch
    labels = list(range(10))
    generate_samples(lambda conds, noise: noise.rand(3, 256, 256), labels, tmp_path / "samples", seed=0,
                     batch_size=5, shard_size=5)
    inp = EvalInput(spec=None, teacher=None, images=torch.zeros(0), conditions=labels, tokens=None,
                    samples=tmp_path / "samples")
    ctx = RunContext(tmp_path / "run", tmp_path / "cache")
    recorded = {}
    for name in ("fid", "inception_score", "prdc"):
        for key, value in registry.metrics.get(name).compute(inp, ctx).items():
            recorded[key] = {**value.protocol, "name": "imagenet256-fid50k-adm", "num_samples": 50_000}
    stored = [b for b in baselines.registered.get("papers").load() if b.task == "imagenet256-c2i"]
    key_of = {"is": "inception_score"}
    dimo = [b for b in stored if b.arxiv == "2503.15457"]
    assert {b.metric for b in dimo} >= {"fid", "is", "precision", "recall", "density", "coverage"}
    for b in dimo:
        assert protocol_mismatch(recorded[key_of.get(b.metric, b.metric)], b.protocol) is None, (b.method, b.metric)
    soft_fid = [b for b in stored if b.arxiv == "2509.22925" and b.metric == "fid"]
    assert soft_fid and all(b.protocol.get("assumed") for b in soft_fid)
    assert all(protocol_mismatch(recorded["fid"], b.protocol) is None for b in soft_fid)
    small = {**recorded["fid"], "name": "imagenet256-fid-adm", "num_samples": 10}
    assert all(protocol_mismatch(small, b.protocol) for b in dimo if b.metric == "fid")

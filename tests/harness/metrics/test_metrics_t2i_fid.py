"""Text-to-image FID protocols (MS-COCO FID-30k as T2IBenchmark computes it, MJHQ-30K): the
T2IBenchmark features reproduce upstream's, the protocols compute from their assets (tiny caption
sets, a tiny zip of reference images, seeded Inception weights), check the prompts, and refuse bad
input before computing anything."""
from __future__ import annotations

import csv
import hashlib
import json
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from harness.cell import evaluate
from harness.contracts import registry
from harness.contracts.entries import EvalInput, RunContext
from harness.methods.metrics import fid, t2i_prompts
from harness.methods.metrics.features import _T2IBenchmarkImages, extract_features, features_of, load_extractor
from harness.methods.samples import array_samples, open_samples, to_uint8
from harness.store import assets, baselines
from softdimo.teachers.text_conditioned import read_prompts as read_prompt_file
from tests.float_tolerance import INCEPTION, rounding_atol, rounding_close

PARITY = Path(__file__).resolve().parents[2] / "fixtures" / "parity" / "t2ibenchmark"
WEIGHTS_DIGEST = "d448def55de740cb346363afae7018e2a66b10b74014aaf02cfc7d269e0a7d9e"
T2IB = "torch-fidelity/t2ibenchmark"
TFID_FILE = "torch-fidelity/weights-inception-2015-12-05-6726825d.pth"
# Captions with what T2IBenchmark's CSV reading and the prompt-file format do to them: a repeated
# image_id (kept at its first place, with its last text) and a caption with a line break.
CAPTION_ROWS = [(11, "a cat on a mat"), (12, "two dogs\nplaying"), (13, "a red bus"), (11, "a cat on a rug"),
                (14, "  a kite  "), (15, "a bowl of fruit"), (16, "a train"), (17, "a boat")]
CAPTIONS = ["a cat on a rug", "two dogs playing", "a red bus", "a kite", "a bowl of fruit", "a train", "a boat"]


def _tensor_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


@pytest.fixture()
def coco_assets(asset_root: Path, image_dirs: dict[str, Path]) -> dict[str, Path]:
    folder = asset_root / "t2ibenchmark"
    folder.mkdir()
    with open(folder / "MS-COCO_val2014_30k_captions.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "text"])
        w.writerows(CAPTION_ROWS)
    extractor = load_extractor(T2IB, asset_root / TFID_FILE)
    ref = features_of(open_samples(image_dirs["reference"]), extractor)
    np.savez(folder / "MS-COCO_val2014_fid_stats.npz", mu=ref.mu.astype(np.float32), sigma=ref.sigma)
    return {"stats": folder / "MS-COCO_val2014_fid_stats.npz", "captions": folder / "MS-COCO_val2014_30k_captions.csv"}


# A tiny MJHQ: meta_data.json with prompts of two categories and a zip <category>/<id>.jpg of images.
@pytest.fixture()
def mjhq_assets(asset_root: Path, stand_in) -> dict[str, Path]:
    folder = asset_root / "mjhq30k"
    folder.mkdir()
    meta = {f"{i:040x}": {"category": ("animals", "food")[i % 2], "prompt": f"prompt number {i}"} for i in range(8)}
    (folder / "meta_data.json").write_text(json.dumps(meta))
    rng = np.random.default_rng(5)
    with zipfile.ZipFile(folder / "mjhq30k_imgs.zip", "w") as zf:
        for key, entry in meta.items():
            image = Image.fromarray(rng.integers(30, 230, (40, 40, 3), dtype=np.uint8))
            buf = BytesIO()
            image.save(buf, format="JPEG", quality=95)
            zf.writestr(f"{entry['category']}/{key}.jpg", buf.getvalue())
        zf.writestr("animals/", b"")                                # a directory entry: skipped
    real = assets.manifest.get("mjhq30k-images")
    assert real.sha256 == "dacdc4328f294696ef0ee389be4bcf3fc96d112060ef10c13384836b54d4a8ec"
    with pytest.raises(assets.AssetError, match="'mjhq30k-images' is corrupt"):   # the release's hash is checked
        assets.resolve("mjhq30k-images")
    stand_in("mjhq30k-images", folder / "mjhq30k_imgs.zip")
    return {"zip": folder / "mjhq30k_imgs.zip", "meta": folder / "meta_data.json"}


def _run_metric(name: str, images: torch.Tensor, prompts: list[str], tmp_path: Path) -> dict:
    inp = EvalInput(spec=None, teacher=None, images=images, conditions=prompts, tokens=None)
    return registry.metrics.get(name).compute(inp, RunContext(tmp_path / "run", tmp_path / "cache", log=lambda s: None))


#----------------------------------------------------------------------------


def test_t2ibenchmark_features_match_upstream(asset_root):
    weights = asset_root / TFID_FILE
    if _tensor_digest(torch.load(weights, weights_only=True)) != WEIGHTS_DIGEST:
        pytest.skip("this torch initialises write_tfidelity_inception(seed=0) differently from the fixture's "
                    "(tests/fixtures/parity/t2ibenchmark/README.md); regenerate the fixture")
    io = load_file(str(PARITY / "t2ibenchmark_io.safetensors"))
    source = open_samples(PARITY)
    assert [f.name for f in source.files] == [f"{i:06d}.png" for i in range(4)]
    pixels = torch.stack([_T2IBenchmarkImages(source)[i] for i in range(4)]).double()
    # resampling to 299 x 299 and a sum over the image; the network's pool3 features
    resampled_sum = (3, 299 * 299)
    torch.testing.assert_close(pixels.sum(dim=(2, 3)), io["pixels_sum"], **rounding_close(io["pixels_sum"], *resampled_sum))
    torch.testing.assert_close(pixels[:, :, :8, :8].float(), io["pixels_corner"], **rounding_close(io["pixels_corner"], 2, 16))
    feats = extract_features(source, load_extractor(T2IB, weights), batch_size=3)   # mixed sizes batch
    np.testing.assert_allclose(feats.pool, io["pool3"].numpy(), rtol=0, atol=rounding_atol(io["pool3"], *INCEPTION))
    assert np.abs(io["pool3"].numpy()).max() > 1.0


def test_coco_fid_metric_computes_and_records(coco_assets, image_dirs, tmp_path):
    assert t2i_prompts.read_prompts("coco30k-t2ibenchmark") == CAPTIONS
    images = _images(5, 48, seed=3)
    values = _run_metric("fid_coco", images, CAPTIONS[:5], tmp_path)
    value = values["fid_coco"]
    p = value.protocol
    assert p["name"] == "coco-fid-t2ibenchmark" and p["num_samples"] == 5 and p["resolution"] == 48
    assert p["metric"] == "fid_coco" and p["features"] == T2IB and p["prompts"] == "coco30k-t2ibenchmark"
    assert p["preprocess"].startswith("rgb>center_crop(short,floor)>pil_bicubic(299,uint8)")
    assert p["prompts_sha256"] == assets.sha256_file(coco_assets["captions"])
    assert p["reference"] == "t2ibenchmark-coco-val2014-fid-stats"
    assert p["reference_sha256"] == assets.sha256_file(coco_assets["stats"])
    # The value is the Frechet distance of the T2IBenchmark features to the stored statistics.
    feats = features_of(array_samples(to_uint8(images)),
                        load_extractor(T2IB, assets.resolve("inception-2015-12-05-tfidelity")))
    with np.load(coco_assets["stats"]) as ref:
        expected = fid.frechet_distance(feats.mu, feats.sigma, ref["mu"], ref["sigma"])
    assert value.value == pytest.approx(expected, rel=1e-9) and value.value > 1.0


def test_coco_fid_refuses_other_prompts_and_counts(coco_assets, tmp_path):
    images = _images(3, 32, seed=1)
    with pytest.raises(ValueError, match=r"prompt 1 is 'two dogs'.*'coco30k-t2ibenchmark' is 'two dogs playing'"):
        _run_metric("fid_coco", images, ["a cat on a rug", "two dogs", "a red bus"], tmp_path)
    with pytest.raises(ValueError, match="9 prompts, but prompt set 'coco30k-t2ibenchmark' has 7"):
        _run_metric("fid_coco", _images(9, 32, seed=1), CAPTIONS + ["x", "y"], tmp_path)
    assert not (tmp_path / "cache").exists()                     # nothing was computed
    source = array_samples(to_uint8(images))
    with pytest.raises(ValueError, match="needs exactly 30000; protocol 'coco-fid-t2ibenchmark' accepts any count"):
        fid.evaluate(source, "coco30k-fid-t2ibenchmark", ["fid"])


def test_mjhq_fid_reads_the_reference_zip(mjhq_assets, tmp_path):
    prompts = t2i_prompts.read_prompts("mjhq30k")
    assert prompts[:2] == ["prompt number 0", "prompt number 1"] and len(prompts) == 8
    ref = open_samples(mjhq_assets["zip"])
    assert len(ref) == 8 and ref.members[0].startswith("animals/")
    assert ref.content_sha256() == assets.sha256_file(mjhq_assets["zip"])
    # Read in place, the zip gives the same images (hence features) as the unpacked folder.
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(mjhq_assets["zip"]) as zf:
        zf.extractall(unpacked)
    flat = tmp_path / "flat"
    flat.mkdir()
    for member in ref.members:
        (flat / member.replace("/", "_")).write_bytes((unpacked / member).read_bytes())
    assert all(np.array_equal(ref[i], open_samples(flat)[i]) for i in range(len(ref)))

    images = _images(6, 40, seed=4)
    value = _run_metric("fid_mjhq30k", images, prompts[:6], tmp_path)["fid_mjhq30k"]
    assert value.protocol["name"] == "mjhq30k-fid-clean" and value.protocol["features"] == "clean-fid/clean"
    assert value.protocol["reference"] == "mjhq30k-images" and value.protocol["reference_num_images"] == 8
    direct = fid.evaluate(array_samples(to_uint8(images)), "mjhq30k-fid-clean", ["fid"],
                          reference=flat)["fid"]
    assert value.value == pytest.approx(direct.value, rel=1e-9) and value.value > 1.0


def test_mjhq_meta_with_unknown_category_is_refused(mjhq_assets):
    meta = json.loads(mjhq_assets["meta"].read_text())
    meta[next(iter(meta))]["category"] = "robots"
    mjhq_assets["meta"].write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="category 'robots'; allowed: animals, art, fashion"):
        t2i_prompts.read_prompts("mjhq30k")


def test_prompt_file_round_trips_through_the_teachers_reader(coco_assets, tmp_path, capsys):
    out = tmp_path / "coco_prompts.txt"
    assert t2i_prompts.main(["coco30k-fid-t2ibenchmark", str(out)]) == 0
    assert "wrote 7 prompts" in capsys.readouterr().out
    assert read_prompt_file(str(out), "teacher.eval_prompts") == CAPTIONS
    assert t2i_prompts.main(["imagenet256-fid-adm", str(out)]) == 2
    assert "has no prompt set; allowed: coco-fid-t2ibenchmark" in capsys.readouterr().err


def test_evaluate_cli_on_outside_samples(coco_assets, image_dirs, tmp_path, capsys):
    samples = image_dirs["samples"]                              # 10 images of 32 x 32
    results = tmp_path / "results"
    base = ["--results", str(results), "--samples", str(samples), "--metrics", "fid"]
    (tmp_path / "caps.txt").write_text("\n".join(CAPTIONS[:3]) + "\n")
    assert evaluate.main([*base, "--protocol", "coco-fid-t2ibenchmark", "--captions", str(tmp_path / "caps.txt")]) == 2
    assert "3 prompts for 10 samples" in capsys.readouterr().err
    assert evaluate.main([*base, "--protocol", "fid-clean", "--reference", str(samples),
                          "--captions", str(tmp_path / "caps.txt")]) == 2
    assert "protocol 'fid-clean' has no prompt set" in capsys.readouterr().err
    assert not results.exists()                                  # refused before anything was computed
    assert evaluate.main([*base, "--protocol", "coco-fid-t2ibenchmark"]) == 0   # prompts taken on trust
    record = json.loads(next((results / "evaluate").glob("*/record.json")).read_text())
    assert record["metrics"]["fid"]["protocol"]["name"] == "coco-fid-t2ibenchmark"
    assert "prompts_sha256" not in record["metrics"]["fid"]["protocol"]


def test_missing_reference_stops_before_computing(asset_root, image_dirs, tmp_path, capsys):
    argv = ["--results", str(tmp_path / "results"), "--samples", str(image_dirs["samples"]), "--metrics", "fid"]
    assert evaluate.main([*argv, "--protocol", "coco30k-fid-t2ibenchmark"]) == 2
    err = capsys.readouterr().err
    assert "'t2ibenchmark-coco-val2014-fid-stats' is missing" in err
    assert "releases/download/v0.0.1/MS-COCO_val2014_fid_stats.npz" in err and "SOFTDIMO_COCO_FID_STATS" in err
    assert evaluate.main([*argv, "--protocol", "mjhq30k-fid30k-clean"]) == 2
    err = capsys.readouterr().err
    assert "'mjhq30k-images' is missing" in err and "playgroundai/MJHQ-30K" in err
    assert not (tmp_path / "results").exists()
    entry = registry.metrics.get("fid_coco")
    assert set(entry.assets) == {"inception-2015-12-05-tfidelity", "t2ibenchmark-coco-val2014-fid-stats",
                                 "t2ibenchmark-coco-30k-captions"}
    assert set(registry.metrics.get("fid_mjhq30k").assets) == {"inception-2015-12-05-torchscript", "mjhq30k-images",
                                                               "mjhq30k-meta-data"}
    assert set(entry.applies_to) == {"maskgen", "meissonic"}


def test_list_protocols_names_the_text_to_image_fids(capsys):
    assert evaluate.main(["--list-protocols"]) == 0
    out = capsys.readouterr().out
    for name in ("coco30k-fid-t2ibenchmark", "coco-fid-t2ibenchmark", "mjhq30k-fid30k-clean", "mjhq30k-fid-clean"):
        assert name in out


# The stored FID baselines agree with what a run records, on every field both have: a full 30k run
# compares with them, an any-count run does not.
def test_stored_baselines_compare_with_full_runs_only(coco_assets, mjhq_assets, tmp_path):
    from harness.contracts.protocol import protocol_mismatch
    papers = baselines.registered.get("papers").load()
    coco = _run_metric("fid_coco", _images(4, 32, seed=2), CAPTIONS[:4], tmp_path)["fid_coco"].protocol
    mjhq = _run_metric("fid_mjhq30k", _images(4, 32, seed=2), t2i_prompts.read_prompts("mjhq30k")[:4],
                       tmp_path)["fid_mjhq30k"].protocol
    for metric, run, full in (("fid_coco", coco, "coco30k-fid-t2ibenchmark"), ("fid_mjhq30k", mjhq, "mjhq30k-fid30k-clean")):
        rows = [b for b in papers if b.metric == metric]
        assert len(rows) == {"fid_coco": 6, "fid_mjhq30k": 4}[metric]
        assert all(protocol_mismatch(run, b.protocol) == f"different protocols ({run['name']} vs {full})" for b in rows)
        as_full = {**run, "name": full, "num_samples": 30_000}
        assert all(protocol_mismatch(as_full, b.protocol) is None for b in rows)

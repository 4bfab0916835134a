"""FID / IS / KID through the harness equal the libraries' own computations on the same images and
(seeded) weights; counts, resolutions, references and torch-fidelity keyword arguments are checked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.methods.metrics import features, fid
from harness.methods.metrics.features import (check_tfidelity_kwargs, extract_features, features_of, load_extractor,
                                      load_reference)
from harness.methods.samples import array_samples, open_samples
from harness.store.assets import sha256_file
from tests.float_tolerance import INCEPTION, rounding_atol

TFID = "torch-fidelity/inception-v3-compat"
TEST_PROTOCOL = fid.FIDProtocol("test-tfidelity", TFID, None, None, None, is_splits=5, kid_subsets=20,
                                kid_subset_size=6)


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def test_fid_is_kid_equal_torch_fidelity(asset_root, image_dirs, inception_files):
    import torch_fidelity
    samples, ref = image_dirs["samples"], image_dirs["reference"]
    values = fid.evaluate(open_samples(samples), TEST_PROTOCOL, ["fid", "inception_score", "kid"], reference=ref)
    lib = torch_fidelity.calculate_metrics(
        input1=str(samples), input2=str(ref), fid=True, isc=True, kid=True, cuda=False, cache=False,
        feature_extractor_weights_path=str(inception_files["tfidelity"]), save_cpu_ram=True, verbose=False,
        isc_splits=5, kid_subsets=20, kid_subset_size=6, rng_seed=2020)
    assert values["fid"].value > 1.0
    assert rel(values["fid"].value, lib["frechet_inception_distance"]) < 1e-4
    assert values["inception_score"].value > 1.0
    assert values["inception_score"].value == pytest.approx(lib["inception_score_mean"], rel=1e-9)
    assert values["kid"].value == pytest.approx(lib["kernel_inception_distance_mean"], rel=1e-6, abs=1e-12)

    p = values["fid"].protocol
    assert p["name"] == "test-tfidelity" and p["num_samples"] == 10 and p["resolution"] == 32
    assert p["implementation"] == "torch-fidelity" and p["features"] == TFID
    assert p["feature_weights_sha256"] == sha256_file(inception_files["tfidelity"])
    assert p["reference_sha256"] == open_samples(ref).content_sha256()
    assert values["inception_score"].protocol["is_splits"] == 5
    assert values["kid"].protocol["kid_subset_size"] == 6


def test_fid_equals_cleanfid_legacy_tensorflow(asset_root, image_dirs, inception_files):
    from cleanfid import fid as cleanfid
    from cleanfid.inception_torchscript import InceptionV3W
    samples, ref = image_dirs["samples"], image_dirs["reference"]
    values = fid.evaluate(open_samples(samples), "fid-legacy-tf", ["fid"], reference=ref)
    model = InceptionV3W(str(inception_files["torchscript"].parent), download=False, resize_inside=True).eval()
    lib = cleanfid.compute_fid(str(samples), str(ref), mode="legacy_tensorflow", custom_feat_extractor=model,
                               num_workers=0, batch_size=4, device=torch.device("cpu"), verbose=False)
    assert values["fid"].value > 1.0
    assert rel(values["fid"].value, lib) < 1e-4
    assert values["fid"].protocol["implementation"] == "clean-fid"
    assert values["fid"].protocol["frechet"] == fid.FRECHET_METHOD


@pytest.mark.parametrize("mode", ["clean", "legacy_tensorflow"])
def test_cleanfid_features_equal_library(asset_root, image_dirs, inception_files, mode):
    from cleanfid import fid as cleanfid
    from cleanfid.inception_torchscript import InceptionV3W
    extractor = load_extractor(f"clean-fid/{mode}", asset_root / "cleanfid" / "inception-2015-12-05.pt")
    ours = features_of(open_samples(image_dirs["samples"]), extractor, batch_size=7)
    model = InceptionV3W(str(inception_files["torchscript"].parent), download=False,
                         resize_inside=(mode == "legacy_tensorflow")).eval()
    lib = cleanfid.get_folder_features(str(image_dirs["samples"]), model, num_workers=0, batch_size=4,
                                       device=torch.device("cpu"), mode=mode, verbose=False)
    np.testing.assert_allclose(ours.pool, lib, rtol=0, atol=rounding_atol(float(np.abs(lib).max()), *INCEPTION))


def test_npz_samples_equal_folder(asset_root, image_dirs, tmp_path):
    folder = open_samples(image_dirs["samples"])
    np.savez(tmp_path / "s.npz", arr_0=np.stack([folder[i] for i in range(len(folder))]))
    extractor = load_extractor(TFID, asset_root / "torch-fidelity" / "weights-inception-2015-12-05-6726825d.pth")
    a = features_of(folder, extractor)
    b = features_of(open_samples(tmp_path / "s.npz"), extractor)
    np.testing.assert_array_equal(a.pool, b.pool)


def test_batch_size_independence(asset_root, image_dirs):
    extractor = load_extractor(TFID, asset_root / "torch-fidelity" / "weights-inception-2015-12-05-6726825d.pth")
    source = open_samples(image_dirs["samples"])
    ref = features_of(open_samples(image_dirs["reference"]), extractor)
    whole, split = extract_features(source, extractor, batch_size=10), extract_features(source, extractor, batch_size=3)
    np.testing.assert_allclose(split.pool, whole.pool, rtol=0, atol=rounding_atol(float(np.abs(whole.pool).max()), *INCEPTION))
    d_whole = fid.frechet_distance(whole.mu, whole.sigma, ref.mu, ref.sigma)
    d_split = fid.frechet_distance(split.mu, split.sigma, ref.mu, ref.sigma)
    assert rel(d_split, d_whole) < 1e-6


# The stand-in TorchScript resizes like TF inside the network; on the same weights its features
# agree with torch-fidelity's TF-compatible port, as the real files agree with TF (~1e-4).
def test_legacy_tensorflow_agrees_with_tfidelity_on_same_weights(asset_root, image_dirs):
    source = open_samples(image_dirs["samples"])
    a = features_of(source, load_extractor("clean-fid/legacy_tensorflow",
                                           asset_root / "cleanfid" / "inception-2015-12-05.pt"))
    b = features_of(source, load_extractor(TFID, asset_root / "torch-fidelity" /
                                           "weights-inception-2015-12-05-6726825d.pth"))
    np.testing.assert_allclose(a.pool, b.pool, rtol=0, atol=1e-4 * np.abs(b.pool).max())


def test_frechet_distance_matches_libraries():
    from cleanfid.fid import frechet_distance as cleanfid_fd
    from torch_fidelity.metric_fid import fid_statistics_to_metric
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400, 64)), rng.normal(size=(300, 64)) * 1.2 + 0.1
    s = [(a.mean(0), np.cov(a, rowvar=False)) for a in (x, y)]
    ours = fid.frechet_distance(s[0][0], s[0][1], s[1][0], s[1][1])
    assert rel(ours, cleanfid_fd(s[0][0], s[0][1], s[1][0], s[1][1])) < 1e-9
    tf = fid_statistics_to_metric({"mu": s[0][0], "sigma": s[0][1]}, {"mu": s[1][0], "sigma": s[1][1]}, False)
    assert rel(ours, tf["frechet_inception_distance"]) < 1e-9
    assert fid.frechet_distance(s[0][0], s[0][1], s[0][0], s[0][1]) == pytest.approx(0.0, abs=1e-9)


def test_count_and_resolution_checked(image_dirs):
    source = open_samples(image_dirs["samples"])
    with pytest.raises(ValueError, match=r"needs exactly 50000.*'imagenet256-fid-adm' accepts any count"):
        fid.evaluate(source, "imagenet256-fid50k-adm", ["fid"])
    with pytest.raises(ValueError, match="images are 32x32, protocol 'imagenet256-fid-adm' needs 256x256"):
        fid.evaluate(source, "imagenet256-fid-adm", ["fid"])
    with pytest.raises(ValueError, match="has no default reference"):
        fid.evaluate(source, "fid-legacy-tf", ["fid"])
    with pytest.raises(ValueError, match="unknown FID-protocol metrics"):
        fid.evaluate(source, "fid-legacy-tf", ["fdi"])


def test_reference_npz_mu_sigma_equals_folder(asset_root, image_dirs, tmp_path):
    source, ref = open_samples(image_dirs["samples"]), image_dirs["reference"]
    extractor = load_extractor(TFID, asset_root / "torch-fidelity" / "weights-inception-2015-12-05-6726825d.pth")
    stats = features_of(open_samples(ref), extractor)
    np.savez(tmp_path / "ref_stats.npz", mu=stats.mu, sigma=stats.sigma)
    from_folder = fid.evaluate(source, TEST_PROTOCOL, ["fid"], reference=ref)["fid"]
    from_npz = fid.evaluate(source, TEST_PROTOCOL, ["fid"], reference=tmp_path / "ref_stats.npz")["fid"]
    assert from_npz.value == pytest.approx(from_folder.value, rel=1e-12)
    assert from_npz.protocol["reference_sha256"] == sha256_file(tmp_path / "ref_stats.npz")
    assert from_npz.protocol["reference_num_images"] == "precomputed"
    with pytest.raises(ValueError, match="holds only mu/sigma; KID and PRDC need reference images"):
        fid.evaluate(source, TEST_PROTOCOL, ["kid"], reference=tmp_path / "ref_stats.npz")


# Reference statistics computed from a folder are cached under its content hash and the
# extractor's key: a changed folder gets new statistics, never the stale cached ones.
def test_reference_cache_is_content_keyed(asset_root, image_dirs, tmp_path, monkeypatch):
    folder = tmp_path / "ref"
    folder.mkdir()
    for name in sorted(p.name for p in image_dirs["reference"].iterdir())[:3]:
        (folder / name).write_bytes((image_dirs["reference"] / name).read_bytes())
    extractor = load_extractor(TFID, asset_root / "torch-fidelity" / "weights-inception-2015-12-05-6726825d.pth")
    cache = tmp_path / "cache"
    first = load_reference(folder, extractor, cache_dir=cache)
    cached = list((cache / "metrics" / "inception-features").glob("*.npz"))
    assert len(cached) == 1

    features._MEMO.clear()
    with monkeypatch.context() as m:
        m.setattr(features, "extract_features", lambda *a, **k: pytest.fail("cache not used"))
        again = load_reference(folder, extractor, cache_dir=cache)
    np.testing.assert_array_equal(again.mu, first.mu)

    from PIL import Image
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "000000.png")
    changed = load_reference(folder, extractor, cache_dir=cache)
    assert changed.sha256 != first.sha256
    assert not np.allclose(changed.mu, first.mu)
    assert len(list((cache / "metrics" / "inception-features").glob("*.npz"))) == 2


def test_array_source_matches_folder_hash_independent_of_path(image_dirs):
    folder = open_samples(image_dirs["samples"])
    arr = np.stack([folder[i] for i in range(len(folder))])
    a, b = array_samples(arr), array_samples(arr.copy())
    assert a.content_sha256() == b.content_sha256()
    arr[0, 0, 0, 0] ^= 1
    assert array_samples(arr).content_sha256() != a.content_sha256()


def test_tfidelity_kwargs_checked():
    with pytest.raises(ValueError, match="'fid_statistics_file'.*ignored silently"):
        check_tfidelity_kwargs(fid_statistics_file="adm.npz")
    with pytest.raises(ValueError, match="did you mean 'isc_splits'"):
        check_tfidelity_kwargs(isc_split=10)
    with pytest.raises(ValueError, match="mapped to float32"):
        check_tfidelity_kwargs(feature_extractor_internal_dtype="float64")
    assert check_tfidelity_kwargs(isc_splits=10, rng_seed=1) == {"isc_splits": 10, "rng_seed": 1}
    with pytest.raises(ValueError, match="unknown extractor"):
        fid.FIDProtocol("bad", "clean-fid/legacy_pytorch", None, None, None)


def test_protocol_assets_name_what_is_read():
    adm = fid.FID_PROTOCOLS.get("imagenet256-fid50k-adm")
    assert adm.assets(["fid"]) == ["inception-2015-12-05-torchscript", "adm-imagenet256-ref-batch"]
    assert adm.assets(["inception_score"]) == ["inception-2015-12-05-tfidelity"]
    assert fid.FID_PROTOCOLS.get("fid-clean").assets(["kid"]) == ["inception-2015-12-05-torchscript"]

"""The asset manifest: present / missing / corrupt, library caches linked (never searched), the
`check` command and the pre-launch check a grid runs."""
from __future__ import annotations

import hashlib

import pytest

from harness.contracts import registry
from harness.prepare.assets import main as _assets_main  # the command line
from harness.store import assets
from harness.store.assets import Asset, check_asset, check_before_launch, manifest

GOOD = b"released weights"
TEST_ASSETS = (
    Asset("test-hashed", "test/hashed.bin", "https://example.org/hashed.bin", hashlib.sha256(GOOD).hexdigest()),
    Asset("test-unhashed", "test/unhashed.bin", "https://example.org/unhashed.bin", env_var="SOFTDIMO_TEST_UNHASHED"),
    Asset("test-torch-hub", "test/hub.pth", "https://example.org/hub.pth",
          search=("{TORCH_HOME}/hub/checkpoints/hub.pth",)),
    Asset("test-hf", "test/model.pt", "hf://org/repo model.pt",
          search=("{HF_HUB_CACHE}/models--org--repo/snapshots/*/model.pt",)),
)
for _a in TEST_ASSETS:
    if _a.name not in manifest:
        manifest.register(_a.name, _a)


def test_present_missing_corrupt(asset_root):
    hashed = manifest.get("test-hashed")
    assert check_asset(hashed).state == "missing"
    path = asset_root / "test" / "hashed.bin"
    path.parent.mkdir()
    path.write_bytes(GOOD)
    assert check_asset(hashed).state == "present"
    path.write_bytes(b"truncated")
    status = check_asset(hashed)
    assert status.state == "corrupt"
    assert hashlib.sha256(b"truncated").hexdigest() in status.detail and hashed.sha256 in status.detail  # both digests
    assert check_asset(hashed, verify_hash=False).state == "present"
    with pytest.raises(assets.AssetError, match="'test-hashed' is corrupt.*https://example.org/hashed.bin"):
        assets.resolve("test-hashed")


# Copies in the upstream libraries' caches are not read; `link` puts them into the asset root.
def test_library_caches_are_linked_not_searched(asset_root, tmp_path, monkeypatch):
    hub = tmp_path / "caches" / "torch" / "hub" / "checkpoints" / "hub.pth"
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"x")
    snap = tmp_path / "caches" / "hf" / "hub" / "models--org--repo" / "snapshots" / "abc123" / "model.pt"
    snap.parent.mkdir(parents=True)
    snap.write_bytes(b"y")
    assert check_asset(manifest.get("test-torch-hub")).state == "missing"
    with pytest.raises(assets.AssetError, match="python -m harness.prepare.assets link"):
        assets.resolve("test-hf")
    assert _assets_main(["link", "--names", "test-torch-hub", "test-hf"]) == 0
    assert assets.resolve("test-torch-hub") == asset_root / "test" / "hub.pth"
    assert (asset_root / "test" / "hub.pth").resolve() == hub
    assert assets.resolve("test-hf") == asset_root / "test" / "model.pt"
    own = tmp_path / "elsewhere.bin"
    own.write_bytes(b"z")
    monkeypatch.setenv("SOFTDIMO_TEST_UNHASHED", str(own))
    assert assets.resolve("test-unhashed") == own
    monkeypatch.setenv("SOFTDIMO_TEST_UNHASHED", str(tmp_path / "nope.bin"))
    assert check_asset(manifest.get("test-unhashed")).state == "missing"  # an explicit path is not second-guessed


def test_check_before_launch_names_asset_and_source(asset_root):
    problems = check_before_launch(["test-hashed", "test-hashed", "no-such-asset"])
    assert len(problems) == 2
    assert "asset 'test-hashed' is missing" in problems[0] and "https://example.org/hashed.bin" in problems[0]
    assert "unknown asset 'no-such-asset'" in problems[1]


# A grid cell asking for the built-in ImageNet FID stops before launch when its files are absent.
def test_builtin_metric_assets_checked_before_launch(asset_root):
    entry = registry.metrics.get("fid")
    assert entry.assets == ("inception-2015-12-05-torchscript", "adm-imagenet256-ref-batch")
    problems = check_before_launch(entry.assets)
    assert len(problems) == 1                                            # the Inception file is in asset_root
    assert "'adm-imagenet256-ref-batch' is missing" in problems[0]
    assert "VIRTUAL_imagenet256_labeled.npz" in problems[0]
    hps = registry.metrics.get("hps")
    assert "hps-v2.1" in hps.assets and "hps-benchmark-photo" in hps.assets
    assert all(a in manifest for e in registry.metrics.names() for a in registry.metrics.get(e).assets)


def test_check_command(asset_root, capsys):
    (asset_root / "test").mkdir()
    (asset_root / "test" / "hashed.bin").write_bytes(GOOD)
    assert _assets_main(["check", "--names", "test-hashed"]) == 0
    assert "test-hashed" in capsys.readouterr().out
    (asset_root / "test" / "hashed.bin").write_bytes(b"bad")
    assert _assets_main(["check", "--names", "test-hashed", "test-unhashed"]) == 1
    out, err = capsys.readouterr()
    assert "corrupt" in out and "missing" in out and "2 of 2 assets need attention" in err
    assert _assets_main(["check", "--names", "test-hashed", "--no-hash"]) == 0
    assert _assets_main(["check", "--names", "nope"]) == 2


def test_offline_environment_respects_explicit_setting():
    assert assets.offline_environment({})["HF_HUB_OFFLINE"] == "1"
    assert assets.offline_environment({"HF_HUB_OFFLINE": "0"})["HF_HUB_OFFLINE"] == "0"

"""Assets are read only from the user's asset folder (or an asset's own variable), never from a
place another local user could have written; pinned files are refused when one byte changes; cache
folders the harness makes are private."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.builtin import plugins
from harness.methods.metrics import features
from harness.prepare.assets import main as assets_main
from harness.store import assets
from harness.store.assets import Asset, check_asset, manifest
from harness.store.assets.pins import LOCK_FILE
from harness.store.assets.trust import private_dir, untrusted_reason

PLANTED = b"planted by another local user"
TEST_ASSETS = (
    Asset("test-pinned", "test/pinned.bin", "https://example.org/pinned.bin", env_var="SOFTDIMO_TEST_PINNED"),
    Asset("test-published", "test/published.bin", "https://example.org/published.bin",
          sha256=hashlib.sha256(b"released").hexdigest()),
    Asset("test-prefixed", "test/prefixed.bin", "https://example.org/prefixed-1234.bin",
          sha256_prefix=hashlib.sha256(b"released").hexdigest()[:8]),
)
for _a in TEST_ASSETS:
    if _a.name not in manifest:
        manifest.register(_a.name, _a)


# A folder every user can write to, as /tmp is (sticky) or a careless shared folder is (not sticky).
def _shared(path: Path, sticky: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o1777 if sticky else 0o777)
    return path


def _plant(path: Path, content: bytes = PLANTED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


#----------------------------------------------------------------------------
# Nothing outside the asset folder is read.


# Every place a resolve used to look outside the asset root, or an upstream library caches the
# file, holds a planted file: the upstream caches of every asset's `search` templates, the temporary
# folder (clean-fid's download folder, formerly searched), each asset's file name there. With the
# asset root empty and no variable set, every asset is still missing.
def test_planted_files_outside_the_asset_folder_are_not_used(asset_root, tmp_path, monkeypatch):
    plugins.load_builtins()
    shared_tmp = _shared(tmp_path / "shared-tmp")
    monkeypatch.setenv("TMPDIR", str(shared_tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert tempfile.gettempdir() == str(shared_tmp)
    monkeypatch.setenv("SOFTDIMO_ASSETS", str(tmp_path / "empty-root"))
    variables = assets.cache_variables()
    assert all(v.startswith(str(tmp_path)) for v in variables.values())    # the conftest's cache folders
    planted = [_plant(shared_tmp / "inception-2015-12-05.pt")]
    for name, asset in manifest.items():
        if asset.env_var:
            monkeypatch.delenv(asset.env_var, raising=False)
        planted.append(_plant(shared_tmp / Path(asset.filename).name))
        for template in asset.search:
            planted.append(_plant(Path(template.format(**variables).replace("*", "planted"))))
            assert template.startswith("{"), f"{name}: a literal search path {template!r}"
    assert len(planted) > 40
    for name, asset in manifest.items():
        status = check_asset(asset)
        assert status.state == "missing", (name, status)
        assert str(status.path).startswith(str(tmp_path / "empty-root")) or Path(asset.filename).is_absolute()
        with pytest.raises(assets.AssetError, match="is missing"):
            assets.resolve(name)
    assert assets.used_assets() == {} or all(n.startswith("test-") for n in assets.used_assets())


# clean-fid opens <folder>/inception-2015-12-05.pt: a differently named weights file is linked into a
# fresh private folder, never into a predictable one under the temporary folder (where a planted
# file would have been loaded instead).
def test_cleanfid_weights_never_come_from_the_temporary_folder(inception_files, tmp_path, monkeypatch):
    shared_tmp = _shared(tmp_path / "shared-tmp")
    monkeypatch.setenv("TMPDIR", str(shared_tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    renamed = tmp_path / "weights" / "my-inception.pt"
    renamed.parent.mkdir()
    renamed.write_bytes(inception_files["torchscript"].read_bytes())
    digest = assets.sha256_file(renamed)
    trap = _plant(shared_tmp / f"softdimo-cleanfid-{digest[:16]}" / "inception-2015-12-05.pt")
    x = torch.rand(2, 3, 299, 299) * 255
    renamed_model = features.load_extractor("clean-fid/clean", renamed)
    original = features.load_extractor("clean-fid/clean", inception_files["torchscript"])
    torch.testing.assert_close(renamed_model(x)[0], original(x)[0], rtol=0, atol=0)
    assert trap.read_bytes() == PLANTED
    assert sorted(p.name for p in shared_tmp.iterdir()) == [trap.parent.name]   # the private folder is gone


# A file whose path crosses a folder every user can write to is refused, wherever it is named from.
def test_files_in_world_writable_folders_are_untrusted(asset_root, tmp_path, monkeypatch):
    sticky = _shared(tmp_path / "sticky")
    open_dir = _shared(tmp_path / "open", sticky=False)
    mine = sticky / "mine"
    mine.mkdir(mode=0o755)
    cases = {
        _plant(sticky / "x.bin"): "lies directly in",                      # anyone can create it first
        _plant(open_dir / "sub" / "x.bin"): "writable by every user",      # anyone can swap the folder
        _plant(mine / "x.bin"): None,                                      # this user's folder in /tmp
    }
    for path, reason in cases.items():
        found = untrusted_reason(path)
        assert (found is None) if reason is None else (reason in found), (path, found)
        monkeypatch.setenv("SOFTDIMO_TEST_PINNED", str(path))
        assert check_asset(manifest.get("test-pinned")).state == ("present" if reason is None else "untrusted")
    monkeypatch.delenv("SOFTDIMO_TEST_PINNED")
    # A link in the asset root pointing into a shared folder, and a world-writable file, are refused too.
    (asset_root / "test").mkdir()
    (asset_root / "test" / "pinned.bin").symlink_to(sticky / "x.bin")
    assert check_asset(manifest.get("test-pinned")).state == "untrusted"
    (asset_root / "test" / "pinned.bin").unlink()
    own = _plant(asset_root / "test" / "pinned.bin", b"mine")
    os.chmod(own, 0o666)
    status = check_asset(manifest.get("test-pinned"))
    assert status.state == "untrusted" and "writable by every user" in status.detail
    with pytest.raises(assets.AssetError, match="'test-pinned' is untrusted"):
        assets.resolve("test-pinned")
    # The asset root itself in a shared folder.
    monkeypatch.setenv("SOFTDIMO_ASSETS", str(open_dir))
    _plant(open_dir / "test" / "pinned.bin", b"mine")
    assert check_asset(manifest.get("test-pinned")).state == "untrusted"


#----------------------------------------------------------------------------
# Pinning.


def test_pinned_asset_changed_by_one_byte_is_refused_with_both_digests(asset_root, capsys):
    path = _plant(asset_root / "test" / "pinned.bin", bytes(range(256)) * 8)
    tokens = _plant(asset_root / "maskbit" / "imagenet_train_tokens_14bit.safetensors", b"tokens")
    assert check_asset(manifest.get("test-pinned")).pinned is False
    assert assets_main(["pin"]) == 0
    lock = json.loads((asset_root / LOCK_FILE).read_text())
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert lock["files"]["test/pinned.bin"]["sha256"] == before
    assert lock["files"]["test/pinned.bin"]["assets"] == ["test-pinned"]
    assert lock["files"]["maskbit/imagenet_train_tokens_14bit.safetensors"]["sha256"] == \
        hashlib.sha256(b"tokens").hexdigest()                              # a file no asset names yet
    status = check_asset(manifest.get("test-pinned"))
    assert status.state == "present" and status.pinned and status.sha256 == before
    assets.forget_used_assets()
    assert assets.resolve("test-pinned") == path
    assert assets.used_assets() == {"test-pinned": {"path": str(path), "sha256": before, "verified_by": ["pinned"]}}

    data = bytearray(path.read_bytes())
    data[1000] ^= 0x01                                                     # one bit of one byte
    path.write_bytes(bytes(data))
    after = hashlib.sha256(bytes(data)).hexdigest()
    status = check_asset(manifest.get("test-pinned"))
    assert status.state == "changed" and before in status.detail and after in status.detail
    with pytest.raises(assets.AssetError) as refused:
        assets.resolve("test-pinned")
    assert before in str(refused.value) and after in str(refused.value)
    assert "pin --update test/pinned.bin" in str(refused.value)
    # A file named by a configuration is an asset too: the pin of its path applies.
    by_path = assets.field_asset("maskbit/imagenet_train_tokens_14bit.safetensors", "maskbit_real_tokens",
                                 "teacher.real_tokens", "real tokens", (".safetensors",))
    tokens.write_bytes(b"tokenz")
    assert check_asset(manifest.get(by_path)).state == "changed"
    assert assets.check_before_launch([by_path, "test-pinned"])[1].startswith("asset 'test-pinned' is changed")

    capsys.readouterr()
    assert assets_main(["pin"]) == 1                                       # never re-pinned silently
    err = capsys.readouterr().err
    assert before in err and after in err
    assert json.loads((asset_root / LOCK_FILE).read_text()) == lock
    assert assets_main(["pin", "--update", "test-pinned"]) == 1            # the tokens file still refused
    assert assets_main(["pin", "--update", "maskbit/imagenet_train_tokens_14bit.safetensors"]) == 0
    assert check_asset(manifest.get("test-pinned")).state == "present"
    assert assets_main(["check", "--names", "test-pinned"]) == 0
    assert "pinned" in capsys.readouterr().out


# A file that differs from its publisher's digest (or digest prefix) is never pinned; a lock file
# another user could have written is not read.
def test_pin_refuses_files_that_differ_from_the_published_digest(asset_root, capsys):
    _plant(asset_root / "test" / "published.bin", b"swapped")
    _plant(asset_root / "test" / "prefixed.bin", b"swapped")
    assert assets_main(["pin", "--names", "test-published", "test-prefixed"]) == 1
    err = capsys.readouterr().err
    assert "differs from the published" in err and "does not start with the published prefix" in err
    assert not (asset_root / LOCK_FILE).exists()
    assert check_asset(manifest.get("test-prefixed")).state == "corrupt"
    _plant(asset_root / "test" / "prefixed.bin", b"released")
    assert check_asset(manifest.get("test-prefixed")).state == "present"
    assert assets_main(["pin", "--names", "test-prefixed"]) == 0
    os.chmod(asset_root / LOCK_FILE, 0o666)
    status = check_asset(manifest.get("test-prefixed"))
    assert status.state == "untrusted" and LOCK_FILE in status.detail


#----------------------------------------------------------------------------
# Private cache folders.


def test_private_dir_is_made_0700_and_refuses_shared_places(tmp_path):
    made = private_dir(tmp_path / "results" / ".cache" / "deeper")
    for folder in (made, made.parent, made.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert private_dir(made) == made                                       # an existing folder is kept
    sticky = _shared(tmp_path / "sticky")
    assert stat.S_IMODE(private_dir(sticky / "cache").stat().st_mode) == 0o700   # own folder in /tmp: fine
    with pytest.raises(PermissionError, match="writable by every user"):
        private_dir(_shared(tmp_path / "open", sticky=False) / "cache")


def test_feature_cache_of_an_evaluation_is_private(asset_root, image_dirs, tmp_path):
    from harness.cell import evaluate
    results = tmp_path / "results"
    assert evaluate.main(["--samples", str(image_dirs["samples"]), "--protocol", "fid-tfidelity",
                          "--reference", str(image_dirs["reference"]), "--results", str(results),
                          "--metrics", "fid", "--device", "cpu"]) == 0
    assert stat.S_IMODE((results / ".cache").stat().st_mode) == 0o700
    record = json.loads(next(results.rglob("record.json")).read_text())
    used = record["provenance"]["assets"]["inception-2015-12-05-tfidelity"]
    assert used["sha256"] == assets.sha256_file(asset_root / "torch-fidelity" /
                                                "weights-inception-2015-12-05-6726825d.pth")
    assert np.isfinite(record["metrics"]["fid"]["value"])

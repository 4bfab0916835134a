"""The asset manifest: every weight file and reference statistic a protocol or teacher needs.

Nothing is downloaded at run time. An asset is a file under the asset root
(`$SOFTDIMO_ASSETS`, default `~/.cache/softdimo/assets`), or at the path given by its own
environment variable, with a known sha256 where the released file's hash is known. A grid that
needs a missing or corrupt asset stops before anything is launched, naming the asset and where to
get it.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from harness.registry import Registry

#----------------------------------------------------------------------------


# One file the harness needs: where it lives, its expected hash and where to obtain it.
@dataclass(frozen=True)
class Asset:
    name: str
    filename: str                   # path relative to the asset root
    source: str                     # URL or instructions to obtain it
    sha256: str | None = None       # None: hash not published; presence (and size) checked only
    env_var: str | None = None      # an environment variable that may point at the file directly
    description: str = ""


# Status of one asset on this machine.
@dataclass(frozen=True)
class AssetStatus:
    asset: Asset
    path: Path
    state: str                      # "present", "missing" or "corrupt"
    detail: str = ""


class AssetError(RuntimeError):
    pass


manifest: Registry[Asset] = Registry("asset")


# The directory assets are looked up in.
def asset_root() -> Path:
    return Path(os.environ.get("SOFTDIMO_ASSETS", Path.home() / ".cache" / "softdimo" / "assets"))


# Where an asset is expected on this machine.
def asset_path(asset: Asset) -> Path:
    if asset.env_var and os.environ.get(asset.env_var):
        return Path(os.environ[asset.env_var])
    return asset_root() / asset.filename


# sha256 of a file, read in 1 MiB blocks.
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# Check one asset: present, missing, or corrupt (hash mismatch).
def check_asset(asset: Asset, verify_hash: bool = True) -> AssetStatus:
    path = asset_path(asset)
    if not path.is_file():
        return AssetStatus(asset, path, "missing", f"not found at {path}")
    if verify_hash and asset.sha256:
        digest = sha256_file(path)
        if digest != asset.sha256:
            return AssetStatus(asset, path, "corrupt", f"sha256 {digest[:12]}... != {asset.sha256[:12]}...")
    return AssetStatus(asset, path, "present")


# The local path of an asset, or AssetError saying what is wrong and how to obtain it.
def resolve(name: str, verify_hash: bool = True) -> Path:
    status = check_asset(manifest.get(name), verify_hash)
    if status.state != "present":
        raise AssetError(describe_problem(status))
    return status.path


# A one-paragraph message for a missing or corrupt asset.
def describe_problem(status: AssetStatus) -> str:
    a = status.asset
    where = f"${a.env_var} or " if a.env_var else ""
    return (f"asset {a.name!r} is {status.state}: {status.detail}. Obtain it from {a.source} and "
            f"place it at {where}{asset_root() / a.filename} (asset root: $SOFTDIMO_ASSETS)")

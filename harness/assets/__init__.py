"""The asset manifest: every weight file and reference statistic a protocol or teacher needs.

Nothing is downloaded at run time. An asset is a file at the path given by its own environment
variable, or under the asset root (`$SOFTDIMO_ASSETS`, default `~/.cache/softdimo/assets`), or in
the place the upstream library itself would have cached it (`search`: templates over
`$TORCH_HOME`, the Hugging Face hub cache `$HF_HUB_CACHE` / `$HF_HOME/hub`, `$HPS_ROOT`, `/tmp`),
with a known sha256 where the released file's hash is known. A grid that needs a missing or
corrupt asset stops before anything is launched (`check_before_launch`), naming the asset and
where to get it.

    python -m harness.assets check [--names NAME ...] [--no-hash]

Assets are declared next to the code that reads them (a metric module, a teacher's registration)
and registered into `manifest` when that module is imported; `field_asset` registers a file a
configuration names by path.
"""
from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from harness.registry import Registry, UnknownNameError

#----------------------------------------------------------------------------


# One file the harness needs: where it lives, its expected hash and where to obtain it.
@dataclass(frozen=True)
class Asset:
    name: str
    filename: str                   # path relative to the asset root
    source: str                     # URL or instructions to obtain it
    sha256: str | None = None       # None: hash not published; presence checked only
    env_var: str | None = None      # an environment variable that may point at the file directly
    description: str = ""
    search: tuple[str, ...] = ()    # other places to look: templates over CACHE_VARIABLES, globs allowed


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
HF_HUB = "{HF_HUB_CACHE}"           # the Hugging Face hub cache, as a `search` template


# Register assets declared by a module (a metric, a teacher) into the manifest.
def declare(*declared: Asset) -> tuple[Asset, ...]:
    for asset in declared:
        manifest.register(asset.name, asset)
    return declared


# The directory assets are looked up in.
def asset_root() -> Path:
    return Path(os.environ.get("SOFTDIMO_ASSETS", Path.home() / ".cache" / "softdimo" / "assets"))


# Cache directories of the upstream libraries, resolved from the environment as they resolve them.
def cache_variables() -> dict[str, str]:
    home = Path.home()
    xdg = Path(os.environ.get("XDG_CACHE_HOME", home / ".cache"))
    torch_home = Path(os.environ.get("TORCH_HOME", xdg / "torch"))
    hf_home = Path(os.environ.get("HF_HOME", xdg / "huggingface"))
    hf_hub = Path(os.environ.get("HF_HUB_CACHE", os.environ.get("HUGGINGFACE_HUB_CACHE", hf_home / "hub")))
    hps_root = Path(os.environ.get("HPS_ROOT", home / ".cache" / "hpsv2"))
    return {"TORCH_HOME": str(torch_home), "HF_HUB_CACHE": str(hf_hub), "HPS_ROOT": str(hps_root),
            "TMPDIR": "./" if os.name == "nt" else "/tmp"}


# Every location an asset may be found at, in lookup order (the first existing one wins).
def candidate_paths(asset: Asset) -> list[Path]:
    if asset.env_var and os.environ.get(asset.env_var):
        return [Path(os.environ[asset.env_var])]      # an explicit path is never second-guessed
    out = [asset_root() / asset.filename]
    variables = cache_variables()
    for template in asset.search:
        pattern = template.format(**variables)
        out += [Path(p) for p in sorted(glob.glob(pattern))] if any(c in pattern for c in "*?[") \
            else [Path(pattern)]
    return out


# Where an asset is on this machine (or, if nowhere, where it is expected).
def asset_path(asset: Asset) -> Path:
    candidates = candidate_paths(asset)
    return next((p for p in candidates if p.is_file()), candidates[0])


# sha256 of a file, read in 1 MiB blocks. Files of 64 MiB and more are remembered in this process
# per (path, device, inode, size, mtime), so a multi-GB asset is hashed once however often it is
# verified and recorded (small files are always read: a same-size rewrite within the file system's
# timestamp granularity would otherwise go unseen).
def sha256_file(path: Path) -> str:
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if st.st_size >= _REMEMBER_FROM:
        _DIGESTS[key] = h.hexdigest()
    return h.hexdigest()


_DIGESTS: dict[tuple, str] = {}
_REMEMBER_FROM = 64 << 20


# Check one asset: present, missing, or corrupt (hash mismatch).
def check_asset(asset: Asset, verify_hash: bool = True) -> AssetStatus:
    path = asset_path(asset)
    if not path.is_file():
        others = [str(p) for p in candidate_paths(asset)[1:]] + [t.format(**cache_variables()) for t in asset.search
                                                                if any(c in t for c in "*?[")]
        also = f" (also looked in {', '.join(dict.fromkeys(others))})" if others else ""
        return AssetStatus(asset, path, "missing", f"not found at {path}{also}")
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


# Problems (one line each) with the named assets; empty when all are present and intact. The run
# command calls this before submitting anything.
def check_before_launch(asset_names: list[str] | tuple[str, ...], verify_hash: bool = True) -> list[str]:
    problems = []
    for name in dict.fromkeys(asset_names):
        try:
            asset = manifest.get(name)
        except UnknownNameError as e:
            problems.append(str(e))
            continue
        status = check_asset(asset, verify_hash)
        if status.state != "present":
            problems.append(describe_problem(status))
    return problems


# Environment for code that could reach the Hugging Face hub: offline unless the user said otherwise.
def offline_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


# The asset behind a configuration field that names a file: `value` is a registered asset's name,
# or a file path (absolute, or relative to the asset root), registered on first use under
# `<prefix>_file_<hash>` so that the pre-launch check names it; `field` and `description` name it
# in messages; `suffixes` tell a path from a misspelt asset name (the known names share the
# prefix's first word).
def field_asset(value: str, prefix: str, field: str, description: str, suffixes: tuple[str, ...]) -> str:
    if value in manifest:
        return value
    if "/" not in value and not value.endswith(suffixes):
        known = [n for n in manifest.names() if n.startswith(prefix.split("_")[0] + "_")]
        raise ValueError(f"{field}: {value!r} is neither a registered asset ({', '.join(known)}) nor a file "
                         f"path (containing '/' or ending in {', '.join(suffixes)})")
    name = f"{prefix}_file_{hashlib.sha256(value.encode()).hexdigest()[:12]}"
    if name not in manifest:
        manifest.register(name, Asset(name=name, filename=os.path.expanduser(value),
                                      source=f"the file named by {field} ({value})", description=description))
    return name

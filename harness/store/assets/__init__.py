"""The asset manifest: every weight file and reference statistic a protocol or teacher needs.

Nothing is downloaded at run time. An asset is read from exactly one place: the path in its own
environment variable when that is set, else `<asset root>/<filename>` (the asset root is
`$SOFTDIMO_ASSETS`, default `~/.cache/softdimo/assets`). A file in a place another local user could
have written or swapped (a world-writable folder such as `/tmp`, `trust.py`) is refused. Where the
publisher gives a file's sha256 (or, in a torch.hub file name, its first hex digits) the manifest
holds it; `python -m harness.prepare.assets pin` records the sha256 of every file the user placed into
`<asset root>/assets.lock.json` (`pins.py`), and every later resolve hashes the file and refuses a
mismatch with both digests. A grid that needs a missing, corrupt, changed or untrusted asset stops
before anything is launched (`check_before_launch`), naming the asset and where to get it. Each
resolved asset's path and sha256 are remembered (`used_assets`) for the record's provenance.

Where the upstream libraries cache a file (torch.hub, the Hugging Face hub cache, HPS's root) is
listed per asset (`search`) but never read by a resolve: `python -m harness.prepare.assets link` links such
copies into the asset root, where they are then pinned like any other file.

    python -m harness.prepare.assets check [--names NAME ...] [--no-hash]
    python -m harness.prepare.assets link [--names NAME ...]
    python -m harness.prepare.assets pin [--names NAME ...] [--files PATH ...] [--update KEY ...]

Assets are declared next to the code that reads them (a metric module, a teacher's registration)
and registered into `manifest` when that module is imported; `field_asset` registers a file a
configuration names by path.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.contracts.registry import Registry, UnknownNameError
from harness.store.assets.pins import LockFileError, pin_key, read_pins
from harness.store.assets.trust import untrusted_reason

#----------------------------------------------------------------------------


# One file the harness needs: where it lives, its expected hash and where to obtain it.
@dataclass(frozen=True)
class Asset:
    name: str
    filename: str                   # path relative to the asset root (absolute: a file named by a config)
    source: str                     # URL or instructions to obtain it
    sha256: str | None = None       # the publisher's sha256; None: not published (pin it)
    env_var: str | None = None      # an environment variable that may point at the file directly
    description: str = ""
    search: tuple[str, ...] = ()    # where upstream libraries cache it (templates over cache_variables(),
                                    # globs allowed): read only by `python -m harness.prepare.assets link`
    sha256_prefix: str | None = None  # leading hex digits of the sha256 the publisher's file name carries


# Status of one asset on this machine.
@dataclass(frozen=True)
class AssetStatus:
    asset: Asset
    path: Path
    state: str                      # one of STATES
    detail: str = ""
    sha256: str | None = None       # of the file, when it was hashed
    pinned: bool = False            # the lock file holds this file's sha256 (and it matched)


# present: usable; missing: no file; corrupt: differs from the publisher's sha256; changed: differs
# from the pinned sha256; untrusted: another local user could have put or swapped it there.
STATES = ("present", "missing", "corrupt", "changed", "untrusted")


class AssetError(RuntimeError):
    pass


manifest: Registry[Asset] = Registry("asset")
HF_HUB = "{HF_HUB_CACHE}"           # the Hugging Face hub cache, as a `search` template
_USED: dict[str, dict[str, Any]] = {}


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
    return {"TORCH_HOME": str(torch_home), "HF_HUB_CACHE": str(hf_hub), "HPS_ROOT": str(hps_root)}


# The one place an asset is read from: its variable's path when set (never second-guessed), else
# its file under the asset root.
def asset_path(asset: Asset) -> Path:
    if asset.env_var and os.environ.get(asset.env_var):
        return Path(os.path.expanduser(os.environ[asset.env_var]))
    return asset_root() / os.path.expanduser(asset.filename)


# Copies of an asset in the upstream libraries' caches (`search`), in order; never read by a resolve.
def library_copies(asset: Asset) -> list[Path]:
    out: list[Path] = []
    variables = cache_variables()
    for template in asset.search:
        pattern = template.format(**variables)
        found = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        out += [Path(p) for p in found if Path(p).is_file()]
    return out


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


# The publisher's digest check of a file's sha256: None when it agrees (or none is published), else
# the problem with both digests.
def published_mismatch(asset: Asset, digest: str) -> str | None:
    if asset.sha256 and digest != asset.sha256:
        return f"sha256 {digest} differs from the published {asset.sha256}"
    if asset.sha256_prefix and not digest.startswith(asset.sha256_prefix):
        return (f"sha256 {digest} does not start with the published prefix {asset.sha256_prefix} (the "
                f"digits in the released file's name)")
    return None


# Check one asset: present, missing, corrupt, changed since pinned, or untrusted (see STATES).
# `verify_hash=False` only looks (no hashing: neither published nor pinned digests are checked).
def check_asset(asset: Asset, verify_hash: bool = True) -> AssetStatus:
    path = asset_path(asset)
    if not path.is_file():
        return AssetStatus(asset, path, "missing", f"not found at {path}")
    reason = untrusted_reason(path)
    if reason is not None:
        return AssetStatus(asset, path, "untrusted", f"{path} is not used because {reason}")
    if not verify_hash:
        return AssetStatus(asset, path, "present")
    try:
        pin = read_pins(asset_root()).get(pin_key(path, asset_root()))
    except LockFileError as e:
        return AssetStatus(asset, path, "untrusted", str(e))
    digest = sha256_file(path)
    problem = published_mismatch(asset, digest)
    if problem is not None:
        return AssetStatus(asset, path, "corrupt", f"{path}: {problem}", digest)
    if pin is not None and pin.sha256 != digest:
        return AssetStatus(asset, path, "changed", f"{path}: sha256 {digest} differs from the pinned {pin.sha256} "
                           f"(pinned {pin.pinned}); if the new file is intended, pin it again with "
                           f"`python -m harness.prepare.assets pin --update {pin_key(path, asset_root())}`", digest)
    return AssetStatus(asset, path, "present", "", digest, pinned=pin is not None)


# The local path of an asset (its file checked against the published and pinned digests), or
# AssetError saying what is wrong and how to fix it. The path and sha256 are remembered for the
# provenance of the run (`used_assets`).
def resolve(name: str) -> Path:
    status = check_asset(manifest.get(name))
    if status.state != "present":
        raise AssetError(describe_problem(status))
    _USED[name] = {"path": str(status.path), "sha256": status.sha256, "verified_by": verified_by(status)}
    return status.path


# Which digests a present asset was checked against: "published", "pinned"; empty when neither.
def verified_by(status: AssetStatus) -> list[str]:
    a = status.asset
    return [*(["published"] if a.sha256 or a.sha256_prefix else []), *(["pinned"] if status.pinned else [])]


# The assets resolved in this process since `forget_used_assets` ({name: path, sha256, verified_by}).
def used_assets() -> dict[str, dict[str, Any]]:
    return {name: dict(entry) for name, entry in sorted(_USED.items())}


# Start a new record of the assets used (a cell calls this before it runs).
def forget_used_assets() -> None:
    _USED.clear()


# A one-paragraph message for an asset that cannot be used.
def describe_problem(status: AssetStatus) -> str:
    a = status.asset
    where = f"${a.env_var} or " if a.env_var else ""
    fix = (f"Obtain it from {a.source} and place it at {where}{asset_root() / os.path.expanduser(a.filename)} "
           f"(asset root: $SOFTDIMO_ASSETS)")
    if status.state == "missing" and a.search:
        fix += "; a copy an upstream library already downloaded is linked in by `python -m harness.prepare.assets link`"
    return f"asset {a.name!r} is {status.state}: {status.detail}. {fix}"


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


# Let a stand-in file (seeded random weights in a released file's format: benchmarks at small size)
# serve as the asset `name` in this process: the entry takes the stand-in's sha256 in place of the
# publisher's digests, so the check still runs. Returns the entry it replaced.
def accept_stand_in(name: str, path: Path) -> Asset:
    old = manifest.get(name)
    with manifest._lock:
        manifest._entries[name] = dataclasses.replace(old, sha256=sha256_file(path), sha256_prefix=None)
    return old


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

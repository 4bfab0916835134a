"""The asset manifest: every weight file and reference statistic a protocol or teacher needs.

Nothing is downloaded at run time. An asset is a file at the path given by its own environment
variable, or under the asset root (`$SOFTDIMO_ASSETS`, default `~/.cache/softdimo/assets`), or in
the place the upstream library itself would have cached it (`search`: templates over
`$TORCH_HOME`, the Hugging Face hub cache `$HF_HUB_CACHE` / `$HF_HOME/hub`, `$HPS_ROOT`, `/tmp`),
with a known sha256 where the released file's hash is known. A grid that needs a missing or
corrupt asset stops before anything is launched (`check_before_launch`), naming the asset and
where to get it.

    python -m harness.assets check [--names NAME ...] [--no-hash]
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import os
import sys
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


#----------------------------------------------------------------------------
# The metric assets of the paper-scale protocols (ECOSYSTEM.md sections 3-7 and 9). sha256 is
# None where the publisher gives none; protocols then record the digest of the file they used.

_HF = "{HF_HUB_CACHE}"
METRIC_ASSETS = (
    Asset("inception-2015-12-05-torchscript", "cleanfid/inception-2015-12-05.pt",
          "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
          env_var="SOFTDIMO_INCEPTION_TORCHSCRIPT", search=("{TMPDIR}/inception-2015-12-05.pt",),
          description="TF-2015 Inception-v3 as TorchScript (StyleGAN2-ADA); clean-fid's feature extractor"),
    Asset("inception-2015-12-05-tfidelity", "torch-fidelity/weights-inception-2015-12-05-6726825d.pth",
          "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
          env_var="SOFTDIMO_INCEPTION_TFIDELITY",
          search=("{TORCH_HOME}/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth",),
          description="TF-2015 Inception-v3 state dict for torch-fidelity's inception-v3-compat"),
    Asset("adm-imagenet256-ref-batch", "adm/VIRTUAL_imagenet256_labeled.npz",
          "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/256/VIRTUAL_imagenet256_labeled.npz",
          env_var="SOFTDIMO_ADM_IMAGENET256",
          description="ADM ImageNet-256 reference batch: mu/sigma (FID) and 10k images arr_0 (PRDC)"),
    Asset("hps-v2.0", "hpsv2/HPS_v2_compressed.pt",
          "https://huggingface.co/xswu/HPSv2/resolve/main/HPS_v2_compressed.pt",
          env_var="SOFTDIMO_HPS_V20",
          search=("{HPS_ROOT}/HPS_v2_compressed.pt", _HF + "/models--xswu--HPSv2/snapshots/*/HPS_v2_compressed.pt"),
          description="HPS v2.0 checkpoint ({'state_dict'} of open_clip ViT-H-14)"),
    Asset("hps-v2.1", "hpsv2/HPS_v2.1_compressed.pt",
          "https://huggingface.co/xswu/HPSv2/resolve/main/HPS_v2.1_compressed.pt",
          env_var="SOFTDIMO_HPS_V21",
          search=("{HPS_ROOT}/HPS_v2.1_compressed.pt", _HF + "/models--xswu--HPSv2/snapshots/*/HPS_v2.1_compressed.pt"),
          description="HPS v2.1 checkpoint ({'state_dict'} of open_clip ViT-H-14)"),
    *(Asset(f"hps-benchmark-{style}", f"hpsv2/benchmark/{style}.json",
            f"https://huggingface.co/datasets/zhwang/HPDv2/resolve/main/benchmark/{style}.json",
            search=(f"{{HPS_ROOT}}/datasets/benchmark/{style}.json",
                    _HF + f"/datasets--zhwang--HPDv2/snapshots/*/benchmark/{style}.json"),
            description=f"HPS v2 benchmark prompts, style {style} (800 prompts)")
      for style in ("anime", "concept-art", "paintings", "photo")),
    Asset("clip-vit-g-14-laion2b-s12b-b42k", "open_clip/ViT-g-14-laion2b_s12b_b42k.bin",
          "https://huggingface.co/laion/CLIP-ViT-g-14-laion2B-s12B-b42K/resolve/main/open_clip_pytorch_model.bin",
          env_var="SOFTDIMO_CLIP_VIT_G_14",
          search=(_HF + "/models--laion--CLIP-ViT-g-14-laion2B-s12B-b42K/snapshots/*/open_clip_pytorch_model.bin",),
          description="open_clip ViT-g-14 (laion2b_s12b_b42k): the CLIP score of GigaGAN / Di[M]O's COCO eval"),
    Asset("geneval-mask2former", "geneval/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth",
          "https://download.openmmlab.com/mmdetection/v2.0/mask2former/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco/"
          "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth "
          "(or GenEval's evaluation/download_models.sh <dir>)",
          env_var="SOFTDIMO_GENEVAL_DETECTOR",
          description="GenEval's Mask2Former Swin-S detector (read by GenEval's own environment)"),
)

for _asset in METRIC_ASSETS:
    manifest.register(_asset.name, _asset)


#----------------------------------------------------------------------------
# Command line: `python -m harness.assets check [--names ...] [--no-hash]`.


# Print the state of the named assets (all registered ones by default); exit status 1 on problems.
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.assets", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="list assets as present / missing / corrupt")
    check.add_argument("--names", nargs="+", metavar="NAME", help="assets to check (default: all)")
    check.add_argument("--no-hash", action="store_true", help="skip sha256 verification")
    args = parser.parse_args(argv)

    _load_builtin_assets()
    try:
        assets = [manifest.get(n) for n in args.names] if args.names else [a for _, a in manifest.items()]
    except UnknownNameError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    statuses = [check_asset(a, verify_hash=not args.no_hash) for a in assets]
    width = max((len(s.asset.name) for s in statuses), default=4)
    for s in statuses:
        note = "" if s.asset.sha256 or s.state != "present" else "  (no published sha256)"
        print(f"{s.asset.name:<{width}}  {s.state:<7}  {s.path}{note}")
    problems = [describe_problem(s) for s in statuses if s.state != "present"]
    if problems:
        print(f"\n{len(problems)} of {len(statuses)} assets need attention:", file=sys.stderr)
        for p in problems:
            print(f"- {p}", file=sys.stderr)
    return 1 if problems else 0


# Teachers and metrics register their own assets when the built-in entries are imported.
def _load_builtin_assets() -> None:
    import harness.builtin  # noqa: F401


if __name__ == "__main__":
    # Run the canonical module's `main`, so that assets registered into `harness.assets.manifest`
    # by the built-in entries are the ones listed (not this `__main__` copy's).
    from harness.assets import main as _main
    sys.exit(_main())

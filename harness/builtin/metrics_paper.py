"""The paper-scale metrics (docs/metrics.md): ImageNet-256 FID / IS / KID / PRDC under the ADM protocol
for the class-conditional teachers; HPS v2.1 / v2.0, GenEval and CLIP score for the text-to-image
teachers. Each entry reads the run's samples (`EvalInput.samples`, written by harness.methods.samples, or
the in-memory images converted with `harness.methods.samples.to_uint8`) and returns values with protocols.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.contracts import registry
from harness.contracts.entries import EvalInput, MetricEntry, MetricValue, RewardEntry, RunContext, per_image_metric
from harness.methods.metrics import clip_score, fid, geneval, hps
from harness.methods.samples import UINT8_CONVERSION, SampleSource, array_samples, open_samples, to_uint8
from harness.store import assets

CLASS_TO_IMAGE = ("maskbit", "maskgit")
TEXT_TO_IMAGE = ("maskgen", "meissonic")
IMAGENET_FID50K, IMAGENET_FID_ANY = "imagenet256-fid50k-adm", "imagenet256-fid-adm"
CLIP_COCO30K, CLIP_ANY = "coco30k-clipscore-gigagan", "clipscore-gigagan"

#----------------------------------------------------------------------------
# Inputs.


# The run's samples as a SampleSource, and what is known about how they were made.
def samples_of(inp: EvalInput) -> tuple[SampleSource, dict[str, Any]]:
    if isinstance(inp.samples, SampleSource):
        return inp.samples, {"uint8_conversion": UINT8_CONVERSION}
    if inp.samples is not None:
        path = Path(inp.samples)
        manifest = (path if path.is_dir() else path.parent) / "manifest.json"
        meta = json.loads(manifest.read_text()) if manifest.is_file() else {}
        return open_samples(path), meta
    return array_samples(to_uint8(inp.images), "images"), {"uint8_conversion": UINT8_CONVERSION}


def _prompts(inp: EvalInput) -> list[str]:
    return [str(c) for c in inp.conditions]


#----------------------------------------------------------------------------
# ImageNet-256: FID, IS, KID, PRDC (the 50k protocol when there are exactly 50,000 samples).


# ImageNet-256 `metric` as a per-image metric: each batch's Inception features (or logits) where
# it was made, the statistic from all of them on rank 0.
def _imagenet(metric: str, **fields: Any) -> MetricEntry:
    def protocol(inp: EvalInput) -> str:
        return IMAGENET_FID50K if inp.total == 50_000 else IMAGENET_FID_ANY

    def extract(inp: EvalInput, ctx: RunContext) -> dict[str, np.ndarray]:
        return fid.extract(samples_of(inp)[0], protocol(inp), [metric], device=ctx.device)

    def reduce(inp: EvalInput, arrays: dict[str, np.ndarray], ctx: RunContext) -> dict[str, MetricValue]:
        return fid.evaluate_features(arrays, protocol(inp), [metric], device=ctx.device, cache_dir=ctx.cache_dir,
                                     sample_meta={"uint8_conversion": UINT8_CONVERSION})
    return per_image_metric(metric, extract, reduce, **fields)


#----------------------------------------------------------------------------
# Text-to-image: HPS, GenEval, CLIP score.


# HPS of the run's (image, prompt) pairs: the benchmark protocol (JPEG layout, per-style values)
# when the prompts are the 4 x 800 benchmark prompts in style order, otherwise a pairs protocol.
def _hps(version: str) -> Callable[[EvalInput, RunContext], dict[str, MetricValue]]:
    def compute(inp: EvalInput, ctx: RunContext) -> dict[str, MetricValue]:
        source, _ = samples_of(inp)
        prompts = _prompts(inp)
        scorer = hps.load_hps(version, ctx.device, arch=hps.HPS_ARCH)
        bench = {style: hps.benchmark_prompts(style) for style in hps.HPS_STYLES}
        if prompts == [p for style in hps.HPS_STYLES for p in bench[style]]:
            images, start = {}, 0
            for style in hps.HPS_STYLES:
                images[style] = [source[i] for i in range(start, start + len(bench[style]))]
                start += len(bench[style])
            root = hps.write_benchmark_layout(ctx.run_dir / f"hps_benchmark_{version}", images, bench)
            values = hps.evaluate_benchmark(root, scorer, bench)
        else:
            values = {"hps": hps.score_pairs(source, prompts, scorer)}
        return values if version == "v2.1" else {k.replace("hps", "hps_v2.0", 1): v for k, v in values.items()}
    return compute


# GenEval of the run's images of the 553 GenEval prompts x 4 (conditions[4 i + j] = prompt i).
def _geneval(inp: EvalInput, ctx: RunContext) -> dict[str, MetricValue]:
    config = geneval.GenEvalConfig.from_env()
    metadata = geneval.read_metadata(config.metadata_path)
    expected = [m["prompt"] for m in metadata for _ in range(geneval.IMAGES_PER_PROMPT)]
    prompts = _prompts(inp)
    if prompts != expected:
        raise ValueError(f"GenEval needs images of its {len(metadata)} prompts x {geneval.IMAGES_PER_PROMPT} "
                         f"in order (condition 4i+j = prompt i of {config.metadata_path}); got "
                         f"{len(prompts)} conditions")
    source, _ = samples_of(inp)
    layout = geneval.write_layout(ctx.run_dir / "geneval" / "images", metadata, source)
    return geneval.evaluate(layout, config, ctx.run_dir / "geneval")


# CLIP score, per image where the image was made (its cosine), the mean on rank 0.
def _clip_protocol(inp: EvalInput) -> clip_score.CLIPScoreProtocol:
    return clip_score.CLIP_PROTOCOLS.get(CLIP_COCO30K if inp.total == 30_000 else CLIP_ANY)


def _clip_model(protocol: clip_score.CLIPScoreProtocol, ctx: RunContext) -> clip_score.CLIPModel:
    return clip_score.load_clip(protocol.arch, assets.resolve(protocol.weights_asset), ctx.device)


def _clip_extract(inp: EvalInput, ctx: RunContext) -> dict[str, np.ndarray]:
    protocol = _clip_protocol(inp)
    source, _ = samples_of(inp)
    return {"cosine": clip_score.clip_cosines(_clip_model(protocol, ctx), source, _prompts(inp), protocol.prefix,
                                              protocol.resize)}


def _clip_reduce(inp: EvalInput, arrays: dict[str, np.ndarray], ctx: RunContext) -> dict[str, MetricValue]:
    protocol = _clip_protocol(inp)
    return {"clip_score": clip_score.clip_score_value(arrays["cosine"], protocol, _clip_model(protocol, ctx))}


#----------------------------------------------------------------------------
# Registration.

_ADM = fid.FID_PROTOCOLS.get(IMAGENET_FID50K)
for _name, _desc in (
        ("fid", "FID vs the ADM ImageNet-256 mu/sigma, clean-fid legacy_tensorflow (50k: the paper's)"),
        ("inception_score", "Inception Score, torch-fidelity (10 splits, seed 2020)"),
        ("kid", "KID vs the ADM 10k reference images, legacy_tensorflow features"),
        ("prdc", "precision / recall / density / coverage (Naeem et al., k=3) vs the ADM 10k images")):
    registry.metrics.register(_name, _imagenet(_name, applies_to=CLASS_TO_IMAGE, description=_desc,
                                               assets=tuple(_ADM.assets([_name]))))

_HPS_ASSETS = tuple(f"hps-benchmark-{s}" for s in hps.HPS_STYLES)
registry.metrics.register("hps", MetricEntry(
    "hps", _hps("v2.1"), applies_to=TEXT_TO_IMAGE, assets=(hps.HPS_VERSIONS["v2.1"], *_HPS_ASSETS), reward="hps_v2",
    description="HPS v2.1 x100 (Soft-Di[M]O's); per style on the 4 x 800 benchmark prompts"))
registry.metrics.register("hps_v2.0", MetricEntry(
    "hps_v2.0", _hps("v2.0"), applies_to=TEXT_TO_IMAGE, assets=(hps.HPS_VERSIONS["v2.0"], *_HPS_ASSETS),
    description="HPS v2.0 x100 (Di[M]O's table); per style on the 4 x 800 benchmark prompts"))
registry.metrics.register("geneval", MetricEntry(
    "geneval", _geneval, applies_to=TEXT_TO_IMAGE, assets=("geneval-mask2former",),
    description="GenEval overall and per task (553 prompts x 4), run in GenEval's own environment"))
registry.metrics.register("clip_score", per_image_metric(
    "clip_score", _clip_extract, _clip_reduce, applies_to=TEXT_TO_IMAGE, reward="clip_score",
    assets=(clip_score.CLIP_PROTOCOLS.get(CLIP_ANY).weights_asset,),
    description="CLIP score (GigaGAN's: ViT-g-14, 'A photo depicts ' prefix, raw cosine)"))

# Rewards for reward fine-tuning, TTEO and best-of-N at paper scale (docs/refinements.md).
registry.rewards.register("clip_score", RewardEntry(
    "clip_score", lambda teacher, ctx: clip_score.build_clip_reward(CLIP_ANY, ctx.device),
    applies_to=TEXT_TO_IMAGE, assets=(clip_score.CLIP_PROTOCOLS.get(CLIP_ANY).weights_asset,), unit=100.0,
    description="100 x CLIP cosine (ViT-g-14, 'A photo depicts ' prefix), differentiable"))
registry.rewards.register("hps_v2", RewardEntry(
    "hps_v2", lambda teacher, ctx: hps.HPSReward(hps.load_hps("v2.1", ctx.device)),
    applies_to=TEXT_TO_IMAGE, assets=(hps.HPS_VERSIONS["v2.1"],), unit=100.0,
    description="HPS v2.1 x100, differentiable (HPS's transform on tensors)"))

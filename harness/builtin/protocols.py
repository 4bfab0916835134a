"""Registers the protocol families `python -m harness.cell.evaluate` scores outside sample sets under, each
once under every protocol name it has (`registry.protocols`):

- `fid` (`harness.methods.metrics.fid.FID_PROTOCOLS`): images (folder, npz, zip); FID, IS, KID, PRDC against
  the protocol's or a given reference; text-to-image ones check `--captions` against their prompts;
- `hps` (`harness.methods.metrics.hps.BENCHMARK_PROTOCOLS`): the HPS v2 benchmark layout;
- `geneval`: a GenEval image folder, scored by GenEval's own evaluator;
- `clip` (`harness.methods.metrics.clip_score.CLIP_PROTOCOLS`): images and their captions;
- `mini` (`harness.methods.mini_protocols.MINI_PROTOCOLS`): the mini worlds, scored as grid runs are.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.contracts import registry
from harness.contracts.entries import EvalRequest, MetricValue, ProtocolFamily
from harness.contracts.run_spec import CellError
from harness.methods import mini_protocols
from harness.methods.environment import cache_dir, run_context
from harness.methods.metrics import clip_score, fid, geneval, hps, t2i_prompts
from harness.methods.samples import open_samples
from harness.store import assets
from harness.store.assets.trust import private_dir
from softdimo.teachers.text_conditioned import read_prompts

#----------------------------------------------------------------------------
# How sample sets are identified.


# sha256 of every file of a layout tree (paths and contents).
def tree_sha256(path: Path) -> str:
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: expected a folder")
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{assets.sha256_file(f)}\n".encode())
    return h.hexdigest()


# sha256 of the images of a folder, npz or zip (`harness.methods.samples`).
def images_sha256(path: Path) -> str:
    return open_samples(path).content_sha256()


#----------------------------------------------------------------------------
# FID, IS, KID, PRDC.


def _fid_identity(request: EvalRequest) -> dict[str, Any]:
    ident: dict[str, Any] = {"metrics": sorted(request.metrics) if request.metrics else None}
    if request.reference:
        ident["reference_sha256"] = images_sha256(request.reference)
    return ident


def _fid_check(request: EvalRequest) -> list[str]:
    protocol = fid.FID_PROTOCOLS.get(request.protocol)
    problems = [f"--metrics {m!r}: allowed {', '.join(fid.FID_METRICS)}" for m in request.metrics
                if m not in fid.FID_METRICS]
    if not request.reference and protocol.reference is None:
        problems.append(f"protocol {request.protocol!r} has no default reference: pass --reference")
    if request.captions and not protocol.prompts:
        with_prompts = [n for n, p in fid.FID_PROTOCOLS.items() if p.prompts]
        problems.append(f"--captions: protocol {request.protocol!r} has no prompt set (those with one: "
                        f"{', '.join(with_prompts)})")
    return problems


# Problems with the --captions of a text-to-image FID evaluation: one prompt per sample, and the
# protocol's prompts in order.
def _fid_check_captions(request: EvalRequest) -> list[str]:
    if not request.captions:
        return []
    try:
        captions = read_prompts(request.captions, "--captions")
        n = len(open_samples(request.samples))
        if len(captions) != n:
            return [f"--captions {request.captions}: {len(captions)} prompts for {n} samples"]
        t2i_prompts.check_prompts(captions, fid.FID_PROTOCOLS.get(request.protocol).prompts)
    except (ValueError, FileNotFoundError) as e:
        return [f"--captions {request.captions}: {e}"]
    return []


def _fid_assets(request: EvalRequest) -> list[str]:
    protocol = fid.FID_PROTOCOLS.get(request.protocol)
    names = protocol.assets(request.metrics or fid.FID_METRICS)
    names = [n for n in names if n != protocol.reference] if request.reference else names
    if request.captions and protocol.prompts:
        names.append(t2i_prompts.PROMPT_SETS[protocol.prompts].asset)
    return names


# Default metrics: every one the reference can give (KID / PRDC need reference images).
def _fid_default_metrics(request: EvalRequest) -> list[str]:
    protocol = fid.FID_PROTOCOLS.get(request.protocol)
    ref = request.reference or (assets.resolve(protocol.reference) if protocol.reference else None)
    if ref is not None and ref.is_file() and ref.suffix == ".npz":
        with np.load(ref) as data:
            if {"mu", "sigma"} <= set(data.files) and "arr_0" not in data.files:
                print(f"note: {ref} holds only mu/sigma: computing fid and inception_score (KID and PRDC "
                      f"need reference images)", file=sys.stderr)
                return ["fid", "inception_score"]
    return list(fid.FID_METRICS)


def _fid_compute(request: EvalRequest, run_dir: Path) -> tuple[dict[str, MetricValue], int]:
    source = open_samples(request.samples)
    folder = request.samples if request.samples.is_dir() else request.samples.parent
    meta = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").is_file() else {}
    values = fid.evaluate(source, request.protocol, request.metrics or _fid_default_metrics(request),
                          request.reference, request.reference_name, torch.device(request.device),
                          request.batch_size, request.num_workers, private_dir(cache_dir(request.results)), meta)
    if request.captions:                       # checked against the protocol's prompt set before
        prompt_set = fid.FID_PROTOCOLS.get(request.protocol).prompts
        digest = assets.sha256_file(assets.resolve(t2i_prompts.PROMPT_SETS[prompt_set].asset))
        for value in values.values():
            value.protocol.update(prompts=prompt_set, prompts_sha256=digest)
    return values, len(source)


FID = ProtocolFamily(
    "fid", _fid_compute, images_sha256, options=("metrics", "reference", "captions"), check=_fid_check,
    check_samples=_fid_check_captions, assets=_fid_assets, identity=_fid_identity,
    description="FID, IS, KID, PRDC of images against the protocol's (or a given) reference")

#----------------------------------------------------------------------------
# HPS v2 benchmark, GenEval, CLIP score.


def _hps_compute(request: EvalRequest, run_dir: Path) -> tuple[dict[str, MetricValue], int]:
    scorer = hps.load_hps(hps.BENCHMARK_PROTOCOLS[request.protocol], torch.device(request.device))
    values = hps.evaluate_benchmark(request.samples, scorer, batch_size=request.batch_size)
    return values, values["hps"].protocol["prompts_per_style"] * len(hps.HPS_STYLES)


HPS = ProtocolFamily(
    "hps", _hps_compute, tree_sha256,
    assets=lambda request: [hps.HPS_VERSIONS[hps.BENCHMARK_PROTOCOLS[request.protocol]]]
    + [f"hps-benchmark-{s}" for s in hps.HPS_STYLES],
    description="HPS v2 x100 per style and their average, on the benchmark's <style>/<idx:05d>.jpg layout")


def _geneval_config(request: EvalRequest) -> geneval.GenEvalConfig:
    return geneval.GenEvalConfig.from_env(request.geneval_dir, request.geneval_python)


def _geneval_check(request: EvalRequest) -> list[str]:
    try:
        config = _geneval_config(request)
    except ValueError as e:
        return [str(e)]
    if not config.metadata_path.is_file():
        return [f"{config.metadata_path}: GenEval prompt metadata not found (--geneval-dir)"]
    return []


def _geneval_compute(request: EvalRequest, run_dir: Path) -> tuple[dict[str, MetricValue], int]:
    values = geneval.evaluate(request.samples, _geneval_config(request), run_dir / "geneval")
    return values, values["geneval"].protocol["num_samples"]


GENEVAL = ProtocolFamily(
    "geneval", _geneval_compute, tree_sha256, options=("geneval_dir", "geneval_python"), check=_geneval_check,
    assets=lambda request: ["geneval-mask2former"]
    if any("{detector_dir}" in part for part in _geneval_config(request).command) else [],
    description="GenEval overall and per-task accuracy of a GenEval image folder, by GenEval's evaluator")


def _clip_compute(request: EvalRequest, run_dir: Path) -> tuple[dict[str, MetricValue], int]:
    source = open_samples(request.samples)
    captions = request.captions.read_text().splitlines()
    value = clip_score.clip_score(source, captions, request.protocol, request.weights, torch.device(request.device),
                                  request.batch_size)
    return {"clip_score": value}, len(source)


CLIP = ProtocolFamily(
    "clip", _clip_compute, images_sha256, options=("captions", "weights"),
    check=lambda request: [] if request.captions else
    [f"protocol {request.protocol!r} needs --captions FILE (one caption per line)"],
    assets=lambda request: [] if request.weights else [clip_score.CLIP_PROTOCOLS.get(request.protocol).weights_asset],
    identity=lambda request: {"weights_sha256": assets.sha256_file(request.weights)} if request.weights else {},
    description="CLIP score of images and their captions")

#----------------------------------------------------------------------------
# The mini worlds.


def _mini_levels(request: EvalRequest) -> int:
    return mini_protocols.DEFAULT_LEVELS if request.levels is None else request.levels


# A mini protocol's input and options: the arrays (read and checked), the metrics and levels.
def _mini_check_samples(request: EvalRequest) -> list[str]:
    try:
        images, _ = mini_protocols.MINI_PROTOCOLS[request.protocol].read(request.samples)
        mini_protocols.protocol_spec(request.protocol, len(images), _mini_levels(request), request.metrics)
    except mini_protocols.SampleError as e:
        return [f"--samples: {e}"]
    except CellError as e:
        key = {"eval.metrics": "--metrics", "teacher.levels": "--levels"}.get(e.key, e.key)
        return [f"{key}: {str(e)[len(e.key) + 2:]}"]
    return []


def _mini_compute(request: EvalRequest, run_dir: Path) -> tuple[dict[str, MetricValue], int]:
    ctx = run_context(run_dir, request.results, log=lambda s: None)
    return mini_protocols.evaluate(request.protocol, request.samples, _mini_levels(request), request.metrics, ctx)


MINI = ProtocolFamily(
    "mini", _mini_compute, lambda path: assets.sha256_file(path) if path.is_file() else tree_sha256(path),
    options=("metrics", "levels"), check_samples=_mini_check_samples,
    identity=lambda request: {"metrics": sorted(request.metrics) if request.metrics else None,
                              "levels": _mini_levels(request) if mini_protocols.MINI_PROTOCOLS[request.protocol]
                              .takes_levels else None},
    scale="mini", teacher=lambda protocol: mini_protocols.MINI_PROTOCOLS[protocol].teacher,
    description="the mini worlds' metrics, with the values and protocol ids of grid runs")

#----------------------------------------------------------------------------

for _family, _names in ((FID, fid.FID_PROTOCOLS.names()), (HPS, sorted(hps.BENCHMARK_PROTOCOLS)),
                        (GENEVAL, [geneval.PROTOCOL]), (CLIP, clip_score.CLIP_PROTOCOLS.names()),
                        (MINI, sorted(mini_protocols.MINI_PROTOCOLS))):
    for _name in _names:
        registry.protocols.register(_name, _family)

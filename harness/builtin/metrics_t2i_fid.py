"""Registers the text-to-image FID metrics of the papers' tables: MS-COCO FID (`fid_coco`, the
T2IBenchmark COCO-30k protocol of Di[M]O's evaluation) and MJHQ-30K FID (`fid_mjhq30k`, MaskGen's
model-zoo metric). A run's samples must be its protocol's prompts in order (`teacher.eval_prompts`
written by `python -m harness.methods.metrics.t2i_prompts`): with exactly 30,000 of them the metric is the
30k protocol, with fewer the any-count one (its count recorded, so it never matches a 30k number).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from harness.builtin.metrics_paper import TEXT_TO_IMAGE, samples_of
from harness.contracts import registry
from harness.contracts.entries import EvalInput, MetricEntry, MetricValue, RunContext, per_image_metric
from harness.methods.metrics import fid, t2i_prompts
from harness.methods.samples import UINT8_CONVERSION
from harness.store import assets

# metric -> (protocol of exactly 30k samples, protocol of any count)
T2I_FID = {"fid_coco": ("coco30k-fid-t2ibenchmark", "coco-fid-t2ibenchmark"),
           "fid_mjhq30k": ("mjhq30k-fid30k-clean", "mjhq30k-fid-clean")}


# The protocol a run of n samples is evaluated under.
def t2i_protocol(metric: str, n: int) -> fid.FIDProtocol:
    exact, loose = (fid.FID_PROTOCOLS.get(name) for name in T2I_FID[metric])
    return exact if n == exact.num_samples else loose


# `metric` as a per-image metric: each batch's Inception features where it was made; the prompt
# check and the FID from all of them on rank 0.
def _t2i_fid(metric: str, **fields: Any) -> MetricEntry:
    def extract(inp: EvalInput, ctx: RunContext) -> dict[str, np.ndarray]:
        return fid.extract(samples_of(inp)[0], t2i_protocol(metric, inp.total), ["fid"], device=ctx.device)

    def reduce(inp: EvalInput, arrays: dict[str, np.ndarray], ctx: RunContext) -> dict[str, MetricValue]:
        prompts = [str(c) for c in inp.conditions]
        protocol = t2i_protocol(metric, len(prompts))
        t2i_prompts.check_prompts(prompts, protocol.prompts)
        value = fid.evaluate_features(arrays, protocol, ["fid"], device=ctx.device, cache_dir=ctx.cache_dir,
                                      sample_meta={"uint8_conversion": UINT8_CONVERSION})["fid"]
        prompts_asset = t2i_prompts.PROMPT_SETS[protocol.prompts].asset
        value.protocol.update(metric=metric, prompts=protocol.prompts,
                              prompts_sha256=assets.sha256_file(assets.resolve(prompts_asset)))
        return {metric: value}
    return per_image_metric(metric, extract, reduce, **fields)


for _metric, _desc in (
        ("fid_coco", "MS-COCO FID-30k (T2IBenchmark's captions, statistics and preprocessing; Di[M]O's)"),
        ("fid_mjhq30k", "MJHQ-30K FID (clean-fid 'clean' vs the 30k MJHQ images; MaskGen's model-zoo metric)")):
    _proto = fid.FID_PROTOCOLS.get(T2I_FID[_metric][0])
    registry.metrics.register(_metric, _t2i_fid(
        _metric, applies_to=TEXT_TO_IMAGE, description=_desc,
        assets=(*_proto.assets(["fid"]), t2i_prompts.PROMPT_SETS[_proto.prompts].asset)))

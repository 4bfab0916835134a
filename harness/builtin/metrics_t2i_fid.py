"""Registers the text-to-image FID metrics of the papers' tables: MS-COCO FID (`fid_coco`, the
T2IBenchmark COCO-30k protocol of Di[M]O's evaluation) and MJHQ-30K FID (`fid_mjhq30k`, MaskGen's
model-zoo metric). A run's samples must be its protocol's prompts in order (`teacher.eval_prompts`
written by `python -m harness.metrics.t2i_prompts`): with exactly 30,000 of them the metric is the
30k protocol, with fewer the any-count one (its count recorded, so it never matches a 30k number).
"""
from __future__ import annotations

from typing import Callable

from harness import assets, registry
from harness.builtin.metrics_paper import TEXT_TO_IMAGE, samples_of
from harness.entries import EvalInput, MetricEntry, MetricValue, RunContext
from harness.metrics import fid, t2i_prompts

# metric -> (protocol of exactly 30k samples, protocol of any count)
T2I_FID = {"fid_coco": ("coco30k-fid-t2ibenchmark", "coco-fid-t2ibenchmark"),
           "fid_mjhq30k": ("mjhq30k-fid30k-clean", "mjhq30k-fid-clean")}


# The protocol a run of n samples is evaluated under.
def t2i_protocol(metric: str, n: int) -> fid.FIDProtocol:
    exact, loose = (fid.FID_PROTOCOLS.get(name) for name in T2I_FID[metric])
    return exact if n == exact.num_samples else loose


def _t2i_fid(metric: str) -> Callable[[EvalInput, RunContext], dict[str, MetricValue]]:
    def compute(inp: EvalInput, ctx: RunContext) -> dict[str, MetricValue]:
        prompts = [str(c) for c in inp.conditions]
        protocol = t2i_protocol(metric, len(prompts))
        t2i_prompts.check_prompts(prompts, protocol.prompts)
        source, meta = samples_of(inp)
        value = fid.evaluate(source, protocol, ["fid"], device=ctx.device, cache_dir=ctx.cache_dir,
                             sample_meta=meta)["fid"]
        prompts_asset = t2i_prompts.PROMPT_SETS[protocol.prompts].asset
        value.protocol.update(metric=metric, prompts=protocol.prompts,
                              prompts_sha256=assets.sha256_file(assets.resolve(prompts_asset)))
        return {metric: value}
    return compute


for _metric, _desc in (
        ("fid_coco", "MS-COCO FID-30k (T2IBenchmark's captions, statistics and preprocessing; Di[M]O's)"),
        ("fid_mjhq30k", "MJHQ-30K FID (clean-fid 'clean' vs the 30k MJHQ images; MaskGen's model-zoo metric)")):
    _proto = fid.FID_PROTOCOLS.get(T2I_FID[_metric][0])
    registry.metrics.register(_metric, MetricEntry(
        _metric, _t2i_fid(_metric), applies_to=TEXT_TO_IMAGE, description=_desc,
        assets=(*_proto.assets(["fid"]), t2i_prompts.PROMPT_SETS[_proto.prompts].asset)))

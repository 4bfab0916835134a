"""Every stored text-to-image baseline maps onto a protocol the harness computes, under the metric
key the harness records; mappings the sources do not state are footnoted; unknown ones are listed."""
from __future__ import annotations

import dataclasses

from harness.methods.metrics.geneval import GENEVAL_TASKS
from harness.methods.metrics.hps import HPS_STYLES
from harness.report.baseline_protocols import (TEXT_TO_IMAGE_TASKS, assumption_footnotes, computable_protocols,
                                        protocol_mappings, unmapped_lines)
from harness.store import baselines


def _papers():
    return baselines.registered.get("papers").load()


# The metric keys the text-to-image metric entries record.
def _recorded_keys() -> set[str]:
    hps = {"hps"} | {f"hps_{s}" for s in HPS_STYLES}
    return (hps | {k.replace("hps", "hps_v2.0", 1) for k in hps} | {"geneval"} | {f"geneval_{t}" for t in GENEVAL_TASKS}
            | {"fid_coco", "fid_mjhq30k", "clip_score"})


def test_every_text_to_image_baseline_maps_to_a_computed_protocol():
    t2i = [b for b in _papers() if b.task in TEXT_TO_IMAGE_TASKS]
    assert len(t2i) == 198
    assert unmapped_lines(t2i) == []
    assert {b.metric for b in t2i} <= _recorded_keys()
    mappings = {(m.metric, m.protocol) for m in protocol_mappings(t2i)}
    assert ("fid_coco", "coco30k-fid-t2ibenchmark") in mappings and ("fid_mjhq30k", "mjhq30k-fid30k-clean") in mappings
    assert ("clip_score", "coco30k-clipscore-gigagan") in mappings
    assert ("hps_v2.0_paintings", "hpsv2-benchmark-v2.0") in mappings and ("hps", "hpsv2-benchmark-v2.1") in mappings
    assert all(name in computable_protocols() for _, name in mappings)


def test_assumed_mappings_are_footnoted():
    notes = assumption_footnotes(_papers(), TEXT_TO_IMAGE_TASKS)
    by_metric = {n.split(" ")[1]: n for n in notes}
    assert set(by_metric) == {"fid_coco", "fid_mjhq30k", "clip_score", "hps", "hps_anime", "geneval"}
    assert "T2IBenchmark COCO-30k caption" in by_metric["fid_coco"] and "6 rows" in by_metric["fid_coco"]
    assert "MaskGen README" in by_metric["fid_mjhq30k"]
    # Di[M]O's own numbers come from its released evaluation code: not assumed.
    dimo = [m for m in protocol_mappings(_papers(), TEXT_TO_IMAGE_TASKS) if m.metric.startswith("hps_v2.0")]
    assert dimo and not any(m.assumed for m in dimo)


def test_unknown_protocols_are_listed_one_line_per_metric():
    base = next(b for b in _papers() if b.metric == "fid_coco")
    odd = [dataclasses.replace(base, protocol={**base.protocol, "name": "coco-fid-10k-private"}) for _ in range(2)]
    (line,) = unmapped_lines(odd)
    assert "fid_coco (FID_MSCOCO, 2 rows)" in line and "'coco-fid-10k-private'" in line
    assert "does not compute" in line

"""Build `baselines/paper_results.csv` from the transcribed table `sources/paper_results_raw.csv`.

    python baselines/build_paper_baselines.py [--source RAW.csv] [--out baselines/paper_results.csv]

The raw file (columns paper, table, teacher, task, method, steps, metric, value, notes; one row per
reported number, values as printed) is the project's transcription of the Di[M]O project page,
the third-party transcription of the Soft-Di[M]O paper (the English and Chinese paper notes of
en.papernotes.org, "papernotes (en+zh)"; docs/paper.md) and the teachers' READMEs. This script
only adds columns; it never changes a number:

- `arxiv`, `citation` (paper + table / figure or README), `source_quality`: `primary` when read in
  the original (Di[M]O project page tables, teacher READMEs), `secondary` for every Soft-Di[M]O
  row (read from that third-party transcription until the paper's full text confirms it);
- `task` (a short key) beside `task_original`; `teacher_key` (the harness teacher name);
- `metric` (the harness metric name) beside `metric_original`; `higher_is_better`;
- `protocol_json`: the evaluation protocol as far as it is known (Di[M]O's released evaluation
  scripts, yuanzhi-zhu/DiMO `evaluation/` and `sample_*.py`), named as the harness names the
  protocol that computes the same number, with the fields that can be checked against a run's under
  the run's keys; unknown parts are said to be unknown in its `notes`, and a mapping the source does
  not state outright carries `"assumed": true` (the report footnotes it, docs/metrics.md lists it).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from harness.store.baselines import COLUMNS  # noqa: E402
from softdimo.files import atomic_write  # noqa: E402

ARXIV = re.compile(r"arXiv (\d{4}\.\d{5})")

# Harness metric names for the names printed in the papers: the keys the harness's metrics record
# (HPS v2.1 is `hps` / `hps_<style>`, v2.0 `hps_v2.0` / `hps_v2.0_<style>`; GenEval's overall is
# `geneval`). The protocol names carry the HPS version as well.
METRICS = {
    "FID": "fid", "IS": "is", "Precision": "precision", "Recall": "recall",
    "Density": "density", "Coverage": "coverage",
    "HPSv2.0_anime": "hps_v2.0_anime", "HPSv2.0_concept-art": "hps_v2.0_concept-art",
    "HPSv2.0_painting": "hps_v2.0_paintings", "HPSv2.0_photo": "hps_v2.0_photo", "HPSv2.0_avg": "hps_v2.0",
    "HPSv2.1_anime": "hps_anime", "HPS_avg": "hps",
    "GenEval_overall": "geneval", "GenEval_single_object": "geneval_single_object",
    "GenEval_two_object": "geneval_two_object", "GenEval_counting": "geneval_counting",
    "GenEval_colors": "geneval_colors", "GenEval_position": "geneval_position",
    "GenEval_color_attribution": "geneval_color_attr",
    "FID_MSCOCO": "fid_coco", "CLIP_score": "clip_score", "MJHQ30K_FID": "fid_mjhq30k",
}
LOWER_IS_BETTER = {"fid", "fid_coco", "fid_mjhq30k"}
DIMO_CODE = "yuanzhi-zhu/DiMO @24613741"
GENEVAL_DETECTOR = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth"   # as geneval.DETECTOR_FILE records it
# Soft-Di[M]O's text-to-image numbers, read as computed by Di[M]O's released evaluation (same authors).
SOFT_AS_DIMO = ("Soft-Di[M]O does not describe its {what}; read as Di[M]O's released evaluation "
                f"computes it ({DIMO_CODE}: {{how}})")
TEACHERS = {"MaskGit": "maskgit", "MaskBit": "maskbit", "Meissonic": "meissonic",
            "MaskGen": "maskgen", "MaskGen-L": "maskgen", "n/a": "", "unknown": ""}
TASKS = {"ImageNet-256 class-to-image": "imagenet256-c2i",
         "text-to-image (Meissonic 1024px)": "t2i-1024", "text-to-image": "t2i"}
README_SOURCES = {"MaskBit": "github.com/markweberdev/maskbit README, model zoo table",
                  "MaskGen": "github.com/bytedance/1d-tokenizer README_MaskGen.md, model zoo table"}

#----------------------------------------------------------------------------


# The evaluation protocol of one number, as far as the sources say.
def protocol(metric: str, metric_original: str, paper: str, task: str) -> dict:
    dimo = paper.startswith("DiMO")
    soft = paper.startswith("Soft-DiMO")
    unknown = ("Soft-Di[M]O's evaluation code is not available; protocol details not confirmed"
               if soft else "the README does not state the evaluation implementation")
    if task == "imagenet256-c2i" and metric in ("fid", "is", "precision", "recall", "density", "coverage"):
        return _imagenet_protocol(metric, dimo, unknown)
    if metric.startswith("hps"):
        version = "v2.0" if metric_original.startswith("HPSv2.0") else "v2.1"
        p = {"name": f"hpsv2-benchmark-{version}", "hps_version": version}
        if dimo:
            p.update(images_per_prompt=1, notes="hpsv2.benchmark_prompts('all'), hpsv2.evaluate(hps_version="
                     f"'v2.0') ({DIMO_CODE} sample_Meissonic.py); the other rows of the table are copied "
                     "from the HPSv2 GitHub leaderboard")
        else:
            p.update(assumed=True, notes=("version inferred (v2.1), not stated; " if metric_original == "HPS_avg"
                                          else "") + unknown)
        return p
    if metric.startswith("geneval"):
        p = {"name": "geneval"}
        if dimo:
            p.update(num_prompts=553, images_per_prompt=4, detector=GENEVAL_DETECTOR,
                     notes=f"official evaluation_metadata.jsonl, 4 images per prompt ({DIMO_CODE} "
                           "sample_Meissonic.py generate_GenEval, scripts/evaluate.sh)")
        else:
            p.update(assumed=True, notes=f"GenEval's own evaluator and 4 images per prompt assumed; {unknown}")
        return p
    if metric == "fid_coco":
        return {"name": "coco30k-fid-t2ibenchmark", "reference": "t2ibenchmark-coco-val2014-fid-stats",
                "assumed": True, "notes": SOFT_AS_DIMO.format(
                    what="COCO FID (subset, implementation)",
                    how="sample_Meissonic.py generate_FID: one image per T2IBenchmark COCO-30k caption, "
                        "T2IBenchmark calculate_fid against get_coco_fid_stats()")}
    if metric == "clip_score":
        return {"name": "coco30k-clipscore-gigagan", "assumed": True, "notes": SOFT_AS_DIMO.format(
            what="CLIP score (backbone, prompts)",
            how="evaluation/gigagan_eval_clip.py, ViT-g-14 on the COCO-30k captions; values near 0.3 are "
                "consistent with its raw cosine")}
    if metric == "fid_mjhq30k":
        return {"name": "mjhq30k-fid30k-clean", "num_samples": 30000, "reference": "mjhq30k-images",
                "assumed": True, "notes": "the MaskGen README gives MJHQ-30K FID without its "
                "implementation, feature resize or reference resolution; read as clean-fid 'clean' "
                "features of one image per meta_data.json prompt against the 30k MJHQ images"}
    raise ValueError(f"no protocol known for metric {metric!r}")


# An ImageNet-256 number's protocol, in the fields a run's record carries for the same protocol
# (harness.methods.metrics.fid: the ADM reference batch, 50k samples): a run at 50k compares with it.
def _imagenet_protocol(metric: str, dimo: bool, unknown: str) -> dict:
    adm = {"name": "imagenet256-fid50k-adm", "num_samples": 50000, "resolution": 256}
    if metric in ("precision", "recall") and not dimo:
        return {"name": "imagenet256-precision-recall", "notes": "which precision/recall (Naeem PRDC or "
                "Kynkaanniemi improved P/R of the ADM evaluator) is unknown; " + unknown}
    if not dimo:
        return {**adm, **({} if metric == "is" else {"reference": "adm-imagenet256-ref-batch"}), "assumed": True,
                "notes": f"assumed ImageNet-256 {metric.upper()} of 50k samples against the ADM reference; {unknown}"}
    if metric == "fid":
        return {**adm, "reference": "adm-imagenet256-ref-batch", "features": "clean-fid/legacy_tensorflow",
                "notes": "Di[M]O eval scripts: clean-fid legacy_tensorflow, 50 images per class, against "
                         f"fid_stats_imagenet256_guided_diffusion.npz, the ADM reference statistics "
                         f"({DIMO_CODE} evaluation/fid.py)"}
    if metric == "is":
        return {**adm, "notes": f"Di[M]O eval scripts: torch-fidelity inception_score_mean ({DIMO_CODE})"}
    return {**adm, "reference": "adm-imagenet256-ref-batch", "prdc": "naeem2020", "prdc_k": 3,
            "notes": "Di[M]O eval scripts: Naeem et al. PRDC, k=3, Inception (legacy TF) features, against "
                     "the ADM VIRTUAL_imagenet256_labeled.npz images"}


# Citation, arXiv id and source quality of one raw row.
def citation(raw: dict) -> tuple[str, str, str]:
    paper = raw["paper"]
    m = ARXIV.search(paper)
    if paper.startswith("DiMO"):
        return m.group(1), f"Zhu et al., Di[M]O (arXiv {m.group(1)}), {raw['table']}", "primary"
    if paper.startswith("Soft-DiMO"):
        return (m.group(1), f"Zhu et al., Soft-Di[M]O (arXiv {m.group(1)}), {raw['table']}",
                "secondary")
    teacher = "MaskBit" if "MaskBit" in paper else "MaskGen"
    return "", README_SOURCES[teacher], "primary"


# Every raw row with the added columns, in the raw file's order.
def build(source: Path) -> list[dict]:
    with open(source, newline="", encoding="utf-8") as f:
        raws = list(csv.DictReader(f))
    out = []
    for raw in raws:
        metric = METRICS[raw["metric"]]
        task = TASKS[raw["task"]]
        arxiv, cite, quality = citation(raw)
        out.append({
            "source": "papers", "paper": raw["paper"], "arxiv": arxiv, "citation": cite,
            "source_quality": quality, "table": raw["table"], "teacher": raw["teacher"],
            "teacher_key": TEACHERS[raw["teacher"]], "task": task, "task_original": raw["task"],
            "method": raw["method"], "steps": raw["steps"], "metric": metric,
            "metric_original": raw["metric"], "value": raw["value"], "std": "", "n": "",
            "higher_is_better": "false" if metric in LOWER_IS_BETTER else "true",
            "protocol_json": json.dumps(protocol(metric, raw["metric"], raw["paper"], task),
                                        sort_keys=True),
            "notes": raw["notes"]})
    return out


# Write baselines/paper_results.csv.
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", type=Path, default=HERE / "sources" / "paper_results_raw.csv")
    p.add_argument("--out", type=Path, default=HERE / "paper_results.csv")
    args = p.parse_args()
    rows = build(args.source)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write(args.out, buf.getvalue())
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()

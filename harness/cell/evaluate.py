"""Evaluate any sample set under a named protocol and record it beside the runs.

    python -m harness.cell.evaluate --samples DIR_OR_NPZ --protocol NAME [--reference PATH]
                               [--results DIR] [--metrics ...] [--label TEXT] [--teacher NAME]

So a method not implemented here (its samples written by its own code) is compared with the
baselines and the harness's runs under exactly the same protocol. Each protocol belongs to a family
(`harness.contracts.entries.ProtocolFamily`) registered under its protocol names (`registry.protocols`; the
built-in families in `harness.builtin.protocols`, others by a plugin); this command only looks the
family up. The built-in protocols:

- FID family (`harness.methods.metrics.fid.FID_PROTOCOLS`, e.g. imagenet256-fid50k-adm): `--samples` is a
  folder of PNG/JPEG images, an npz with uint8 NHWC `arr_0` or a zip of images; `--metrics` picks
  among fid, inception_score, kid, prdc (default: all the reference supports); `--reference`
  overrides the protocol's reference (npz with mu/sigma[, arr_0], or a folder / npz / zip of
  images). The text-to-image ones (coco30k-fid-t2ibenchmark, mjhq30k-fid30k-clean, ...) take the
  samples' prompts on trust unless `--captions FILE` (one prompt per line, in sample order) is
  given, which is then checked against the protocol's prompt set before anything is computed.
- `hpsv2-benchmark-v2.0`, `hpsv2-benchmark-v2.1`: `--samples` is `<root>` with `<style>/<idx:05d>.jpg`.
- `geneval`: `--samples` is a GenEval image folder; `--geneval-dir`, `--geneval-python` (or the
  SOFTDIMO_GENEVAL_* variables) say where GenEval and its environment are.
- CLIP score (`coco30k-clipscore-gigagan`, `clipscore-gigagan`): `--samples` images plus
  `--captions FILE` (one caption per line, in sample order).
- The mini scale (`mini-digits`, `mini-glyphs`, `mini-shapes`; `harness.methods.mini_protocols`): an npz
  of images with their labels or prompts (or, for shapes, a folder of PNGs with prompts.txt),
  scored by the mini teacher's metrics (`--metrics` any metric of that teacher; `--levels` for digits) with exactly
  the values and protocol ids of grid runs, so the record sits beside the mini runs and baselines.

The record goes to `<results>/evaluate/<run_id>/record.json` (schema: docs/design.md); the run id is
the content hash of the samples and of what the protocol reads. An `ok` record is never
overwritten; a failed one is moved to `attempts/<n>.json` before a retry.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness import store
from harness.builtin import plugins
from harness.contracts import registry
from harness.contracts.entries import OPTIONAL_EVAL_OPTIONS, EvalRequest, MetricValue, ProtocolFamily
from harness.contracts.run_spec import ProblemsError
from harness.store import assets
from harness.store.provenance import now, provenance

GRID = "evaluate"

#----------------------------------------------------------------------------
# Protocol lookup: every family is registered under its protocol names (`registry.protocols`).


# All protocol names `--protocol` accepts, by family.
def protocol_names() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, family in registry.protocols.items():
        out.setdefault(family.name, []).append(name)
    return out


# The family that scores a protocol; raises ValueError naming every protocol for an unknown one.
def family_of(protocol: str) -> ProtocolFamily:
    if protocol in registry.protocols:
        return registry.protocols.get(protocol)
    allowed = "; ".join(f"{k}: {', '.join(v)}" for k, v in protocol_names().items())
    raise ValueError(f"unknown protocol {protocol!r}{registry.did_you_mean(protocol, registry.protocols)}; "
                     f"allowed — {allowed}")


# The identity of an evaluation (its run id hashes this): samples content, protocol, inputs read.
def evaluation_identity(request: EvalRequest) -> dict[str, Any]:
    family = family_of(request.protocol)
    ident: dict[str, Any] = {"protocol": request.protocol, "samples_sha256": family.samples_sha256(request.samples),
                             **family.identity(request)}
    if request.captions:
        ident["captions_sha256"] = assets.sha256_file(request.captions)
    ident["assets_sha256"] = {name: assets.sha256_file(assets.resolve(name)) for name in family.assets(request)}
    return ident


# Problems with the request, found before any computation (one line each): the protocol, the files
# named, the options its family does not read, the family's own checks, the assets, then the samples.
def check_request(request: EvalRequest) -> list[str]:
    try:
        family = family_of(request.protocol)
    except ValueError as e:
        return [str(e)]
    problems = [f"--{flag(key)} {getattr(request, key)}: no such file or folder"
                for key in ("samples", "reference", "captions", "weights")
                if getattr(request, key) is not None and not Path(getattr(request, key)).exists()]
    for key in OPTIONAL_EVAL_OPTIONS:
        if getattr(request, key) not in (None, ()) and key not in family.options:
            takers = sorted({f.name for _, f in registry.protocols.items() if key in f.options})
            problems.append(f"--{flag(key)} applies to protocols of the famil{'ies' if len(takers) > 1 else 'y'} "
                            f"{', '.join(takers) or '(none)'}, not to {request.protocol!r} ({family.name})")
    problems += family.check(request)
    if not problems:
        problems += assets.check_before_launch(family.assets(request))
    return problems or family.check_samples(request)


# The command-line spelling of a request option.
def flag(key: str) -> str:
    return key.replace("_", "-")


# Score the request's samples; returns the values and the number of samples scored.
def compute(request: EvalRequest, run_dir: Path) -> tuple[dict[str, MetricValue], int]:
    return family_of(request.protocol).compute(request, run_dir)


#----------------------------------------------------------------------------
# Command line.


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.cell.evaluate", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", metavar="DIR_OR_NPZ", help="the sample set to evaluate (required)")
    p.add_argument("--protocol", metavar="NAME", help="protocol name (required; see --list-protocols)")
    p.add_argument("--list-protocols", action="store_true", help="print the protocol names and exit")
    p.add_argument("--reference", metavar="PATH", help="FID family: reference npz (mu/sigma[, arr_0]) or images")
    p.add_argument("--reference-name", metavar="NAME", help="name recorded for --reference (default: its stem)")
    p.add_argument("--metrics", nargs="+", metavar="M", help="FID family: subset of fid, inception_score, kid, prdc; "
                                                              "mini protocols: metrics of the mini teacher "
                                                              "(default: its default metrics)")
    p.add_argument("--levels", type=int, help="mini-digits: intensity levels of the digits world (default: the "
                                              "digits teacher's, 4)")
    p.add_argument("--captions", metavar="FILE", help="CLIP score, text-to-image FID: one caption per line, "
                                                      "in sample order (FID: checked against the protocol's prompts)")
    p.add_argument("--weights", metavar="FILE", help="CLIP score: weights file instead of the protocol's asset")
    p.add_argument("--geneval-dir", metavar="DIR", help="GenEval checkout (default $SOFTDIMO_GENEVAL_DIR)")
    p.add_argument("--geneval-python", metavar="EXE", help="GenEval environment's python ($SOFTDIMO_GENEVAL_PYTHON)")
    p.add_argument("--results", default="results", metavar="DIR", help="results root (record: DIR/evaluate/<id>/)")
    p.add_argument("--label", default="external", help="row label for the report (e.g. the method's name)")
    p.add_argument("--teacher", default="external", help="teacher the samples belong to (report grouping)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--num-workers", type=int, default=0, help="data-loader workers for image decoding")
    args = p.parse_args(argv)
    if not args.list_protocols and not (args.samples and args.protocol):
        p.error("--samples and --protocol are required")
    return args


# The request of parsed command-line options.
def request_of(args: argparse.Namespace) -> EvalRequest:
    paths = {key: Path(getattr(args, key)) if getattr(args, key) else None
             for key in ("reference", "captions", "weights", "geneval_dir")}
    return EvalRequest(Path(args.samples), args.protocol, Path(args.results), tuple(args.metrics or ()),
                       reference_name=args.reference_name, levels=args.levels, geneval_python=args.geneval_python,
                       device=args.device, batch_size=args.batch_size, num_workers=args.num_workers, **paths)


# The request has problems (`problems`, one line each, naming the option); nothing was computed.
class EvaluationError(ProblemsError):
    pass


# An evaluation's record: its run id, where it is, its status (ok, diverged: some value not finite,
# failed: `error` says why), its metric values (None: not finite) with their protocol ids, and
# whether it was there before (`already`: an ok record is never overwritten).
@dataclass(frozen=True)
class Evaluation:
    run_id: str
    path: Path
    status: str
    metrics: dict[str, float | None]
    protocol_ids: dict[str, str]
    error: str | None = None
    already: bool = False


# Score the request's samples and write their record under `<results>/evaluate/<run id>/`, or
# return the ok record already there. `label` and `teacher` place it in the report. Raises
# EvaluationError naming every problem of the request before anything is computed.
def record_evaluation(request: EvalRequest, label: str = "external", teacher: str = "external") -> Evaluation:
    assets.forget_used_assets()
    problems = check_request(request)
    if problems:
        raise EvaluationError(problems)
    ident = evaluation_identity(request)
    family = family_of(request.protocol)
    run_id = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    run_dir = store.run_dir(request.results, GRID, run_id)
    if store.statuses(request.results, GRID, [run_id])[run_id] in store.FINAL_STATUSES:
        return _evaluation(run_id, run_dir / store.RECORD_FILE, store.read_record(run_dir / store.RECORD_FILE), True)

    started, t0 = now(), time.time()
    record: dict[str, Any] = {
        "schema_version": store.SCHEMA_VERSION, "run_id": run_id, "grid": GRID,
        "description": f"{label} {request.protocol}",
        "spec": {"scale": family.scale, "teacher": family.teacher(request.protocol) or teacher,
                 "method": "external", "relaxation": "none",
                 "refinement": "none", "seed": 0, "plugins": [],
                 "params": {"evaluate.samples": str(request.samples.resolve()),
                            "evaluate.protocol": request.protocol, "evaluate.label": label,
                            "evaluate.reference": str(request.reference.resolve()) if request.reference else None,
                            "evaluate.metrics": list(request.metrics) or None, **{f"evaluate.{k}": v for k, v in ident.items()
                                                                if k.endswith("sha256")}}},
        "status": "ok", "error": None, "metrics": {}, "curves": {}, "samples": {"path": str(request.samples)},
        "info": {"identity": ident}}
    try:
        values, count = compute(request, run_dir)
        record["metrics"] = {k: v.to_json() for k, v in values.items()}
        if any(m["value"] is None for m in record["metrics"].values()):
            record["status"] = "diverged"
        record["samples"]["count"] = count
    except Exception as e:  # a failed evaluation is recorded with its traceback, then reported
        record["status"] = "failed"
        record["error"] = {"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}
    wall = time.time() - t0
    record["provenance"] = {**provenance(started), "assets": assets.used_assets()}
    record["cost"] = {"wall_s": wall, "peak_mem_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "accelerator_hours": wall / 3600 if request.device.startswith("cuda") else 0.0,
                      "stages": {"eval_s": wall}}
    return _evaluation(run_id, store.write_record(run_dir, record), record)


def _evaluation(run_id: str, path: Path, record: dict[str, Any], already: bool = False) -> Evaluation:
    error = record.get("error")
    return Evaluation(run_id, path, record["status"], {k: m["value"] for k, m in record["metrics"].items()},
                      {k: m["protocol_id"] for k, m in record["metrics"].items()},
                      f"{error['type']}: {error['message']}" if error else None, already)


# Evaluate, write the record, print the values; returns the exit status.
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plugins.load_builtins()                  # the mini protocols score with the registered metrics
    if args.list_protocols:
        for family, names in protocol_names().items():
            print(f"{family}: {', '.join(names)}")
        return 0
    try:
        done = record_evaluation(request_of(args), args.label, args.teacher)
    except EvaluationError as e:
        for p in e.problems:
            print(f"error: {p}", file=sys.stderr)
        return 2
    if done.already:
        print(f"already evaluated: {done.path} (an ok record is never overwritten)")
        return 0
    if done.status == "failed":
        print(f"error: {done.error} (record: {done.path})", file=sys.stderr)
        return 1
    for key, value in done.metrics.items():
        shown = "not finite" if value is None else f"{value:.6g}"
        print(f"{key:<24} {shown}   [{done.protocol_ids[key]}]")
    if done.status == "diverged":
        print(f"error: some metric is not finite (record: {done.path})", file=sys.stderr)
        return 1
    print(f"record: {done.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

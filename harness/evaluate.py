"""Evaluate any sample set under a named protocol and record it beside the runs.

    python -m harness.evaluate --samples DIR_OR_NPZ --protocol NAME [--reference PATH]
                               [--results DIR] [--metrics ...] [--label TEXT] [--teacher NAME]

So a method not implemented here (its samples written by its own code) is compared with the
baselines and the harness's runs under exactly the same protocol. Protocols:

- FID family (`harness.metrics.fid.FID_PROTOCOLS`, e.g. imagenet256-fid50k-adm): `--samples` is a
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
- The mini scale (`mini-digits`, `mini-shapes`; `harness.mini_protocols`): an npz of images with
  their labels or prompts (or, for shapes, a folder of PNGs with prompts.txt), scored by the mini
  teacher's metrics (`--metrics` any metric of that teacher; `--levels` for digits) with exactly
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
from pathlib import Path
from typing import Any

import torch

from harness import assets, mini_protocols, plugins, store
from harness.assets.trust import private_dir
from harness.entries import MetricValue
from harness.environment import cache_dir, run_context
from harness.run_spec import CellError
from harness.provenance import now, provenance
from harness.metrics import clip_score, fid, geneval, hps, t2i_prompts
from harness.samples import open_samples
from softdimo.teachers.maskgen import read_prompts

GRID = "evaluate"
HPS_PROTOCOLS = {f"hpsv2-benchmark-{v}": v for v in hps.HPS_VERSIONS}

#----------------------------------------------------------------------------
# Protocol dispatch: name -> (what it reads, how it computes).


# All protocol names `--protocol` accepts, by family.
def protocol_names() -> dict[str, list[str]]:
    return {"fid": fid.FID_PROTOCOLS.names(), "hps": sorted(HPS_PROTOCOLS), "geneval": ["geneval"],
            "clip": clip_score.CLIP_PROTOCOLS.names(), "mini": sorted(mini_protocols.MINI_PROTOCOLS)}


# The identity of an evaluation (its run id hashes this): samples content, protocol, inputs read.
def evaluation_identity(args: argparse.Namespace) -> dict[str, Any]:
    family = _family(args.protocol)
    samples = Path(args.samples)
    ident: dict[str, Any] = {"protocol": args.protocol, "samples_sha256": content_sha256(samples, family)}
    if family == "mini":
        ident["metrics"] = sorted(args.metrics) if args.metrics else None
        ident["levels"] = args.levels if args.protocol == "mini-digits" else None
    if family == "fid":
        ident["metrics"] = sorted(args.metrics) if args.metrics else None
        if args.reference:
            ident["reference_sha256"] = content_sha256(Path(args.reference), "fid")
    if args.captions:
        ident["captions_sha256"] = assets.sha256_file(Path(args.captions))
    if family == "clip" and args.weights:
        ident["weights_sha256"] = assets.sha256_file(Path(args.weights))
    ident["assets_sha256"] = {name: assets.sha256_file(assets.resolve(name))
                              for name in protocol_assets(args)}
    return ident


# sha256 of a sample set: the npz or image folder content, or every file of a layout tree.
def content_sha256(path: Path, family: str) -> str:
    if family == "mini" and path.is_file():
        return assets.sha256_file(path)
    if family in ("fid", "clip"):
        return open_samples(path).content_sha256()
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: expected a folder")
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{assets.sha256_file(f)}\n".encode())
    return h.hexdigest()


# Compute the metrics of one evaluation.
def compute(args: argparse.Namespace, run_dir: Path, cache_dir: Path) -> tuple[dict[str, MetricValue], int]:
    family = _family(args.protocol)
    device = torch.device(args.device)
    if family == "mini":
        ctx = run_context(run_dir, args.results, log=lambda s: None)
        return mini_protocols.evaluate(args.protocol, args.samples, args.levels, args.metrics or (), ctx)
    if family == "fid":
        source = open_samples(args.samples)
        manifest = (Path(args.samples) if Path(args.samples).is_dir() else Path(args.samples).parent) / "manifest.json"
        meta = json.loads(manifest.read_text()) if manifest.is_file() else {}
        metrics = args.metrics or _default_fid_metrics(args)
        values = fid.evaluate(source, args.protocol, metrics, args.reference, args.reference_name, device,
                              args.batch_size, args.num_workers, cache_dir, meta)
        if args.captions:                      # checked against the protocol's prompt set before
            prompt_set = fid.FID_PROTOCOLS.get(args.protocol).prompts
            digest = assets.sha256_file(assets.resolve(t2i_prompts.PROMPT_SETS[prompt_set].asset))
            for value in values.values():
                value.protocol.update(prompts=prompt_set, prompts_sha256=digest)
        return values, len(source)
    if family == "hps":
        scorer = hps.load_hps(HPS_PROTOCOLS[args.protocol], device)
        values = hps.evaluate_benchmark(Path(args.samples), scorer, batch_size=args.batch_size)
        return values, values["hps"].protocol["prompts_per_style"] * len(hps.HPS_STYLES)
    if family == "geneval":
        config = _geneval_config(args)
        values = geneval.evaluate(Path(args.samples), config, run_dir / "geneval")
        return values, values["geneval"].protocol["num_samples"]
    source = open_samples(args.samples)
    captions = Path(args.captions).read_text().splitlines()
    value = clip_score.clip_score(source, captions, args.protocol, args.weights, device, args.batch_size)
    return {"clip_score": value}, len(source)


# FID-family default: every metric the reference can give (KID / PRDC need reference images).
def _default_fid_metrics(args: argparse.Namespace) -> list[str]:
    protocol = fid.FID_PROTOCOLS.get(args.protocol)
    ref = Path(args.reference) if args.reference else assets.resolve(protocol.reference) if protocol.reference else None
    if ref is not None and ref.is_file() and ref.suffix == ".npz":
        import numpy as np
        with np.load(ref) as data:
            if {"mu", "sigma"} <= set(data.files) and "arr_0" not in data.files:
                print(f"note: {ref} holds only mu/sigma: computing fid and inception_score (KID and PRDC "
                      f"need reference images)", file=sys.stderr)
                return ["fid", "inception_score"]
    return list(fid.FID_METRICS)


def _geneval_config(args: argparse.Namespace) -> geneval.GenEvalConfig:
    return geneval.GenEvalConfig.from_env(Path(args.geneval_dir) if args.geneval_dir else None, args.geneval_python)


def _family(name: str) -> str:
    for family, names in protocol_names().items():
        if name in names:
            return family
    allowed = "; ".join(f"{k}: {', '.join(v)}" for k, v in protocol_names().items())
    raise ValueError(f"unknown protocol {name!r}; allowed — {allowed}")


# Problems with the arguments, found before any computation (one line each).
def check_arguments(args: argparse.Namespace) -> list[str]:
    try:
        family = _family(args.protocol)
    except ValueError as e:
        return [str(e)]
    problems = []
    if not Path(args.samples).exists():
        problems.append(f"--samples {args.samples}: no such file or folder")
    if family == "mini":
        return problems or _check_mini(args)
    if args.metrics and family != "fid":
        problems.append(f"--metrics applies to FID-family protocols only, not {args.protocol!r}")
    if args.metrics:
        problems += [f"--metrics {m!r}: allowed {', '.join(fid.FID_METRICS)}" for m in args.metrics
                     if m not in fid.FID_METRICS]
    if args.reference and not Path(args.reference).exists():
        problems.append(f"--reference {args.reference}: no such file or folder")
    if family == "clip" and not (args.captions and Path(args.captions).is_file()):
        problems.append(f"protocol {args.protocol!r} needs --captions FILE (one caption per line)")
    if args.captions and family in ("hps", "geneval"):
        problems.append(f"--captions applies to CLIP-score and text-to-image FID protocols, not {args.protocol!r}")
    if family == "fid":
        protocol = fid.FID_PROTOCOLS.get(args.protocol)
        if not args.reference and protocol.reference is None:
            problems.append(f"protocol {args.protocol!r} has no default reference: pass --reference")
        if args.captions and not protocol.prompts:
            with_prompts = [n for n, p in fid.FID_PROTOCOLS.items() if p.prompts]
            problems.append(f"--captions: protocol {args.protocol!r} has no prompt set (those with one: "
                            f"{', '.join(with_prompts)})")
        elif args.captions and not Path(args.captions).is_file():
            problems.append(f"--captions {args.captions}: no such file")
    if family == "geneval":
        try:
            config = _geneval_config(args)
        except ValueError as e:
            return problems + [str(e)]
        if not config.metadata_path.is_file():
            problems.append(f"{config.metadata_path}: GenEval prompt metadata not found (--geneval-dir)")
    problems += assets.check_before_launch(protocol_assets(args))
    if not problems and family == "fid" and args.captions:
        problems += _caption_problems(args)
    return problems


# Problems with the --captions of a text-to-image FID evaluation: one prompt per sample, and the
# protocol's prompts in order.
def _caption_problems(args: argparse.Namespace) -> list[str]:
    try:
        captions = read_prompts(args.captions, "--captions")
        n = len(open_samples(args.samples))
        if len(captions) != n:
            return [f"--captions {args.captions}: {len(captions)} prompts for {n} samples"]
        t2i_prompts.check_prompts(captions, fid.FID_PROTOCOLS.get(args.protocol).prompts)
    except (ValueError, FileNotFoundError) as e:
        return [f"--captions {args.captions}: {e}"]
    return []


# A mini protocol's input and options: the arrays (read and checked), the metrics and levels.
def _check_mini(args: argparse.Namespace) -> list[str]:
    try:
        read = mini_protocols.read_digits if args.protocol == "mini-digits" else mini_protocols.read_shapes
        images, _ = read(args.samples)
        mini_protocols.protocol_spec(args.protocol, len(images), args.levels, args.metrics or ())
    except mini_protocols.SampleError as e:
        return [f"--samples: {e}"]
    except CellError as e:
        key = {"eval.metrics": "--metrics", "teacher.levels": "--levels"}.get(e.key, e.key)
        return [f"{key}: {str(e)[len(e.key) + 2:]}"]
    return []


# The assets an evaluation reads (weights, default references, prompt lists).
def protocol_assets(args: argparse.Namespace) -> list[str]:
    family = _family(args.protocol)
    if family == "fid":
        protocol = fid.FID_PROTOCOLS.get(args.protocol)
        names = protocol.assets(args.metrics or fid.FID_METRICS)
        names = [n for n in names if n != protocol.reference] if args.reference else names
        if args.captions and protocol.prompts:
            names.append(t2i_prompts.PROMPT_SETS[protocol.prompts].asset)
        return names
    if family == "hps":
        return [hps.HPS_VERSIONS[HPS_PROTOCOLS[args.protocol]]] + [f"hps-benchmark-{s}" for s in hps.HPS_STYLES]
    if family == "clip" and not args.weights:
        return [clip_score.CLIP_PROTOCOLS.get(args.protocol).weights_asset]
    if family == "geneval" and any("{detector_dir}" in part for part in _geneval_config(args).command):
        return ["geneval-mask2former"]
    return []


#----------------------------------------------------------------------------
# Command line.


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.evaluate", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", metavar="DIR_OR_NPZ", help="the sample set to evaluate (required)")
    p.add_argument("--protocol", metavar="NAME", help="protocol name (required; see --list-protocols)")
    p.add_argument("--list-protocols", action="store_true", help="print the protocol names and exit")
    p.add_argument("--reference", metavar="PATH", help="FID family: reference npz (mu/sigma[, arr_0]) or images")
    p.add_argument("--reference-name", metavar="NAME", help="name recorded for --reference (default: its stem)")
    p.add_argument("--metrics", nargs="+", metavar="M", help=f"FID family: subset of {', '.join(fid.FID_METRICS)}; "
                                                                f"mini protocols: metrics of the mini teacher "
                                                                f"(default: its default metrics)")
    p.add_argument("--levels", type=int, default=4, help="mini-digits: intensity levels of the digits world (default 4)")
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


# Evaluate, write the record, print the values; returns the exit status.
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plugins.load_builtins()                  # the mini protocols score with the registered metrics
    if args.list_protocols:
        for family, names in protocol_names().items():
            print(f"{family}: {', '.join(names)}")
        return 0
    assets.forget_used_assets()
    problems = check_arguments(args)
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return 2
    ident = evaluation_identity(args)
    family = _family(args.protocol)
    run_id = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    run_dir = store.run_dir(args.results, GRID, run_id)
    if store.statuses(args.results, GRID, [run_id])[run_id] in store.FINAL_STATUSES:
        print(f"already evaluated: {run_dir / store.RECORD_FILE} (an ok record is never overwritten)")
        return 0

    started, t0 = now(), time.time()
    record: dict[str, Any] = {
        "schema_version": store.SCHEMA_VERSION, "run_id": run_id, "grid": GRID,
        "description": f"{args.label} {args.protocol}",
        "spec": {"scale": "mini" if family == "mini" else "paper",
                 "teacher": mini_protocols.MINI_PROTOCOLS[args.protocol][0] if family == "mini" else args.teacher,
                 "method": "external", "relaxation": "none",
                 "refinement": "none", "seed": 0, "plugins": [],
                 "params": {"evaluate.samples": str(Path(args.samples).resolve()),
                            "evaluate.protocol": args.protocol, "evaluate.label": args.label,
                            "evaluate.reference": str(Path(args.reference).resolve()) if args.reference else None,
                            "evaluate.metrics": args.metrics, **{f"evaluate.{k}": v for k, v in ident.items()
                                                                if k.endswith("sha256")}}},
        "status": "ok", "error": None, "metrics": {}, "curves": {}, "samples": {"path": str(args.samples)},
        "info": {"identity": ident}}
    try:
        values, count = compute(args, run_dir, private_dir(cache_dir(args.results)))
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
                      "accelerator_hours": wall / 3600 if args.device.startswith("cuda") else 0.0,
                      "stages": {"eval_s": wall}}
    path = store.write_record(run_dir, record)
    if record["status"] == "failed":
        print(f"error: {record['error']['type']}: {record['error']['message']} (record: {path})", file=sys.stderr)
        return 1
    for key, value in record["metrics"].items():
        shown = "not finite" if value["value"] is None else f"{value['value']:.6g}"
        print(f"{key:<24} {shown}   [{value['protocol_id']}]")
    if record["status"] == "diverged":
        print(f"error: some metric is not finite (record: {path})", file=sys.stderr)
        return 1
    print(f"record: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

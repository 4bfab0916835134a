"""GenEval (djghosh13/geneval) as an external tool run in its own environment.

GenEval needs mmdet 2.x from a source checkout, mmcv-full 1.7 built with CUDA ops and a CUDA device
(`evaluate_images.py` asserts it); none of that belongs in the harness's environment
(docs/metrics.md, "GenEval"). The contract is a folder in, a JSON-lines file out:

1. `write_layout` writes images in GenEval's layout from its prompt metadata (read from the user's
   checkout, `prompts/evaluation_metadata.jsonl`, 553 prompts):
       <dir>/<i:05d>/metadata.jsonl        the i-th metadata line (one JSON object)
       <dir>/<i:05d>/samples/<j:05d>.png   image j of prompt i (4 per prompt)
2. `check_layout` counts them (the evaluator skips missing folders and files silently);
3. `run_evaluator` runs `evaluation/evaluate_images.py` (the command is configurable) with
   GenEval's interpreter as a subprocess, offline (`HF_HUB_OFFLINE=1` unless set);
4. `parse_results` / `summarize` read `results.jsonl` and compute what `summary_scores.py` prints:
   per-task accuracy over images and Overall = the unweighted mean of the 6 task accuracies.

Configuration (`GenEvalConfig.from_env`): `SOFTDIMO_GENEVAL_DIR` (checkout), `SOFTDIMO_GENEVAL_PYTHON`
(its environment's interpreter), `SOFTDIMO_GENEVAL_COMMAND` (a full command template),
`SOFTDIMO_GENEVAL_OPTIONS` ("k=v k=v"). The detector is the asset `geneval-mask2former`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from harness.contracts.entries import MetricValue
from harness.store import assets
from softdimo.files import atomic_write

PROTOCOL = "geneval"                  # the one protocol: GenEval's own evaluator, Overall = mean of the 6 tasks
GENEVAL_TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
IMAGES_PER_PROMPT = 4
METADATA_FILE = "prompts/evaluation_metadata.jsonl"
DETECTOR_FILE = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth"
DEFAULT_COMMAND = ("{python}", "{geneval_dir}/evaluation/evaluate_images.py", "{image_dir}",
                   "--outfile", "{outfile}", "--model-path", "{detector_dir}")
DEFAULT_OPTIONS = {"threshold": "0.3", "counting_threshold": "0.9", "max_objects": "16",
                   "max_overlap": "1.0", "position_threshold": "0.1"}   # evaluate_images.py defaults
_SAMPLE_NAME = re.compile(r"\d+\.png")

# GenEval's detector (read by GenEval's own environment).
GENEVAL_ASSETS = assets.declare(
    assets.Asset("geneval-mask2former", "geneval/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth",
                 "https://download.openmmlab.com/mmdetection/v2.0/mask2former/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco/"
                 "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth "
                 "(or GenEval's evaluation/download_models.sh <dir>)",
                 env_var="SOFTDIMO_GENEVAL_DETECTOR",
                 description="GenEval's Mask2Former Swin-S detector (read by GenEval's own environment)"),
)

#----------------------------------------------------------------------------
# Configuration.


# Where GenEval lives and how its evaluator is started.
@dataclass(frozen=True)
class GenEvalConfig:
    geneval_dir: Path                                 # the user's GenEval checkout
    python: str = "python"                            # interpreter of GenEval's own environment
    command: tuple[str, ...] = DEFAULT_COMMAND        # placeholders: python geneval_dir image_dir outfile detector_dir
    options: dict[str, str] = field(default_factory=dict)  # evaluate_images.py --options k=v
    timeout_s: float | None = None

    # The configuration from SOFTDIMO_GENEVAL_* environment variables; arguments override them.
    @classmethod
    def from_env(cls, geneval_dir: Path | None = None, python: str | None = None) -> "GenEvalConfig":
        folder = geneval_dir or os.environ.get("SOFTDIMO_GENEVAL_DIR")
        if not folder:
            raise ValueError("GenEval needs SOFTDIMO_GENEVAL_DIR (a checkout of djghosh13/geneval) and "
                             "SOFTDIMO_GENEVAL_PYTHON (the interpreter of an environment with mmdet 2.x, "
                             "mmcv-full 1.7, open_clip and clip_benchmark; see docs/metrics.md, GenEval)")
        command = os.environ.get("SOFTDIMO_GENEVAL_COMMAND")
        options = dict(o.split("=", 1) for o in shlex.split(os.environ.get("SOFTDIMO_GENEVAL_OPTIONS", "")))
        return cls(Path(folder), python or os.environ.get("SOFTDIMO_GENEVAL_PYTHON", "python"),
                   tuple(shlex.split(command)) if command else DEFAULT_COMMAND, options)

    @property
    def metadata_path(self) -> Path:
        return self.geneval_dir / METADATA_FILE

    # The evaluator's command line for one image folder.
    def evaluator_command(self, image_dir: Path, outfile: Path) -> list[str]:
        values = {"python": self.python, "geneval_dir": str(self.geneval_dir), "image_dir": str(image_dir),
                  "outfile": str(outfile)}
        if any("{detector_dir}" in part for part in self.command):
            values["detector_dir"] = str(detector_dir())
        cmd = [part.format(**values) for part in self.command]
        if self.options:
            cmd += ["--options", *(f"{k}={v}" for k, v in sorted(self.options.items()))]
        return cmd


# The folder holding GenEval's detector checkpoint under the name evaluate_images.py expects.
def detector_dir() -> Path:
    path = assets.resolve("geneval-mask2former")
    if path.name != DETECTOR_FILE:
        raise ValueError(f"{path}: GenEval loads <model-path>/{DETECTOR_FILE}; name the file so")
    return path.parent


#----------------------------------------------------------------------------
# Prompts and layout.


# GenEval's prompt metadata: one JSON object per line with at least "tag" and "prompt".
def read_metadata(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GenEval prompt metadata not found (set SOFTDIMO_GENEVAL_DIR to "
                                f"a checkout of djghosh13/geneval)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not {"tag", "prompt"} <= set(row) or row["tag"] not in GENEVAL_TASKS:
            raise ValueError(f"{path}:{n}: expected 'tag' (one of {', '.join(GENEVAL_TASKS)}) and 'prompt'")
        rows.append(row)
    return rows


# Write images (HWC uint8, prompt-major: image j of prompt i at i * per_prompt + j) in GenEval's layout.
def write_layout(out_dir: Path, metadata: Sequence[dict[str, Any]], images: Sequence[np.ndarray],
                 per_prompt: int = IMAGES_PER_PROMPT) -> Path:
    if len(images) != len(metadata) * per_prompt:
        raise ValueError(f"{len(images)} images for {len(metadata)} prompts x {per_prompt}; expected "
                         f"{len(metadata) * per_prompt}")
    out_dir = Path(out_dir)
    for i, meta in enumerate(metadata):
        folder = out_dir / f"{i:05d}"
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "metadata.jsonl", json.dumps(meta))
        for j in range(per_prompt):
            image = Image.fromarray(images[i * per_prompt + j])
            atomic_write(folder / "samples" / f"{j:05d}.png", lambda tmp: image.save(tmp))
    return out_dir


# Check a layout against the metadata (every prompt folder, its metadata, exactly per_prompt
# samples); returns the number of images the evaluator will score.
def check_layout(image_dir: Path, metadata: Sequence[dict[str, Any]], per_prompt: int = IMAGES_PER_PROMPT) -> int:
    image_dir = Path(image_dir)
    problems = []
    for i, meta in enumerate(metadata):
        folder = image_dir / f"{i:05d}"
        meta_file = folder / "metadata.jsonl"
        if not meta_file.is_file():
            problems.append(f"{folder.name}: no metadata.jsonl")
            continue
        if json.loads(meta_file.read_text()) != meta:
            problems.append(f"{folder.name}: metadata.jsonl differs from line {i + 1} of the prompt metadata")
        samples = [p for p in (folder / "samples").glob("*.png") if _SAMPLE_NAME.fullmatch(p.name)] \
            if (folder / "samples").is_dir() else []
        if len(samples) != per_prompt:
            problems.append(f"{folder.name}: {len(samples)} samples, expected {per_prompt}")
    extra = [p.name for p in image_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) >= len(metadata)]
    if extra:
        problems.append(f"{len(extra)} prompt folders beyond the {len(metadata)} prompts (first {sorted(extra)[0]})")
    if problems:
        raise ValueError(f"{image_dir}: not a complete GenEval layout ({len(problems)} problems): "
                         + "; ".join(problems[:5]))
    return len(metadata) * per_prompt


#----------------------------------------------------------------------------
# Running the evaluator and reading its results.


# Run the evaluator as a subprocess (output to `log`); raise with the log's tail if it fails.
def run_evaluator(config: GenEvalConfig, image_dir: Path, outfile: Path, log: Path) -> Path:
    cmd = config.evaluator_command(Path(image_dir), Path(outfile))
    Path(outfile).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=assets.offline_environment(),
                              cwd=config.geneval_dir if config.geneval_dir.is_dir() else None,
                              timeout=config.timeout_s)
    if proc.returncode != 0 or not Path(outfile).is_file():
        tail = "\n".join(Path(log).read_text().splitlines()[-20:])
        why = f"exit status {proc.returncode}" if proc.returncode else f"no {outfile} written"
        raise RuntimeError(f"GenEval evaluator failed ({why}): {shlex.join(cmd)}\n--- {log} (tail) ---\n{tail}")
    return Path(outfile)


# One scored image of results.jsonl.
@dataclass(frozen=True)
class GenEvalResult:
    tag: str
    correct: bool
    metadata: str            # the prompt's metadata as a JSON string (groups images by prompt)


# Read results.jsonl (one JSON object per image with "tag", "correct" and "metadata").
def parse_results(path: Path) -> list[GenEvalResult]:
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
        missing = {"tag", "correct", "metadata"} - set(row)
        if missing or not isinstance(row["correct"], bool) or row["tag"] not in GENEVAL_TASKS:
            raise ValueError(f"{path}:{n}: expected 'tag' in {GENEVAL_TASKS}, boolean 'correct' and "
                             f"'metadata' (missing: {sorted(missing)})")
        meta = row["metadata"] if isinstance(row["metadata"], str) else json.dumps(row["metadata"])
        out.append(GenEvalResult(row["tag"], row["correct"], meta))
    return out


# What summary_scores.py prints.
@dataclass(frozen=True)
class GenEvalSummary:
    tasks: dict[str, float]          # per-task accuracy over images
    overall: float                   # unweighted mean of the task accuracies
    images: int
    prompts: int
    correct_images: float            # fraction of images correct
    correct_prompts: float           # fraction of prompts with at least one correct image


# Per-task accuracy, the overall score (mean of the 6 task accuracies) and the image / prompt rates.
def summarize(results: Sequence[GenEvalResult]) -> GenEvalSummary:
    if not results:
        raise ValueError("no GenEval results to summarise")
    tasks = {t: float(np.mean([r.correct for r in results if r.tag == t])) for t in GENEVAL_TASKS
             if any(r.tag == t for r in results)}
    by_prompt: dict[str, bool] = {}
    for r in results:
        by_prompt[r.metadata] = by_prompt.get(r.metadata, False) or r.correct
    return GenEvalSummary(tasks, float(np.mean(list(tasks.values()))), len(results), len(by_prompt),
                          float(np.mean([r.correct for r in results])), float(np.mean(list(by_prompt.values()))))


# Evaluate a GenEval layout: check it, run the evaluator, check its output count, summarise.
def evaluate(image_dir: Path, config: GenEvalConfig, work_dir: Path,
             per_prompt: int = IMAGES_PER_PROMPT) -> dict[str, MetricValue]:
    metadata = read_metadata(config.metadata_path)
    expected = check_layout(image_dir, metadata, per_prompt)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    results_path = run_evaluator(config, Path(image_dir), work_dir / "results.jsonl", work_dir / "geneval.log")
    results = parse_results(results_path)
    if len(results) != expected:
        raise ValueError(f"{results_path}: {len(results)} results for {expected} images; the evaluator "
                         f"skipped images (see {work_dir / 'geneval.log'})")
    summary = summarize(results)
    missing = [t for t in GENEVAL_TASKS if t not in summary.tasks]
    if missing:
        raise ValueError(f"{results_path}: no results for task(s) {', '.join(missing)}; Overall is the mean of all 6")
    protocol = _protocol(config, metadata, per_prompt, expected)
    out = {"geneval": MetricValue(summary.overall, True, {**protocol, "metric": "geneval"})}
    for task, acc in summary.tasks.items():
        out[f"geneval_{task}"] = MetricValue(acc, True, {**protocol, "metric": f"geneval_{task}"})
    return out


def _protocol(config: GenEvalConfig, metadata: Sequence[dict[str, Any]], per_prompt: int, n: int) -> dict[str, Any]:
    body = "\n".join(json.dumps(m, sort_keys=True) for m in metadata)
    protocol: dict[str, Any] = {
        "name": PROTOCOL, "num_prompts": len(metadata), "images_per_prompt": per_prompt, "num_samples": n,
        "metadata_sha256": hashlib.sha256(body.encode()).hexdigest(),
        "options": {**DEFAULT_OPTIONS, **config.options}, "overall": "mean of 6 task accuracies",
        "evaluator": "evaluation/evaluate_images.py" if config.command == DEFAULT_COMMAND else "custom command"}
    if any("{detector_dir}" in part for part in config.command):
        protocol["detector"] = DETECTOR_FILE
        protocol["detector_sha256"] = assets.sha256_file(detector_dir() / DETECTOR_FILE)
    commit = _git_commit(config.geneval_dir)
    if commit:
        protocol["geneval_commit"] = commit
    return protocol


def _git_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None

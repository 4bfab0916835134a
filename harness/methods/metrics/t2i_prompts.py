"""The prompt lists of the text-to-image FID protocols: which captions a sample set must be made from.

- COCO-30k (T2IBenchmark, boomb0om/text2image-benchmark release v0.0.1): the CSV
  `MS-COCO_val2014_30k_captions.csv` (columns `image_id`, `text`), read as T2IBenchmark's
  `get_coco_30k_captions` does (a dict image_id -> text, so the first occurrence of an id fixes its
  position and the last fixes its text); caption i is the prompt of sample i.
- MJHQ-30K (playgroundai/MJHQ-30K): `meta_data.json`, {image id: {"category", "prompt"}}, in the
  file's order; 10 categories of 3,000 prompts each.

A grid's text-to-image teachers read their evaluation prompts from a text file (one prompt per
line, stripped, empty lines skipped), so a caption enters a run as its *line form*: line breaks
become spaces and the ends are stripped (CLIP tokenizers collapse whitespace anyway). Write the
file a grid needs with

    python -m harness.methods.metrics.t2i_prompts PROTOCOL OUT.txt     # e.g. coco30k-fid-t2ibenchmark

Nothing here downloads: both files are assets (`python -m harness.prepare.assets check`).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.store import assets
from softdimo.files import atomic_write

MJHQ_CATEGORIES = ("animals", "art", "fashion", "food", "indoor", "landscape", "logo", "people", "plants",
                   "vehicles")

PROMPT_ASSETS = assets.declare(
    assets.Asset("t2ibenchmark-coco-30k-captions", "t2ibenchmark/MS-COCO_val2014_30k_captions.csv",
                 "https://github.com/boomb0om/text2image-benchmark/releases/download/v0.0.1/"
                 "MS-COCO_val2014_30k_captions.csv (T2IBenchmark caches it in ~/.cache/T2IBenchmark/)",
                 env_var="SOFTDIMO_COCO30K_CAPTIONS",
                 description="T2IBenchmark's 30,000 MS-COCO val2014 captions (image_id,text), the prompts of "
                             "COCO FID-30k; sha256 not published (GitHub release asset)"),
    assets.Asset("mjhq30k-meta-data", "mjhq30k/meta_data.json",
                 "https://huggingface.co/datasets/playgroundai/MJHQ-30K/resolve/main/meta_data.json",
                 env_var="SOFTDIMO_MJHQ30K_META",
                 search=(assets.HF_HUB + "/datasets--playgroundai--MJHQ-30K/snapshots/*/meta_data.json",),
                 description="MJHQ-30K prompts and categories ({id: {category, prompt}}, 30,000 entries); "
                             "sha256 not published (a plain git file on the hub, not LFS)"),
)


# One prompt list: its asset and how to read it into (prompt, category or None) pairs.
@dataclass(frozen=True)
class PromptSet:
    name: str
    asset: str
    read: Callable[[Path], list[tuple[str, str | None]]]
    description: str = ""


# COCO-30k captions as T2IBenchmark reads them (a dict image_id -> text, in file order).
def read_coco_captions(path: Path) -> list[tuple[str, str | None]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"image_id", "text"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}; expected image_id,text "
                             f"(T2IBenchmark's MS-COCO_val2014_30k_captions.csv)")
        by_id: dict[int, str] = {}
        for line, row in enumerate(reader, start=2):
            try:
                by_id[int(row["image_id"])] = row["text"]
            except ValueError:
                raise ValueError(f"{path}:{line}: image_id {row['image_id']!r} is not an integer") from None
    return [(text, None) for text in by_id.values()]


# MJHQ-30K prompts and categories in the order of meta_data.json.
def read_mjhq_meta(path: Path) -> list[tuple[str, str | None]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{image id: {{category, prompt}}}}")
    out = []
    for key, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str):
            raise ValueError(f"{path}: entry {key!r} has no string 'prompt'")
        if entry.get("category") not in MJHQ_CATEGORIES:
            raise ValueError(f"{path}: entry {key!r} has category {entry.get('category')!r}; allowed: "
                             f"{', '.join(MJHQ_CATEGORIES)}")
        out.append((entry["prompt"], entry["category"]))
    return out


PROMPT_SETS = {s.name: s for s in (
    PromptSet("coco30k-t2ibenchmark", "t2ibenchmark-coco-30k-captions", read_coco_captions,
              "T2IBenchmark's COCO-30k captions"),
    PromptSet("mjhq30k", "mjhq30k-meta-data", read_mjhq_meta, "MJHQ-30K prompts (10 categories)"),
)}


# A caption as a line of a prompt file (what a teacher reading that file gets back).
def prompt_line(caption: str) -> str:
    return " ".join(caption.splitlines()).strip()


# The prompts of a prompt set, in their line form, from its asset (hash-checked where published).
def read_prompts(name: str) -> list[str]:
    if name not in PROMPT_SETS:
        raise KeyError(f"unknown prompt set {name!r}; allowed: {', '.join(PROMPT_SETS)}")
    prompt_set = PROMPT_SETS[name]
    path = assets.resolve(prompt_set.asset)
    lines = [prompt_line(p) for p, _ in prompt_set.read(path)]
    empty = [i for i, line in enumerate(lines) if not line]
    if empty:
        raise ValueError(f"{path}: prompt {empty[0]} is empty; a prompt file cannot hold it (its line would be "
                         f"skipped and every later prompt would move)")
    return lines


# Raise unless `prompts` are the first len(prompts) prompts of the set, in order.
def check_prompts(prompts: list[str], name: str) -> None:
    expected = read_prompts(name)
    if len(prompts) > len(expected):
        raise ValueError(f"{len(prompts)} prompts, but prompt set {name!r} has {len(expected)}")
    for i, (got, want) in enumerate(zip(prompts, expected)):
        if got != want:
            raise ValueError(f"prompt {i} is {got[:60]!r}, but prompt {i} of {name!r} is {want[:60]!r}: the "
                             f"samples must be made from the set's prompts in order (write them with "
                             f"`python -m harness.methods.metrics.t2i_prompts`)")


def main(argv: list[str] | None = None) -> int:
    from harness.methods.metrics.fid import FID_PROTOCOLS
    p = argparse.ArgumentParser(prog="python -m harness.methods.metrics.t2i_prompts",
                                description="write the prompts of a text-to-image FID protocol, one per line")
    p.add_argument("protocol", help="an FID protocol with a prompt set (e.g. coco30k-fid-t2ibenchmark)")
    p.add_argument("out", type=Path, help="the prompt file to write (teacher.eval_prompts)")
    args = p.parse_args(argv)
    with_prompts = [n for n, proto in FID_PROTOCOLS.items() if proto.prompts]
    if args.protocol not in with_prompts:
        print(f"error: protocol {args.protocol!r} has no prompt set; allowed: {', '.join(with_prompts)}",
              file=sys.stderr)
        return 2
    try:
        lines = read_prompts(FID_PROTOCOLS.get(args.protocol).prompts)
    except (assets.AssetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    atomic_write(args.out, "\n".join(lines) + "\n")
    print(f"wrote {len(lines)} prompts to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

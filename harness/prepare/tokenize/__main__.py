"""`python -m harness.prepare.tokenize --teacher maskbit --images DIR --out FILE`: tokenise a class-per-folder
image tree (ImageNet's `train/`) with the teacher's own encoder into the safetensors file
`teacher.real_tokens` names (the GAN refinement's real branch).

    python -m harness.prepare.tokenize --teacher maskbit --images /data/imagenet/train \\
        --out ~/.cache/softdimo/assets/maskbit/imagenet_train_tokens_14bit.safetensors [--set bits=14]

Resumable: a stopped run continues from its last finished chunk. Sharded: `--num-shards K` splits
the images into K contiguous shards; run shard `--shard s` in K processes, or as a SLURM array
(`sbatch --array=0-<K-1>`: the shard defaults to `$SLURM_ARRAY_TASK_ID`). The last shard to finish
merges; `--merge` merges a finished set of shards by hand. Exit status 0 when this shard finished
(or the file was already complete), 2 on bad input.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from harness.methods.environment import device as default_device
from harness.prepare.tokenize.preprocess import PRESETS
from harness.prepare.tokenize.work import DEFAULT_PRESETS, Job, merge_only, run_shard
from harness.store.assets import AssetError

#----------------------------------------------------------------------------


# `KEY=VALUE` of `--set` -> (key, value), the value read as YAML (14 -> int, tiny -> str).
def _setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE (a teacher.* field, e.g. bits=14)")
    return key.removeprefix("teacher."), yaml.safe_load(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m harness.prepare.tokenize", description="Tokenise a class-per-folder "
                                 "image tree with a teacher's own encoder into a teacher.real_tokens file.")
    ap.add_argument("--teacher", choices=sorted(DEFAULT_PRESETS), help="whose encoder and token layout")
    ap.add_argument("--images", type=Path, help="folder of class folders (<DIR>/<class>/<image>)")
    ap.add_argument("--out", type=Path, required=True, help="the safetensors file to write")
    ap.add_argument("--set", dest="params", action="append", type=_setting, default=[], metavar="KEY=VALUE",
                    help="a teacher.* field (bits=14, tokenizer_weights=PATH, ...); repeatable")
    ap.add_argument("--preprocess", choices=sorted(PRESETS),
                    help="resize / crop rule (default: the teacher's own: " +
                         ", ".join(f"{t}: {p}" for t, p in DEFAULT_PRESETS.items()) + ")")
    ap.add_argument("--flip", action="store_true", help="also tokenise each image's horizontal mirror")
    ap.add_argument("--classes", type=Path, help="class list: one folder name per line in label order "
                                                 "(needed when DIR holds only some classes)")
    ap.add_argument("--num-shards", type=int, default=1, help="contiguous shards the images are split into")
    ap.add_argument("--shard", type=int, help="this process's shard (default: $SLURM_ARRAY_TASK_ID, else 0)")
    ap.add_argument("--chunk-size", type=int, default=2048, help="images per resume point")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=4, help="image-decoding processes")
    ap.add_argument("--device", help="default: $SOFTDIMO_DEVICE, else CUDA when available, else the CPU")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--merge", action="store_true", help="only merge the finished shards of --out")
    args = ap.parse_args(argv)
    if not args.merge and (args.teacher is None or args.images is None):
        ap.error("--teacher and --images are required (except with --merge)")
    for name in ("num_shards", "chunk_size", "batch_size"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers < 0:
        ap.error("--workers must be at least 0")
    if args.shard is None:
        args.shard = int(os.environ.get("SLURM_ARRAY_TASK_ID", 0))
    return args


# Run the command; returns the exit status.
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731 (stdout: the result line)
    out = Path(os.path.expanduser(args.out))
    try:
        if args.merge:
            outcome = merge_only(out)
        else:
            job = Job(teacher=args.teacher, images=args.images, out=out, params=tuple(args.params),
                      preprocess=args.preprocess, flip=args.flip, classes=args.classes,
                      num_shards=args.num_shards, shard=args.shard, chunk_size=args.chunk_size,
                      batch_size=args.batch_size, workers=args.workers,
                      device=args.device or str(default_device()), progress=not args.no_progress)
            outcome = run_shard(job, log)
    except (ValueError, FileNotFoundError, FileExistsError, AssetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{outcome}: {out}" if outcome != "shard done" else
          f"shard done; {out} is merged by the last shard to finish (or --merge)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

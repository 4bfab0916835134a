"""FID throughput through the harness vs the bare library calls, on the same images and weights.

    python benchmarks/fid_throughput.py [--images 32] [--size 64] [--repeats 3] [--device cpu]
                                        [--batch-size 16] [--threads 1] [--weights-dir DIR] [--no-readme] [--note TEXT]

Rows (images per second, median of `--repeats`; reference statistics computed once beforehand):
- features, clean-fid legacy_tensorflow: `cleanfid.fid.get_folder_features` vs the harness's
  `extract_features` (same model object, same loader settings);
- FID, clean-fid: features + `cleanfid.fid.frechet_distance` against an npz of mu/sigma (what
  Di[M]O's eval script does) vs `harness.methods.metrics.fid.evaluate(..., "fid-legacy-tf")` (which also
  hashes the sample files for its cache key and protocol, and loads and hashes the reference);
- FID, torch-fidelity: `torch_fidelity.calculate_metrics(fid=True)` with the reference cached by
  name (it builds its extractor on every call) vs `evaluate(..., "fid-tfidelity")`.

Without `--weights-dir` (holding inception-2015-12-05.pt and
weights-inception-2015-12-05-6726825d.pth) the seeded random weights of
`harness.methods.metrics.random_weights` are used: same architecture, same cost, meaningless values.
The figures are written to the `fid_throughput` section of benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.methods.metrics import features, fid  # noqa: E402
from harness.methods.metrics.random_weights import (write_cleanfid_inception,  # noqa: E402
                                                   write_tfidelity_inception)
from harness.methods.samples import open_samples  # noqa: E402
from harness.store import assets  # noqa: E402

TS_NAME, TF_NAME = "inception-2015-12-05.pt", "weights-inception-2015-12-05-6726825d.pth"
README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- fid_throughput:start -->", "<!-- fid_throughput:end -->"


def write_images(folder: Path, n: int, size: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
    return folder


# Median wall time of `bare` and `ours`, interleaved (a shared machine's load drifts), and their outputs.
def median_times(bare: Callable[[], object], ours: Callable[[], object], repeats: int) -> tuple[float, float, object, object]:
    times: dict[int, list[float]] = {0: [], 1: []}
    outs: list[object] = [None, None]
    for _ in range(repeats):
        for k, fn in enumerate((bare, ours)):
            features._MEMO.clear()
            t0 = time.perf_counter()
            outs[k] = fn()
            times[k].append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1]), outs[0], outs[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--weights-dir", type=Path)
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--note", default="", help="a sentence added to the README section (e.g. the machine's load)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    tmp = Path(tempfile.mkdtemp(prefix="fid_throughput_"))
    wdir = args.weights_dir or tmp / "weights"
    if args.weights_dir is None:
        write_cleanfid_inception(wdir / TS_NAME)
        write_tfidelity_inception(wdir / TF_NAME)
        assets.accept_stand_in("inception-2015-12-05-tfidelity", wdir / TF_NAME)   # not the released file
    os.environ["SOFTDIMO_INCEPTION_TORCHSCRIPT"] = str(wdir / TS_NAME)
    os.environ["SOFTDIMO_INCEPTION_TFIDELITY"] = str(wdir / TF_NAME)
    samples = write_images(tmp / "samples", args.images, args.size, seed=1)
    ref_dir = write_images(tmp / "reference", args.images, args.size, seed=2)
    n, b = args.images, args.batch_size

    from cleanfid import fid as cleanfid
    from cleanfid.inception_torchscript import InceptionV3W
    import torch_fidelity
    model = InceptionV3W(str(wdir), download=False, resize_inside=True).to(device).eval()
    extractor = features.load_extractor("clean-fid/legacy_tensorflow", wdir / TS_NAME, device)

    # Reference statistics, computed once for every row.
    ref_feats = cleanfid.get_folder_features(str(ref_dir), model, num_workers=0, batch_size=b, device=device,
                                             mode="legacy_tensorflow", verbose=False)
    np.savez(tmp / "ref_legacy.npz", mu=ref_feats.mean(0), sigma=np.cov(ref_feats, rowvar=False))
    tf_ext = features.load_extractor("torch-fidelity/inception-v3-compat", wdir / TF_NAME, device)
    tf_ref = features.extract_features(open_samples(ref_dir), tf_ext, b)
    np.savez(tmp / "ref_tfid.npz", mu=tf_ref.mu, sigma=tf_ref.sigma)
    tf_kwargs = dict(input1=str(samples), input2=str(ref_dir), input2_cache_name="bench-reference", fid=True,
                     cuda=device.type == "cuda", batch_size=b, feature_extractor_weights_path=str(wdir / TF_NAME),
                     cache_root=str(tmp / "tfid_cache"), save_cpu_ram=True, verbose=False)
    torch_fidelity.calculate_metrics(**{**tf_kwargs, "input1": str(ref_dir), "input1_cache_name": "bench-reference",
                                        "input2": str(ref_dir)})                      # caches the reference

    def bare_features():
        return cleanfid.get_folder_features(str(samples), model, num_workers=0, batch_size=b, device=device,
                                            mode="legacy_tensorflow", verbose=False)

    def bare_cleanfid():
        f = bare_features()
        ref = np.load(tmp / "ref_legacy.npz")
        return cleanfid.frechet_distance(f.mean(0), np.cov(f, rowvar=False), ref["mu"], ref["sigma"])

    rows = []
    for label, bare, ours in (
        ("features, clean-fid legacy_tensorflow", bare_features,
         lambda: features.extract_features(open_samples(samples), extractor, b)),
        ("FID, clean-fid legacy_tensorflow", bare_cleanfid,
         lambda: fid.evaluate(open_samples(samples), "fid-legacy-tf", ["fid"], tmp / "ref_legacy.npz",
                              device=device, batch_size=b)["fid"].value),
        ("FID, torch-fidelity inception-v3-compat",
         lambda: torch_fidelity.calculate_metrics(**tf_kwargs)["frechet_inception_distance"],
         lambda: fid.evaluate(open_samples(samples), "fid-tfidelity", ["fid"], tmp / "ref_tfid.npz",
                              device=device, batch_size=b)["fid"].value),
    ):
        t_bare, t_ours, v_bare, v_ours = median_times(bare, ours, args.repeats)
        agree = "" if isinstance(v_bare, np.ndarray) else f"{abs(v_ours - v_bare) / abs(v_bare):.1e}"
        rows.append((label, n / t_bare, n / t_ours, t_bare / t_ours, agree))
        print(f"{label:<42} bare {n / t_bare:7.2f} img/s   harness {n / t_ours:7.2f} img/s   "
              f"ratio {t_bare / t_ours:5.2f}x   rel. diff {agree or '-'}", flush=True)

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {args.threads} thread(s))"
    weights = "seeded random weights (harness.methods.metrics.random_weights)" if args.weights_dir is None else str(args.weights_dir)
    lines = [START, "## FID throughput (`benchmarks/fid_throughput.py`)", "",
             f"{n} PNG images of {args.size}x{args.size} (resized to 299 inside the network), batch {b}, "
             f"device: {device_name}; weights: {weights}; median of {args.repeats}; reference statistics "
             f"computed once beforehand. Ratio = harness throughput / bare library throughput (target >= 0.95).",
             "", "| row | bare library (img/s) | harness (img/s) | ratio | FID rel. diff |", "|---|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]:.2f} | {r[2]:.2f} | {r[3]:.2f} | {r[4] or '-'} |" for r in rows]
    lines += ["", "The FID rows include the Frechet distance: clean-fid's `scipy.linalg.sqrtm` and torch-fidelity's "
              "`eigvals` against the harness's pivoted-Cholesky form (see harness/methods/metrics/fid.py); at this small N "
              "it dominates on CPU, so these rows favour the harness. The features row isolates the image "
              "loader and network." + (f" {args.note}" if args.note else ""), END]
    if not args.no_readme:
        text = README.read_text() if README.exists() else "# Benchmarks\n"
        section = "\n".join(lines)
        if START in text and END in text:
            text = text[:text.index(START)] + section + text[text.index(END) + len(END):]
        else:
            text = text.rstrip() + "\n\n" + section + "\n"
        README.write_text(text)
        print(f"wrote {README}")


if __name__ == "__main__":
    main()

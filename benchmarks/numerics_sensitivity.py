"""Which settings of a CPU change the mini scale's numbers, stage by stage.

Each setting (environment variables read when torch starts, or torch's thread count) runs in a
fresh process, and every stage runs on fixed inputs, so a stage whose hash changes is where the
setting enters, whatever happened before it:

- `randn`, `rand`, `dropout_mask`: the random draws (torch.randn, torch.rand, a dropout mask
  drawn the way training draws it);
- `teacher_train`: 40 steps of digits teacher training from its fixed initialisation (no dropout);
- `distill_no_dropout`, `distill_dropout`: 3 Di[M]O steps on a fixed digits network, without and
  with the default dropout (0.1);
- `sample`: one-step samples (tokens) of 256 images from a fixed network;
- `metric`: digits_fd of fixed images (the test split with noise), as a decimal string.

    python benchmarks/numerics_sensitivity.py [--settings NAME ...]

Prints one row per setting with a short hash per stage; "=" marks a stage equal to the first row.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from typing import Any

SETTINGS: dict[str, dict[str, str]] = {
    "host default": {},
    "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
    "MKL_CBWR=AVX2": {"MKL_CBWR": "AVX2"},
    "MKL_CBWR=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
    "ONEDNN_MAX_CPU_ISA=AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "2 threads": {"PROBE_THREADS": "2"},
}
STAGES = ("randn", "rand", "dropout_mask", "teacher_train", "distill_no_dropout", "distill_dropout",
          "sample", "metric")


def _digest(tensors: Any) -> str:
    import torch
    h = hashlib.sha256()
    items = tensors.items() if isinstance(tensors, dict) else [("", tensors)]
    for name, t in sorted(items):
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:10]


# The stages, in this process (run as `--probe`); prints a JSON dict of stage -> hash.
def probe() -> None:
    import torch

    from harness.contracts.entries import EvalInput, RunContext
    from harness.grid.spec import RunSpec
    from harness.methods.metrics.digits import NETWORK_METRICS
    from softdimo.config import DistillConfig, RelaxConfig
    from softdimo.data import digits as data
    from softdimo.relax import RELAXATIONS
    from softdimo.teachers.base import ImageNoise
    from softdimo.teachers.digits import DigitsConfig, DigitsTeacher, encode_labels, new_network
    from softdimo.teachers.small_mdm import MDMTrainSettings, train_mdm
    from softdimo.train import Distiller, generate

    torch.set_num_threads(int(os.environ.get("PROBE_THREADS", "1")))
    out: dict[str, str] = {}
    g = torch.Generator().manual_seed(0)
    out["randn"] = _digest(torch.randn(4096, generator=g))
    out["rand"] = _digest(torch.rand(4096, generator=g))
    torch.manual_seed(0)
    out["dropout_mask"] = _digest(torch.nn.functional.dropout(torch.ones(4096), 0.1, True))

    config = DigitsConfig()
    tokens, labels = data.split_tokens("train", config.levels)
    network = new_network(config)

    def batches(step: int, gen: torch.Generator) -> tuple[torch.Tensor, list]:
        idx = torch.randint(tokens.shape[0], (config.batch_size,), generator=gen)
        return tokens[idx][..., None], labels[idx].tolist()
    settings = MDMTrainSettings(steps=40, batch_size=config.batch_size, lr=config.lr, warmup_steps=10,
                                weight_decay=config.weight_decay, label_dropout=config.label_dropout,
                                grad_clip=1.0)
    train_mdm(network, batches, encode_labels, settings, seed=0)
    out["teacher_train"] = _digest(network.state_dict())

    teacher = DigitsTeacher(config, new_network(config), {})
    for name, cfg in (("distill_no_dropout", DistillConfig(dropout=0.0, teacher_dropout=0.0)),
                      ("distill_dropout", DistillConfig())):
        d = Distiller(teacher, RELAXATIONS["hard"][0], RelaxConfig(), cfg, seed=0)
        for _ in range(3):
            d.train_step()
        out[name] = _digest(d.generator.state_dict())

    cond = teacher.encode_condition(teacher.eval_conditions(256))
    samples, _ = generate(teacher.network, cond, ImageNoise(0, range(256)), r_init=1.0, sigma_init=1.0)
    out["sample"] = _digest(samples)

    images, test_labels = data.split_images("test", config.levels)
    noisy = (images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    spec = RunSpec.from_json({"scale": "mini", "teacher": "digits", "method": "dimo", "relaxation": "hard",
                              "refinement": "none", "seed": 0, "params": {"teacher.levels": config.levels},
                              "plugins": []})
    inp = EvalInput(spec=spec, images=noisy, conditions=test_labels.tolist(), tokens=None, teacher=teacher)
    ctx = RunContext(run_dir=None, cache_dir=None, device=torch.device("cpu"), threads=1, log=print)
    fd = NETWORK_METRICS.reduce_fd(inp, NETWORK_METRICS.extract_features(inp, ctx), ctx)["digits_fd"]
    out["metric"] = repr(fd.value)
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe()
        return
    rows = {}
    for name in args.settings:
        env = {**os.environ, **SETTINGS[name]}
        done = subprocess.run([sys.executable, __file__, "--probe"], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name}: probe failed\n{done.stderr}")
        rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
    first = rows[args.settings[0]]
    width = max(len(n) for n in rows)
    print(f"{'setting':<{width}}  " + "  ".join(f"{s:<18}" for s in STAGES))
    for name, row in rows.items():
        cells = [(("=" if row[s] == first[s] and name != args.settings[0] else row[s][:18])) for s in STAGES]
        print(f"{name:<{width}}  " + "  ".join(f"{c:<18}" for c in cells))


if __name__ == "__main__":
    main()

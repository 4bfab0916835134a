"""Seeded random-weight files in the released files' formats, for tests and benchmarks (no downloads).

Each writer builds the real network class (or, for clean-fid's TorchScript file, a scripted module
with the interface clean-fid calls) with seeded random weights and saves it in the format of the
released file, so the harness loads it through the same path a user's real file takes. Numbers
computed with these weights test the plumbing, never the paper's values.

- `write_tfidelity_inception`: torch-fidelity's `FeatureExtractorInceptionV3` state dict (the
  format of `weights-inception-2015-12-05-6726825d.pth`).
- `write_cleanfid_inception`: a TorchScript archive like StyleGAN2-ADA's `inception-2015-12-05.pt`:
  `forward(img, return_features)` resizes to 299 inside (affine grid + bilinear sampling, as the
  released graph does), normalises by (x - 128) / 128 and runs `layers` (the same Inception body,
  [B, 3, 299, 299] -> [B, 2048, 1, 1]); `.layers` is what clean-fid's `clean` mode calls directly.
- `write_open_clip`: an open_clip model of a named (or given) configuration, as a CLIP checkpoint
  (`pretrained=` file) and as an HPS checkpoint (`{"state_dict": ...}`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.methods.metrics.features import empty_tfidelity_inception, pool3_body
from softdimo.files import atomic_write

TINY_OPEN_CLIP = {   # a 2-layer open_clip config with the real tokenizer (vocab 49408, context 77)
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


# torch-fidelity's Inception-v3 with He-normal convolutions (BN at identity) and a N(0, 0.1^2)
# classifier, seeded.
def random_tfidelity_inception(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = empty_tfidelity_inception()
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.normal_(model.fc.weight, std=0.1)   # logits of order 1, so the IS is not trivially 1
    return model


# Write seeded torch-fidelity Inception weights (a state dict) to `path`.
def write_tfidelity_inception(path: Path, seed: int = 0) -> Path:
    model = random_tfidelity_inception(seed)
    return atomic_write(path, lambda tmp: torch.save(nn.Module.state_dict(model), tmp))


# The released TorchScript Inception's interface around an Inception body and a 1008-way head.
class _TorchScriptInception(nn.Module):
    def __init__(self, layers: nn.Module, output: nn.Linear):
        super().__init__()
        self.layers = layers
        self.output = output

    def forward(self, img: Tensor, return_features: bool = False) -> Tensor:
        batch_size, channels, height, width = img.shape
        x = img.to(torch.float32)
        theta = torch.eye(2, 3, device=x.device)
        theta[0, 2] += theta[0, 0] / width - theta[0, 0] / 299      # TF-style resize: no half-pixel shift
        theta[1, 2] += theta[1, 1] / height - theta[1, 1] / 299
        grid = F.affine_grid(theta.unsqueeze(0).repeat(batch_size, 1, 1), [batch_size, channels, 299, 299],
                             align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        x = (x - 128) / 128
        features = self.layers(x).reshape(-1, 2048)
        if return_features:
            return features
        return F.softmax(self.output(features), dim=1)


# Write a seeded TorchScript Inception in the format of clean-fid's inception-2015-12-05.pt.
def write_cleanfid_inception(path: Path, seed: int = 0) -> Path:
    net = random_tfidelity_inception(seed)
    body = pool3_body(net).eval()
    with torch.no_grad():
        layers = torch.jit.trace(body, torch.zeros(1, 3, 299, 299))
    scripted = torch.jit.script(_TorchScriptInception(layers, net.fc).eval())
    return atomic_write(path, lambda tmp: torch.jit.save(scripted, str(tmp)))


# Register an open_clip architecture config (JSON file under `folder`) and return its name.
def register_open_clip_config(folder: Path, name: str = "softdimo-tiny-clip",
                              config: dict[str, Any] | None = None) -> str:
    import open_clip
    cfg = atomic_write(Path(folder) / f"{name}.json", json.dumps(config or TINY_OPEN_CLIP))
    open_clip.add_model_config(cfg)
    return name


# Write a seeded open_clip model `arch` as a CLIP checkpoint (`fmt="clip"`, a state dict that
# open_clip's `pretrained=<file>` loads) or an HPS checkpoint (`fmt="hps"`, {"state_dict": ...}).
def write_open_clip(path: Path, arch: str, fmt: str = "clip", seed: int = 0) -> Path:
    import open_clip
    if fmt not in ("clip", "hps"):
        raise ValueError(f"fmt {fmt!r}: allowed 'clip', 'hps'")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.create_model(arch, pretrained=None)
    state = model.state_dict()
    return atomic_write(path, lambda tmp: torch.save({"state_dict": state} if fmt == "hps" else state, tmp))

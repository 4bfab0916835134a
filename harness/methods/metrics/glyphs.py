"""Mini-scale metrics of the glyphs world (learned-codebook teacher), each an honest small-scale
analogue of a paper metric, all against the raw images of the world's held-out test split (2,000
images never tokenised: the tokenizer's reconstruction error counts, as it does in FID).

- `glyphs_fd`: Frechet distance between glyphs-cnn-v1 features of the samples and of the test
  split (the FID analogue).
- `glyphs_acc`: accuracy of an independent classifier (glyphs-cls-v1) against the conditioning
  labels (the GenEval analogue).
- `glyphs_pr`: k-NN precision and recall (Kynkaenniemi et al., k = 3) on the same features.
- `glyphs_colour`: exact colour consistency: the fraction of a sample's ink pixels whose colour is
  the sample's majority palette colour (1 for every real image; an image without ink scores 0),
  averaged over samples. A glyph has one colour, so this measures whether the tokens of a sample
  agree with each other, which per-token independent draws cannot do.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from harness.contracts.entries import EvalInput, MetricValue, RunContext
from harness.methods.metrics.class_world import ClassWorldMetrics, feature_statistics
from harness.methods.metrics.glyphs_nets import NETS, load_net
from softdimo.data import glyphs as data

INK_THRESHOLD = 0.25        # a pixel is ink when its brightest channel reaches this

#----------------------------------------------------------------------------
# Pure computations.


# Colour consistency of images [N, 3, H, W] in [0, 1]: per image, each ink pixel's nearest palette
# colour by direction (cosine; a stroke's antialiased edge is a dimmer copy of its colour), and the
# fraction of ink pixels on the image's most frequent one (0 without ink). Returns [N].
def colour_consistency(images: Tensor, palette: Tensor = data.PALETTE) -> Tensor:
    pixels = images.flatten(2).transpose(1, 2).double()                    # [N, P, 3]
    ink = pixels.amax(-1) >= INK_THRESHOLD
    direction = pixels / pixels.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    unit_palette = palette.double() / palette.double().norm(dim=-1, keepdim=True)
    nearest = (direction @ unit_palette.T).argmax(-1)                       # [N, P]
    counts = torch.stack([((nearest == k) & ink).sum(1) for k in range(len(palette))], dim=1).double()
    total = ink.sum(1).double()
    return torch.where(total > 0, counts.amax(1) / total.clamp_min(1), torch.zeros_like(total))


#----------------------------------------------------------------------------
# Metric entries.


@lru_cache(maxsize=1)
def _reference() -> dict[str, np.ndarray]:
    images, labels = data.split_images("test")
    feats = _features(images)
    mu, sigma = feature_statistics(feats)
    return {"features": feats, "mu": mu, "sigma": sigma, "labels": labels.numpy()}


def _protocol(name: str, inp: EvalInput, **extra: object) -> dict[str, object]:
    return {"name": name, "implementation": "softdimo-harness glyphs metrics v1",
            "reference": f"glyphs-test-split-{data.WORLD_VERSION}", "reference_n": data.SPLIT_SIZES["test"],
            "samples": inp.total, **extra}


# glyphs_fd (FID analogue), glyphs_acc (GenEval analogue), glyphs_pr: the shared network metrics on
# glyphs-cnn-v1 / glyphs-cls-v1 against the test split.
NETWORK_METRICS = ClassWorldMetrics("glyphs", load_net, {k: NETS[k].name for k in ("features", "classifier")},
                                    lambda inp: _reference(), _protocol)
_features = NETWORK_METRICS.features


# Per image: its colour consistency (glyphs_colour).
def extract_colour(inp: EvalInput, ctx: RunContext) -> dict[str, np.ndarray]:
    return {"colour": colour_consistency(inp.images).numpy()}


# glyphs_colour: mean colour consistency of the samples (exact; no network).
def reduce_colour(inp: EvalInput, arrays: dict[str, np.ndarray], ctx: RunContext) -> dict[str, MetricValue]:
    value = float(arrays["colour"].mean())
    proto = {"name": "glyphs-colour-consistency", "implementation": "softdimo-harness glyphs metrics v1",
             "palette": data.WORLD_VERSION, "ink_threshold": INK_THRESHOLD, "samples": inp.total}
    return {"glyphs_colour": MetricValue(value, True, proto)}

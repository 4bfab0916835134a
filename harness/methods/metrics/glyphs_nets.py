"""The two fixed networks behind the mini-scale glyphs metrics, and how they were trained.

- `features` (glyphs-cnn-v1): a small CNN trained to tell a glyph's class and colour and to
  regress its pose (centre, size, rotation, aspect, stroke width); its 128-d penultimate layer
  gives the features of the Frechet distance and of precision / recall (the Inception analogue).
  The heads share the features, so they encode shape, colour and pose: a generator that covers
  few poses of a class moves the feature covariance, not only one that draws the wrong class.
- `classifier` (glyphs-cls-v1): an independent classifier (another architecture: 5x5 and 3x3
  convolutions with average pooling and SiLU, its own seed, class only) whose accuracy against
  the conditioning label is the GenEval analogue.

Both are trained on the raw images of the world's training split only (never on the test split
the metrics compare with, never on tokenizer outputs). Their weights are committed
(`harness/metrics/weights/`) so that the sha256 in every protocol is the same on every machine;
`python -m harness.methods.metrics.glyphs_nets` re-trains them (deterministic on one machine, 1 thread)
and prints their test-split accuracies and hashes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.methods.metrics.class_world import (BatchLoss, NetSpec, committed_loader, retrain_main,
                                                 train_deterministic)
from softdimo.data import glyphs as data

WEIGHTS_DIR = Path(__file__).parent / "weights"
BATCH = 64
POSE_VALUES = 6             # data.pose_targets

#----------------------------------------------------------------------------


# The FD / precision-recall feature network: conv32, pool, conv64, pool, conv64, pool, fc128, and
# one linear layer to the class (10) and colour (4) logits and the 6 pose values.
class GlyphsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(64 * 4 * 4, 128)
        self.out = nn.Linear(128, data.NUM_CLASSES + len(data.PALETTE) + POSE_VALUES)

    # 128-d features of images [N, 3, 32, 32] in [0, 1].
    def features(self, x: Tensor) -> Tensor:
        return F.relu(self.fc(self.conv(x).flatten(1)))

    # Class logits [N, 10] (`forward_all` gives the colour logits and pose too).
    def forward(self, x: Tensor) -> Tensor:
        return self.forward_all(x)[0]

    # Class logits [N, 10], colour logits [N, 4] and pose [N, 6].
    def forward_all(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.out(self.features(x))
        n, c = data.NUM_CLASSES, len(data.PALETTE)
        return out[:, :n], out[:, n:n + c], out[:, n + c:]


# The independent accuracy classifier: conv16 (5x5), avg-pool, conv32, avg-pool, conv32,
# avg-pool, fc64, fc10, SiLU throughout.
class GlyphsClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, 16, 5, padding=2), nn.SiLU(), nn.AvgPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.SiLU(), nn.AvgPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.SiLU(), nn.AvgPool2d(2))
        self.fc = nn.Sequential(nn.Linear(32 * 4 * 4, 64), nn.SiLU(), nn.Linear(64, data.NUM_CLASSES))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x).flatten(1))


NETS = {
    "features": NetSpec("glyphs-cnn-v1", GlyphsCNN, "glyphs_cnn_v1.safetensors", seed=0, epochs=8, lr=1e-3),
    "classifier": NetSpec("glyphs-cls-v1", GlyphsClassifier, "glyphs_cls_v1.safetensors", seed=1, epochs=8,
                          lr=2e-3),
}

#----------------------------------------------------------------------------


# Train one network deterministically on the training split (1 thread); the feature network learns
# class, colour and pose (both cross-entropies plus the pose's mean squared error), the classifier
# the class. Returns it in eval mode.
def train_net(spec: NetSpec, log: Callable[[str], None] = print) -> nn.Module:
    def load() -> tuple[int, BatchLoss]:
        images, labels = data.load_split("train")
        params = data.draw_parameters(data.SPLIT_SEEDS["train"], 0, len(labels))
        colours, pose = params["colour"], data.pose_targets(params)

        def batch_loss(net: nn.Module, idx: Tensor, g: torch.Generator) -> Tensor:
            x = images[idx].float() / 255
            if isinstance(net, GlyphsCNN):
                class_logits, colour_logits, pose_pred = net.forward_all(x)
                return (F.cross_entropy(class_logits, labels[idx]) + F.cross_entropy(colour_logits, colours[idx])
                        + F.mse_loss(pose_pred, pose[idx]))
            return F.cross_entropy(net(x), labels[idx])
        return len(labels), batch_loss
    return train_deterministic(spec, BATCH, load, log)


# Test-split class accuracy of a network.
@torch.no_grad()
def test_accuracy(net: nn.Module) -> float:
    images, labels = data.split_images("test")
    return (net(images).argmax(1) == labels).float().mean().item()


# Test-split mean squared error of the feature network's pose (targets in [-1, 1]; 1/3 = guessing 0).
@torch.no_grad()
def test_pose_mse(net: GlyphsCNN) -> float:
    images, _ = data.split_images("test")
    target = data.pose_targets(data.draw_parameters(data.SPLIT_SEEDS["test"], 0, len(images)))
    return F.mse_loss(net.forward_all(images)[2], target).item()


# The committed network `key` (one of NETS) in eval mode, with its weights' sha256.
load_net = committed_loader(NETS, WEIGHTS_DIR, "glyphs", "harness.methods.metrics.glyphs_nets")


def _describe(key: str, net: nn.Module) -> str:
    pose = f", pose mse {test_pose_mse(net):.4f}" if isinstance(net, GlyphsCNN) else ""
    return f"test accuracy {test_accuracy(net):.4f}{pose}"


def main() -> None:
    retrain_main("glyphs", NETS, WEIGHTS_DIR, train_net, _describe)


if __name__ == "__main__":
    main()

"""The two fixed networks behind the mini-scale digits metrics, and how they were trained.

- `features` (digits-cnn-v1): a small CNN classifier; its 128-d penultimate layer gives the
  features of the Frechet distance and of precision / recall (the Inception analogue).
- `classifier` (digits-mlp-v1): an independent MLP classifier (different architecture, seed and
  input view) whose accuracy against the conditioning label is the GenEval analogue.
- `reward` (digits-reward-v1): a third network (smooth CNN with average pooling, its own seed)
  whose log p(label | image) is the differentiable reward of reward fine-tuning, TTEO and best-of-N
  (the HPS analogue). It is never used by an evaluation metric, so optimising it can be checked
  against the two networks above (reward hacking shows as reward up, accuracy / FD not).
- `reward_heldout` (digits-reward-heldout-v1): the reward network's architecture trained from
  another seed, an independent learned score for runs that optimise digits-reward-v1.

Both are trained on the training split only, with every image quantised to a random number of
intensity levels, so one network serves every `teacher.levels`. Their weights are committed
(`harness/metrics/weights/`) so that the sha256 in every protocol is the same on every machine;
`python -m harness.methods.metrics.digits_nets` re-trains them (deterministic on one machine) and prints
their test accuracies and hashes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.methods.metrics.class_world import (BatchLoss, NetSpec, committed_loader, retrain_main,
                                                 train_deterministic)
from softdimo.data import digits as data

WEIGHTS_DIR = Path(__file__).parent / "weights"
TRAIN_LEVELS = (2, 3, 4, 5, 6, 8, 17)   # quantisations seen in training

#----------------------------------------------------------------------------


# The FD / precision-recall feature network: conv32, conv64, pool, conv64, pool, fc128, fc10.
class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(64 * 2 * 2, 128)
        self.out = nn.Linear(128, data.NUM_CLASSES)

    # 128-d features of images [N, 1, 8, 8] in [0, 1].
    def features(self, x: Tensor) -> Tensor:
        return F.relu(self.fc(self.conv(x).flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.features(x))


# The independent accuracy classifier: an MLP on the flattened, centred image.
class DigitsMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(),
                                 nn.Linear(256, data.NUM_CLASSES))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1) * 2.0 - 1.0)


# The reward network: conv16 (5x5), avg-pool, conv32, avg-pool, fc64, fc10, SiLU throughout (smooth,
# so its input gradients are informative).
class DigitsRewardCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2), nn.SiLU(), nn.AvgPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.SiLU(), nn.AvgPool2d(2))
        self.fc = nn.Sequential(nn.Linear(32 * 2 * 2, 64), nn.SiLU(), nn.Linear(64, data.NUM_CLASSES))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x).flatten(1))


NETS = {
    "features": NetSpec("digits-cnn-v1", DigitsCNN, "digits_cnn_v1.safetensors", seed=0, epochs=30, lr=1e-3),
    "classifier": NetSpec("digits-mlp-v1", DigitsMLP, "digits_mlp_v1.safetensors", seed=1, epochs=40, lr=1e-3),
    "reward": NetSpec("digits-reward-v1", DigitsRewardCNN, "digits_reward_v1.safetensors", seed=2, epochs=30,
                      lr=2e-3),
    "reward_heldout": NetSpec("digits-reward-heldout-v1", DigitsRewardCNN, "digits_reward_heldout_v1.safetensors",
                              seed=3, epochs=30, lr=2e-3),
}

#----------------------------------------------------------------------------


def _randomly_quantized(pixels: Tensor, g: torch.Generator) -> Tensor:
    # Raw pixels 0..16 [N, 64] -> images quantised to a random level count each, in [0, 1].
    levels = torch.tensor(TRAIN_LEVELS)[torch.randint(len(TRAIN_LEVELS), (pixels.shape[0],), generator=g)]
    k = pixels * levels[:, None] // 17
    return (k.float() / (levels[:, None] - 1).float()).view(-1, 1, data.SIDE, data.SIDE)


# Train one network deterministically on the training split (1 thread), on images quantised to a
# random level count each; returns it in eval mode.
def train_net(spec: NetSpec, log: Callable[[str], None] = print) -> nn.Module:
    def load() -> tuple[int, BatchLoss]:
        split = data.load_split("train")
        pixels, labels = torch.as_tensor(split.pixels, dtype=torch.long), torch.as_tensor(split.labels)
        return len(labels), lambda net, idx, g: F.cross_entropy(net(_randomly_quantized(pixels[idx], g)),
                                                                labels[idx])
    return train_deterministic(spec, 64, load, log)


# Test-split accuracy of a classifier at one quantisation.
@torch.no_grad()
def test_accuracy(net: nn.Module, levels: int) -> float:
    images, labels = data.split_images("test", levels)
    return (net(images).argmax(1) == labels).float().mean().item()


# The committed network `key` (one of NETS) in eval mode, with its weights' sha256.
load_net = committed_loader(NETS, WEIGHTS_DIR, "digits", "harness.methods.metrics.digits_nets")


def _describe(key: str, net: nn.Module) -> str:
    return f"test accuracy by levels {({v: round(test_accuracy(net, v), 4) for v in (2, 3, 4, 17)})}"


def main() -> None:
    retrain_main("digits", NETS, WEIGHTS_DIR, train_net, _describe)


if __name__ == "__main__":
    main()

"""Reading released weight files and loading them strictly, with errors that name the file.

Released checkpoints come as safetensors files or as `torch.save` pickles of a plain state dict
(`.bin`, `.pt`, `.pth`). Pickles are read with `weights_only=True` (no code runs on load) and
memory-mapped where the file format allows it, so a 2.4 GB checkpoint is not held twice.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

#----------------------------------------------------------------------------


class WeightsError(ValueError):
    pass


# A flat {name: tensor} state dict from a safetensors file or a weights-only torch pickle.
def read_state_dict(path: str | Path, what: str) -> dict[str, Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{what}: weight file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return dict(load_file(str(path), device="cpu"))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "TorchScript" in str(e):
            raise WeightsError(f"{what}: {path} is a TorchScript archive, which cannot be read "
                               "without running its code; use a safetensors or state-dict export "
                               "of the same weights") from None
        try:  # legacy (non-zip) pickles cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e2:
            raise WeightsError(f"{what}: cannot read {path} as a state dict: {e2}") from None
    except Exception as e:
        raise WeightsError(f"{what}: cannot read {path} as a state dict: {e}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{what}: {path} does not hold a flat state dict of tensors "
                           f"(top-level type {type(state).__name__})")
    return state


# Load `state` into `module` with strict key matching; the error lists missing and unexpected keys.
def load_strict(module: nn.Module, state: dict[str, Tensor], path: str | Path, what: str) -> None:
    expected = set(module.state_dict().keys())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise WeightsError(f"{what}: {path} does not match the architecture: "
                           f"missing keys {_few(missing)}; unexpected keys {_few(unexpected)}")
    own = module.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (expected {tuple(own[k].shape)})"
             for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise WeightsError(f"{what}: {path} has tensors of the wrong shape for this "
                           f"configuration: {_few(wrong)}")
    module.load_state_dict(state, strict=True)


# Build a module without initialising it (meta device), then give it uninitialised CPU storage;
# the caller fills every tensor with `load_strict`. Saves the random init of 600M parameters.
def build_uninitialised(factory: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        module = factory()
    return module.to_empty(device="cpu")


def _few(names: list[str], n: int = 6) -> str:
    if not names:
        return "none"
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more

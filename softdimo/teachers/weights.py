"""Reading released teacher checkpoints safely and loading them with strict key matching.

Released checkpoints come as safetensors files or as `torch.save` pickles of a plain state dict
(`.bin`, `.pt`, `.pth`). Every released pickle the project reads is read here, with
`weights_only=True`: torch's restricted unpickler builds tensors, containers and numbers and refuses
any other class or function, so no code in a file runs on load. A file that needs one more class is refused with its name; the
caller may allow-list exactly the classes a released file needs (`allowed`, in effect for that one
call only). Files are memory-mapped where the format allows, so a 2.4 GB checkpoint is not held
twice. Every problem (missing or unreadable file, refused content, missing, unexpected or
mis-shaped keys) raises an error naming the file and the keys, before any weight is copied.
"""
from __future__ import annotations

import contextlib
import pickle
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

#----------------------------------------------------------------------------


class CheckpointError(ValueError):
    pass


# The tensors of a `.safetensors` file or of a `torch.save`d state dict (weights-only loading).
# `what` names the file's role in error messages ("MaskGen generator", ...). With `key`, a
# training checkpoint's state dict is taken from that top-level entry (e.g. "model_state_dict",
# Lightning's "state_dict") when the file has one.
def read_state_dict(path: str | Path, what: str = "checkpoint", key: str | None = None,
                    allowed: Sequence[Any] = ()) -> dict[str, Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what}: weight file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path), device="cpu")
        else:
            state = load_weights_only(path, what, allowed)
    except CheckpointError:
        raise
    except Exception as e:  # a corrupt or non-weights file: say which one
        raise CheckpointError(f"{what}: {path} cannot be read as a state dict ({type(e).__name__}: {e})") from e
    if key is not None and isinstance(state, Mapping) and key in state:
        state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        found = f" with keys {sorted(map(str, state))[:8]}" if isinstance(state, Mapping) else ""
        entry = f" (or a checkpoint holding one under {key!r})" if key else ""
        raise CheckpointError(f"{what}: {path}: expected a flat mapping of parameter names to tensors{entry}, "
                              f"got {type(state).__name__}{found}")
    return dict(state)


# The object a `torch.save`d file holds, read weights-only (memory-mapped where the format allows);
# `allowed`: exactly the extra classes / functions a released file needs, allowed for this call only.
# A file needing anything else raises CheckpointError naming it and the file.
def load_weights_only(path: str | Path, what: str = "checkpoint", allowed: Sequence[Any] = (),
                      map_location: Any = "cpu") -> object:
    path = Path(path)
    guard = torch.serialization.safe_globals(list(allowed)) if allowed else contextlib.nullcontext()
    try:
        with guard:
            try:
                return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
            except RuntimeError as e:
                if "TorchScript" in str(e):
                    raise CheckpointError(f"{what}: {path} is a TorchScript archive, which cannot be read without "
                                          "running its code; use a safetensors or state-dict export") from None
                return torch.load(path, map_location=map_location, weights_only=True)  # legacy pickles: no mmap
    except pickle.UnpicklingError as e:
        refused = str(e).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        raise CheckpointError(f"{what}: {path} cannot be read weights-only, so it was not unpickled: it holds "
                              f"more than tensors and containers ({refused}). A released file that needs one "
                              f"more class is loaded by allow-listing exactly that class where it is read; "
                              f"otherwise convert it once to safetensors (docs/metrics.md, 'Loading files "
                              f"safely')") from None


# Rename key prefixes (`{"token_emb": "input_proj"}` turns token_emb.weight into input_proj.weight).
def rename_prefixes(state: Mapping[str, Tensor], renames: Mapping[str, str], source: str = "state dict"
                    ) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        for old, new in renames.items():
            if key == old or key.startswith(old + "."):
                key = new + key[len(old):]
                break
        if key in out:
            raise CheckpointError(f"{source}: key {key!r} is present under both its released and its "
                                  f"renamed name ({dict(renames)})")
        out[key] = value
    return out


# Load `state` into `module` requiring exactly its keys and shapes; the error lists what differs.
# `assign` adopts the file's tensors (for modules built on the meta device) instead of copying.
def load_strict(module: nn.Module, state: Mapping[str, Tensor], source: str, assign: bool = False) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sorted(set(expected) & set(state)) if state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_some(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_some(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {_some(shapes)}")
        raise CheckpointError(f"{source} does not match {type(module).__name__} "
                              f"({'; '.join(parts)}); check the configuration (bit width, size)")
    module.load_state_dict(state, strict=True, assign=assign)


# Build a module without initialising it (meta device), then give it uninitialised CPU storage;
# the caller fills every tensor with `load_strict`. Saves the random init of 600M parameters.
def build_uninitialised(factory: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        module = factory()
    return module.to_empty(device="cpu")


def _some(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")

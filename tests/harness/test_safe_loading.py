"""Nothing unpickles an untrusted file: a pickle whose `__reduce__` would write a marker file is
planted where each loader reads (teacher checkpoints, the HPS / CLIP / ImageReward / PickScore /
torch-fidelity Inception loaders, the distillation checkpoint, the shared prefix's state and the
student cache's ema.pt); every loader refuses it and the marker never appears."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from harness.contracts.entries import RunContext
from harness.grid.spec import resolve_cell
from harness.methods.metrics import clip_score, hps, image_reward, pickscore
from harness.methods.metrics.features import load_tfidelity_inception
from harness.methods.metrics.random_weights import register_open_clip_config, write_open_clip
from harness.methods.students import continue_prefix, distil_student, student_key
from softdimo.config import DistillConfig, RelaxConfig
from softdimo.relax import relax_soft
from softdimo.teachers.cache import DONE_MARKER
from softdimo.teachers.cache_digest import write_digest
from softdimo.teachers.maskgit import load_transformer, transformer_arch
from softdimo.teachers.weights import CheckpointError, load_weights_only, read_state_dict
from softdimo.train import Distiller, resume_from
from tests.conftest import TINY_TEACHER
from tests.scorer_parity import PARITY, write_clip_tokenizer_json

TINY_VISION = image_reward.BLIPVisionConfig(**json.loads((PARITY / "image_reward" / "tiny_config.json").read_text())["vision"])


# Unpickling this runs `exec`, which writes the marker file.
class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


# A torch.save'd file holding real tensors (under `key`, if given) next to the payload.
def _plant(path: Path, marker: Path, key: str | None = None, legacy: bool = False) -> Path:
    tensors = {"weight": torch.zeros(2, 2)}
    body = {key: tensors, "payload": _Payload(marker)} if key else {**tensors, "payload": _Payload(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(body, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.fixture()
def marker(tmp_path: Path) -> Path:
    return tmp_path / "MARKER"


def test_the_planted_payload_is_live(tmp_path, marker):
    pickle.loads(pickle.dumps(_Payload(marker)))               # a plain unpickler runs it
    assert marker.read_text() == "code ran"


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("key", [None, "state_dict", "model_state_dict"])
def test_teacher_checkpoints_refuse_code(tmp_path, marker, key, legacy):
    path = _plant(tmp_path / "teacher.bin", marker, key, legacy)
    with pytest.raises(CheckpointError, match=r"cannot be read weights-only.*exec"):
        read_state_dict(path, "teacher", key=key)
    with pytest.raises(CheckpointError, match="cannot be read weights-only"):
        load_transformer(_plant(tmp_path / "maskgit.pth", marker, "model_state_dict", legacy), transformer_arch("tiny"))
    assert not marker.exists()


def test_allow_list_is_exact_and_scoped(tmp_path, marker):
    path = _plant(tmp_path / "f.pt", marker)
    with pytest.raises(CheckpointError, match="exec"):
        load_weights_only(path, allowed=[print])              # another function allowed: still refused
    with pytest.raises(CheckpointError):
        load_weights_only(path)                               # nothing stays allowed after a call
    assert not marker.exists()


def test_metric_loaders_refuse_code(tmp_path, marker):
    arch = register_open_clip_config(tmp_path / "cfg", "softdimo-tiny-clip-safe-loading")
    with pytest.raises(CheckpointError, match="HPS checkpoint.*cannot be read weights-only"):
        hps.load_hps("v2.1", arch=arch, checkpoint=_plant(tmp_path / "HPS_v2.1_compressed.pt", marker, "state_dict"))
    with pytest.raises(CheckpointError, match="open_clip .* weights.*cannot be read weights-only"):
        clip_score.load_clip(arch, _plant(tmp_path / "open_clip_pytorch_model.bin", marker))
    with pytest.raises(CheckpointError, match="torch-fidelity Inception weights.*cannot be read weights-only"):
        load_tfidelity_inception(_plant(tmp_path / "weights-inception-2015-12-05-6726825d.pth", marker))
    ir = PARITY / "image_reward"
    with pytest.raises(CheckpointError, match="ImageReward checkpoint.*cannot be read weights-only"):
        image_reward.load_image_reward(checkpoint=_plant(tmp_path / "ImageReward.pt", marker),
                                       med_config=ir / "med_config_tiny.json", vocab=ir / "vocab_tiny.txt",
                                       vision=TINY_VISION)
    tokenizer = write_clip_tokenizer_json(tmp_path / "tokenizer.json")
    for name in ("pytorch_model.bin", "model.safetensors"):      # a pickle under a safetensors name too
        with pytest.raises(CheckpointError, match="PickScore weights"):
            pickscore.load_pickscore(weights=_plant(tmp_path / name, marker), config=PARITY / "pickscore" / "config.json",
                                     tokenizer=tokenizer)
    assert not marker.exists()


BASE = {"teacher": "digits", "method": "dimo", "seed": 0, "relaxation": "soft", "distill.steps": 2,
        "distill.batch_size": 8, **{f"teacher.{k}": v for k, v in TINY_TEACHER.__dict__.items()}}


def test_distillation_checkpoints_and_student_cache_refuse_code(tmp_path, marker, tiny_teacher):
    distiller = Distiller(tiny_teacher, relax_soft, RelaxConfig(), DistillConfig(steps=1, batch_size=8), seed=0)
    with pytest.raises(pickle.UnpicklingError, match="exec"):
        resume_from(distiller, _plant(tmp_path / "run" / "checkpoints" / "distill.pt", marker))

    ctx = RunContext(tmp_path / "run", tmp_path / "cache", log=lambda s: None)
    prefix = ctx.cache_dir / "prefixes" / "k"                 # a shared Di[M]O prefix left by another job,
    _plant(prefix / "state.pt", marker)                       # intact (its digest matches): it is read
    (prefix / DONE_MARKER).write_text("{}")
    write_digest(prefix)
    with pytest.raises(pickle.UnpicklingError, match="exec"):
        continue_prefix("k", distiller, None, ctx, tmp_path / "run" / "checkpoints" / "distill.pt", lambda d: None)

    spec = resolve_cell(BASE, "mini")                        # a cached student left by another job
    student = ctx.cache_dir / "students" / student_key(spec)
    _plant(student / "ema.pt", marker)
    (student / "summary.json").write_text(json.dumps({"curves": {}}))
    (student / DONE_MARKER).write_text("{}")
    write_digest(student)
    with pytest.raises(pickle.UnpicklingError, match="exec"):
        distil_student(spec, tiny_teacher, ctx)
    assert not marker.exists()


# The documented way out for a file that holds more than weights: its safetensors conversion is read
# by the same loaders (HPS shown; the others go through read_state_dict, which reads either format).
def test_safetensors_conversion_is_read(tmp_path):
    arch = register_open_clip_config(tmp_path / "cfg", "softdimo-tiny-clip-converted")
    pt = write_open_clip(tmp_path / "HPS_v2.1_compressed.pt", arch, fmt="hps", seed=4)
    state = load_weights_only(pt)["state_dict"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "HPS_v2.1.safetensors"))
    a = hps.load_hps("v2.1", arch=arch, checkpoint=pt)
    b = hps.load_hps("v2.1", arch=arch, checkpoint=tmp_path / "HPS_v2.1.safetensors")
    for (k, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), k

"""`python -m harness.prepare.tokenize`: a generated class-per-folder tree tokenised end to end by the tiny
MaskBit and MaskGIT teachers (parity-fixture weights, the real encoders), into exactly the file
`teacher.real_tokens` reads; labels from the folders; resumable chunk by chunk; sharded over
processes that agree on one plan and merge once."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from torchvision import transforms

from harness.contracts.entries import RunContext
from harness.contracts.registry import teachers
from harness.prepare.tokenize import parts
from harness.prepare.tokenize.__main__ import main, parse_args
from harness.prepare.tokenize.preprocess import load_image
from softdimo.teachers.maskbit import MaskBitConfig
from softdimo.teachers.maskgit import MaskGITConfig
from tests.softdimo.test_maskbit import GEN_FILE, TOK_FILE
from tests.softdimo.test_maskgit import VIT_FILE, VQ_FILE

REPO = Path(__file__).resolve().parents[2]
MASKBIT = ["--teacher", "maskbit", "--set", "bits=10", "--set", "size=tiny", "--set", f"generator_weights={GEN_FILE}",
           "--set", f"tokenizer_weights={TOK_FILE}", "--workers", "0", "--no-progress", "--device", "cpu"]
MASKGIT = ["--teacher", "maskgit", "--set", "size=tiny", "--set", f"transformer_weights={VIT_FILE}",
           "--set", f"vqgan_weights={VQ_FILE}", "--workers", "0", "--no-progress", "--device", "cpu"]


# Ten class folders (the tiny teachers have 10 classes) named like ImageNet synsets, given out of
# order, with 2 or 3 images each of varied sizes and aspect ratios, PNG and JPEG, and a stray file.
@pytest.fixture(scope="module")
def image_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagenet") / "train"
    rng = np.random.default_rng(0)
    for c in (7, 3, 0, 9, 1, 5, 2, 8, 6, 4):
        folder = root / f"n0{c}000000"
        folder.mkdir(parents=True)
        for i in range(2 + c % 2):
            h, w = (int(x) for x in rng.integers(12, 48, 2))
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / (f"img{i}.png" if i % 2 else f"img{i}.JPEG"), quality=90)
    (root / "n00000000" / "notes.txt").write_text("not an image")
    return root


def _images(root: Path) -> list[tuple[Path, int]]:
    folders = sorted(p for p in root.iterdir())
    return [(f, i) for i, folder in enumerate(folders) for f in sorted(folder.iterdir()) if f.suffix != ".txt"]


# What MaskBit's own eval transform gives (torchvision Resize(R, bicubic), CenterCrop(R), ToTensor).
def _maskbit_view(path: Path, size: int) -> torch.Tensor:
    t = transforms.Compose([transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
                            transforms.CenterCrop(size), transforms.ToTensor()])
    with Image.open(path) as im:
        return t(im.convert("RGB"))


def test_maskbit_tokens_end_to_end_resumable_and_read_by_the_teacher(image_tree, tmp_path, capsys):
    out = tmp_path / "assets" / "maskbit" / "imagenet_train_tokens_10bit.safetensors"
    common = [*MASKBIT, "--images", str(image_tree), "--out", str(out), "--num-shards", "2", "--chunk-size", "4"]
    assert main([*common, "--shard", "0"]) == 0
    assert "shard done" in capsys.readouterr().out and not out.exists()
    folder = parts.parts_dir(out)
    chunks = sorted(folder.glob("chunk-*.safetensors"))
    assert [c.name for c in chunks] == ["chunk-000000000-000000004.safetensors",
                                        "chunk-000000004-000000008.safetensors",
                                        "chunk-000000008-000000012.safetensors"]       # 25 images: shard 0 = 12
    # A stop: the last chunk lost, a half-written temporary file left behind. The rerun redoes that
    # chunk only.
    kept = chunks[0].stat().st_mtime_ns
    chunks[-1].unlink()
    (folder / ".chunk-000000008-000000012.1234.deadbeef.tmp.safetensors").write_bytes(b"half")
    assert main([*common, "--shard", "0"]) == 0
    assert "images 4 of 12 to tokenise" in capsys.readouterr().err
    assert chunks[0].stat().st_mtime_ns == kept and chunks[-1].is_file()
    assert main([*common, "--shard", "1"]) == 0
    assert capsys.readouterr().out.startswith("merged:") and out.is_file() and not folder.exists()

    # The file: tokens of each image through the teacher's own encoder, labels = sorted folder index.
    config = MaskBitConfig(bits=10, size="tiny", generator_weights=str(GEN_FILE), tokenizer_weights=str(TOK_FILE),
                           real_tokens=str(out))
    teacher = teachers.get("maskbit").build(config, RunContext(tmp_path, tmp_path, log=lambda s: None))
    tokens, labels = teacher.real_tokens()                                   # the GAN's reader
    listed = _images(image_tree)
    assert labels == [label for _, label in listed] and sorted(set(labels)) == list(range(10))
    views = torch.stack([_maskbit_view(path, 16) for path, _ in listed])
    assert torch.equal(tokens, teacher.encode(views))
    assert tokens.shape == (25, 16, 2) and len(tokens.unique()) > 10
    with safe_open(str(out), framework="pt") as f:
        assert f.get_slice("tokens").get_dtype() == "I16"
    plan = parts.merged_plan(out)
    assert plan["preprocess"] == "maskbit" and plan["resolution"] == 16 and plan["classes"][0] == "n00000000"
    assert sorted(len(d) for d in plan["weights_sha256"].values()) == [64, 64]   # generator, tokenizer files

    # Done is done; other settings never overwrite it.
    assert main([*common, "--shard", "1"]) == 0 and "already complete" in capsys.readouterr().out
    assert main([*common, "--shard", "0", "--flip"]) == 2
    assert "flip: false there, true now" in capsys.readouterr().err


def test_maskgit_tokens_with_mirrors(image_tree, tmp_path):
    out = tmp_path / "maskgit_tokens.safetensors"
    assert main([*MASKGIT, "--images", str(image_tree), "--out", str(out), "--flip", "--batch-size", "3"]) == 0
    data = load_file(str(out))
    config = MaskGITConfig(size="tiny", transformer_weights=str(VIT_FILE), vqgan_weights=str(VQ_FILE))
    teacher = teachers.get("maskgit").build(config, RunContext(tmp_path, tmp_path, log=lambda s: None))
    listed = _images(image_tree)
    t = transforms.Compose([transforms.Resize(8), transforms.CenterCrop(8), transforms.ToTensor()])  # Halton-MaskGIT's
    views = torch.stack([t(Image.open(path).convert("RGB")) for path, _ in listed])
    assert torch.equal(data["tokens"][0::2].long(), teacher.encode(views))
    assert torch.equal(data["tokens"][1::2].long(), teacher.encode(views.flip(-1)))       # row 2i+1: the mirror
    assert data["labels"].tolist() == [label for _, label in listed for _ in range(2)]
    assert data["tokens"].shape == (50, 16, 1)


def test_labels_of_a_subset_come_from_the_class_list(image_tree, tmp_path, capsys):
    subset = tmp_path / "subset"
    subset.mkdir()
    for name in ("n03000000", "n07000000"):
        (subset / name).symlink_to(image_tree / name, target_is_directory=True)
    out = tmp_path / "subset.safetensors"
    assert main([*MASKBIT, "--images", str(subset), "--out", str(out)]) == 2
    assert "2 class folders, the teacher has 10 classes" in capsys.readouterr().err
    mapping = tmp_path / "LOC_synset_mapping.txt"                  # ImageNet's format: "<synset> <names>"
    mapping.write_text("".join(f"n0{c}000000 class {c}, a name\n" for c in range(10)))
    assert main([*MASKBIT, "--images", str(subset), "--out", str(out), "--classes", str(mapping)]) == 0
    assert load_file(str(out))["labels"].tolist() == [3, 3, 3, 7, 7, 7]


def test_bad_input_is_refused_before_anything_is_written(image_tree, tmp_path, capsys, monkeypatch):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    out = tmp_path / "t.safetensors"
    for extra, message in (
            (["--images", str(flat)], "images directly in the folder"),
            (["--images", str(image_tree), "--set", "bitz=10"], "has no field 'bitz'"),
            (["--images", str(image_tree), "--set", "bits=11"], "bits=11"),
            (["--images", str(image_tree), "--num-shards", "2", "--shard", "2"], "--shard 2: must be in [0, 2)"),
            (["--images", str(tmp_path / "nowhere")], "no such folder")):
        assert main([*MASKBIT, "--out", str(out), *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
        assert not out.exists()
    out.write_bytes(b"someone's file")
    assert main([*MASKBIT, "--images", str(image_tree), "--out", str(out)]) == 2
    assert "not overwritten" in capsys.readouterr().err and out.read_bytes() == b"someone's file"
    assert main(["--merge", "--out", str(tmp_path / "never.safetensors")]) == 2
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert parse_args(["--merge", "--out", "x"]).shard == 3                 # an array task is its shard


# ADM's centre crop on a case that takes every branch: a box halving (short side 20 >= 2 x 8), a
# bicubic resize of the short side to 8 with rounded sizes, a crop with floored offsets.
def test_adm_preprocessing(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "wide.png"
    Image.fromarray(rng.integers(0, 256, (20, 41, 3), dtype=np.uint8)).save(path)
    with Image.open(path) as im:
        halved = im.convert("RGB").resize((20, 10), resample=Image.BOX)
    resized = np.asarray(halved.resize((16, 8), resample=Image.BICUBIC))
    expected = torch.from_numpy(resized[:, 4:12].copy()).permute(2, 0, 1).float() / 255
    assert torch.equal(load_image(path, "adm", 8), expected)


# Two shards as two concurrent processes on one plan: the file is made once, equal to one process's.
@pytest.mark.slow
def test_two_processes_share_the_work_and_merge_once(image_tree, tmp_path):
    single = tmp_path / "single.safetensors"
    assert main([*MASKBIT, "--images", str(image_tree), "--out", str(single)]) == 0
    out = tmp_path / "sharded.safetensors"
    cmd = [sys.executable, "-m", "harness.prepare.tokenize", *MASKBIT, "--images", str(image_tree), "--out", str(out),
           "--num-shards", "2", "--chunk-size", "5"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([*cmd, "--shard", str(s)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for s in (0, 1)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert sorted(stdout.split(":")[0].split(";")[0] for stdout, _ in results) == ["merged", "shard done"]
    a, b = load_file(str(single)), load_file(str(out))
    assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["labels"], b["labels"])

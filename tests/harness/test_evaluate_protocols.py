"""A protocol family added from outside the harness in one place, its registration: the evaluate
command lists it, checks its options and samples, identifies, scores and records a sample set under
it, with no change to the command."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness import store
from harness.cell import evaluate
from harness.contracts import registry
from harness.contracts.entries import EvalRequest, MetricValue, ProtocolFamily
from harness.store import assets


# The toy family: the mean brightness of `images` (an npz, [N, C, H, W] in [0, 1]), and with a
# reference (another such npz) the absolute difference of the two means.
def _images(path: Path) -> np.ndarray:
    with np.load(path) as data:
        return data["images"]


def _compute(request: EvalRequest, run_dir: Path) -> tuple[dict[str, MetricValue], int]:
    images = _images(request.samples)
    protocol = {"name": request.protocol, "num_samples": len(images)}
    values = {"brightness": MetricValue(float(images.mean()), True, protocol)}
    if request.reference:
        gap = abs(float(images.mean()) - float(_images(request.reference).mean()))
        values["brightness_gap"] = MetricValue(gap, False, {**protocol, "reference_sha256": assets.sha256_file(
            request.reference)})
    return values, len(images)


def _check_samples(request: EvalRequest) -> list[str]:
    images = _images(request.samples)
    return [] if images.ndim == 4 else [f"--samples: expected [N, C, H, W] images, got {list(images.shape)}"]


TOY = ProtocolFamily("toy", _compute, assets.sha256_file, options=("reference",), check_samples=_check_samples,
                     identity=lambda r: {"reference_sha256": assets.sha256_file(r.reference) if r.reference else None},
                     description="mean brightness of an npz of images")
registry.protocols.register("toy-brightness", TOY)


def _main(tmp_path: Path, *args: str) -> int:
    return evaluate.main(["--results", str(tmp_path / "results"), *args])


def test_a_protocol_registered_from_outside_is_evaluated_and_recorded(tmp_path, capsys):
    images = np.random.default_rng(0).random((6, 3, 4, 4), dtype=np.float32)
    np.savez(tmp_path / "samples.npz", images=images)
    np.savez(tmp_path / "reference.npz", images=images * 0.5)
    assert evaluate.main(["--list-protocols"]) == 0
    assert "toy: toy-brightness" in capsys.readouterr().out

    args = ("--samples", str(tmp_path / "samples.npz"), "--protocol", "toy-brightness",
            "--reference", str(tmp_path / "reference.npz"), "--label", "my method", "--teacher", "digits")
    assert _main(tmp_path, *args) == 0
    (record,) = store.scan(tmp_path / "results", [evaluate.GRID])[0]
    assert record["status"] == "ok" and record["samples"]["count"] == 6
    assert record["spec"]["teacher"] == "digits" and record["spec"]["scale"] == "paper"
    assert record["metrics"]["brightness"]["value"] == float(images.mean())
    assert record["metrics"]["brightness_gap"]["value"] == abs(float(images.mean()) - float((images * 0.5).mean()))
    assert record["metrics"]["brightness"]["protocol_id"].startswith("toy-brightness:")
    ident = record["info"]["identity"]
    assert ident["samples_sha256"] == assets.sha256_file(tmp_path / "samples.npz")
    assert ident["reference_sha256"] == assets.sha256_file(tmp_path / "reference.npz")
    assert _main(tmp_path, *args) == 0 and "already evaluated" in capsys.readouterr().out


def test_a_toy_request_is_checked_before_anything_is_computed(tmp_path, capsys):
    np.savez(tmp_path / "flat.npz", images=np.zeros((6, 16), np.float32))
    assert _main(tmp_path, "--samples", str(tmp_path / "flat.npz"), "--protocol", "toy-brightness") == 2
    assert "--samples: expected [N, C, H, W] images, got [6, 16]" in capsys.readouterr().err
    np.savez(tmp_path / "ok.npz", images=np.zeros((2, 1, 2, 2), np.float32))
    (tmp_path / "caps.txt").write_text("a\nb\n")
    assert _main(tmp_path, "--samples", str(tmp_path / "ok.npz"), "--protocol", "toy-brightness",
                 "--captions", str(tmp_path / "caps.txt"), "--levels", "3") == 2
    err = capsys.readouterr().err
    assert "--captions applies to protocols of the families clip, fid, not to 'toy-brightness' (toy)" in err
    assert "--levels applies to protocols of the family mini, not to 'toy-brightness' (toy)" in err
    assert _main(tmp_path, "--samples", str(tmp_path / "ok.npz"), "--protocol", "toy-brightnes") == 2
    assert "unknown protocol 'toy-brightnes' (did you mean 'toy-brightness'?)" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("name, family", [("mini-digits", "mini"), ("geneval", "geneval"),
                                          ("imagenet256-fid50k-adm", "fid"), ("hpsv2-benchmark-v2.1", "hps"),
                                          ("coco30k-clipscore-gigagan", "clip")])
def test_every_built_in_protocol_is_registered_with_its_family(name, family):
    assert registry.protocols.get(name).name == family
    assert name in evaluate.protocol_names()[family]

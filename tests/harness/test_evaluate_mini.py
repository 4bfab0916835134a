"""Outside sample sets under the mini protocols: the same values and protocol ids as grid runs,
bad input refused before anything is computed or recorded."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from harness import cell, store
from harness.cell import evaluate
from harness.contracts import registry
from harness.contracts.entries import RunContext
from harness.grid.spec import resolve_cell
from softdimo.data import shapes as world
from tests.conftest import TINY_GLYPHS

N = 120


# The grid's `real` rung of a world, recorded, and the very same images and labels written as an
# outside sample set in the protocol's layout (`layout(images)`).
def _real_set(tmp_path: Path, keys: dict, layout: Callable[[np.ndarray], np.ndarray]) -> tuple[dict, Path]:
    spec = resolve_cell({**keys, "method": "real", "seed": 3, "eval.samples": N}, "mini")
    results = tmp_path / "grid_results"
    assert cell.execute(spec.to_json(), "ladder", str(results)) == "ok"
    record = store.read_record(store.record_path(results, "ladder", spec.run_id))
    out = registry.methods.get("real").run(spec, RunContext(tmp_path / "run", results / ".cache", log=lambda s: None))
    path = tmp_path / "real.npz"
    np.savez(path, images=layout(out.samples.all_images().numpy()), labels=np.array(out.conditions))
    return record, path


def _main(tmp_path: Path, *args: str) -> int:
    return evaluate.main(["--results", str(tmp_path / "results"), *args])


# digits: scikit-learn's digits at the world's 4 levels, [N, 8, 8]; glyphs: the training split
# through a tiny tokenizer, channels last.
WORLDS = {"digits": ({"teacher": "digits"}, lambda images: images[:, 0]),
          "glyphs": ({**{f"teacher.{k}": v for k, v in TINY_GLYPHS.__dict__.items()}, "teacher": "glyphs"},
                     lambda images: images.transpose(0, 2, 3, 1))}


@pytest.mark.parametrize("teacher", sorted(WORLDS))
def test_real_images_score_as_the_real_rung_does(tmp_path: Path, teacher: str) -> None:
    record, path = _real_set(tmp_path, *WORLDS[teacher])
    protocol = f"mini-{teacher}"
    assert _main(tmp_path, "--samples", str(path), "--protocol", protocol, "--label", f"my real {teacher}") == 0
    (outside,) = store.scan(tmp_path / "results", ["evaluate"])[0]
    assert outside["spec"]["teacher"] == teacher and outside["spec"]["scale"] == "mini"
    assert set(outside["metrics"]) == set(record["metrics"])
    for name, m in record["metrics"].items():
        assert outside["metrics"][name]["value"] == m["value"], name
        assert outside["metrics"][name]["protocol_id"] == m["protocol_id"], name
    assert _main(tmp_path, "--samples", str(path), "--protocol", protocol, "--label", f"my real {teacher}") == 0


@pytest.mark.parametrize("arrays, message", [
    ({"images": np.zeros((4, 8, 7), np.float32), "labels": np.zeros(4, np.int64)}, "`images`: expected [N, 8, 8]"),
    ({"images": np.full((4, 8, 8), 2.0, np.float32), "labels": np.zeros(4, np.int64)}, "expected values in [0, 1]"),
    ({"images": np.zeros((4, 8, 8), np.float32)}, "missing array(s) `labels`"),
    ({"images": np.zeros((4, 8, 8), np.float32), "labels": np.zeros(3, np.int64)}, "`labels`: expected [N] = [4]"),
    ({"images": np.zeros((4, 8, 8), np.float32), "labels": np.full(4, 12)}, "`labels`: expected integers in 0..9"),
    ({"images": np.zeros((4, 8, 8), np.uint8), "labels": np.zeros(4, np.int64)}, "expected floats in [0, 1]"),
])
def test_bad_digits_input_is_refused_before_anything_is_recorded(tmp_path: Path, capsys, arrays: dict,
                                                                 message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    assert _main(tmp_path, "--samples", str(path), "--protocol", "mini-digits") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("arrays, message", [
    ({"images": np.zeros((4, 3, 32, 31), np.float32), "labels": np.zeros(4, np.int64)},
     "`images`: expected [N, 3, 32, 32] or [N, 32, 32, 3]"),
    ({"images": np.zeros((4, 32, 32, 3), np.float32), "labels": np.full(4, 10)}, "`labels`: expected integers in 0..9"),
])
def test_bad_glyphs_input_is_refused_before_anything_is_recorded(tmp_path: Path, capsys, arrays: dict,
                                                                 message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    assert _main(tmp_path, "--samples", str(path), "--protocol", "mini-glyphs") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_bad_metric_and_levels_name_the_option(tmp_path: Path, capsys) -> None:
    path = tmp_path / "ok.npz"
    np.savez(path, images=np.zeros((4, 8, 8), np.float32), labels=np.zeros(4, np.int64))
    assert _main(tmp_path, "--samples", str(path), "--protocol", "mini-digits", "--metrics", "shapes_clip") == 2
    assert "--metrics: metric 'shapes_clip' does not apply to teacher 'digits'" in capsys.readouterr().err
    assert _main(tmp_path, "--samples", str(path), "--protocol", "mini-digits", "--levels", "40") == 2
    assert "--levels: expected an integer in [2, 17]" in capsys.readouterr().err


def test_shapes_scenes_from_a_folder_or_an_npz(tmp_path: Path, capsys) -> None:
    tokens, prompts = world.sample_batch(24, 5)
    images = world.render(tokens).numpy()
    np.savez(tmp_path / "shapes.npz", images=images, prompts=np.array(prompts))
    folder = tmp_path / "shapes"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray((image.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(folder / f"{i:06d}.png")
    (folder / "prompts.txt").write_text("\n".join(prompts) + "\n")
    assert _main(tmp_path, "--samples", str(tmp_path / "shapes.npz"), "--protocol", "mini-shapes") == 0
    assert _main(tmp_path, "--samples", str(folder), "--protocol", "mini-shapes") == 0
    a, b = store.scan(tmp_path / "results", ["evaluate"])[0]
    assert a["metrics"]["shapes_geneval"]["value"] == b["metrics"]["shapes_geneval"]["value"] == 1.0  # real scenes
    (folder / "prompts.txt").write_text("\n".join(prompts[:-1]) + "\nthree blue dragons\n")
    assert _main(tmp_path, "--samples", str(folder), "--protocol", "mini-shapes") == 2
    assert "`prompts`[23]: cannot parse" in capsys.readouterr().err

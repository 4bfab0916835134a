"""`python -m harness.run --log-with tensorboard`: a tiny grid's run writes TensorBoard event files
under its folder, which TensorBoard's own reader loads with the training losses, the GAN's
diagnostics, the curves and the final evaluation; the option is recorded and changes no run id.
Trackers accelerate does not know, or whose package is missing, are refused before launch.
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from harness import run, store
from harness.contracts import tracking
from harness.grid import load_grid
from tests.harness.test_procs_per_cell import TEACHER


def main(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = run.main(list(args), out, err)
    return rc, out.getvalue(), err.getvalue()


# One GAN-refined dimo cell of the tiny teacher with curves every 2 steps.
def _grid(path: Path) -> Path:
    block = {"teacher": ["digits"], "method": ["dimo"], "relaxation": ["soft"], "refinement": ["gan"], "seed": [43],
             "distill.steps": [4], "distill.batch_size": [8], "distill.refine_start": [2],
             "distill.eval_every": [2], **TEACHER}
    path.write_text(yaml.safe_dump({"name": "tracked", "matrix": [block],
                                    "params": {"eval.samples": 40, "eval.curve_samples": 40}}, sort_keys=False))
    return path


@pytest.mark.slow
def test_tensorboard_event_files_hold_every_curve(tiny_teacher, teacher_cache: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    monkeypatch.setenv("SOFTDIMO_CACHE", str(teacher_cache))
    grid, results = _grid(tmp_path / "grid.yaml"), tmp_path / "results"
    rc, out, err = main("--grid", str(grid), "--results", str(results), "--executor", "debug",
                        "--log-with", "tensorboard")
    assert rc == 0, out + err
    [spec] = load_grid(grid).specs                      # the run id of the grid without the option
    record = store.read_record(store.record_path(results, "tracked", spec.run_id))
    assert record["status"] == "ok"
    assert record["provenance"]["trackers"]["log_with"] == ["tensorboard"]
    folder = Path(record["provenance"]["trackers"]["folder"])
    assert folder == store.run_dir(results, "tracked", spec.run_id) / tracking.TRACKING_DIR
    reader = EventAccumulator(str(folder / "tracked"))           # <run dir>/tracking/<grid>: the run's scalars
    reader.Reload()
    tags = set(reader.Tags()["scalars"])
    expected = {"train/divergence", "train/aux_loss", "train/grad_norm", "train/p_max", "train/gan_g_loss",
                "train/gan_d_loss", "train/gan_d_acc_real", "train/gan_softness_probe", "train/grad_ratio",
                "curve/digits_fd", "curve/digits_acc", "eval/digits_fd", "eval/digits_acc", "eval/digits_precision"}
    assert expected <= tags, expected - tags
    assert [e.step for e in reader.Scalars("train/divergence")] == [1, 2, 3, 4]
    assert [e.step for e in reader.Scalars("train/gan_d_loss")] == [3, 4]       # refinement from step 2 on
    assert [e.step for e in reader.Scalars("curve/digits_fd")] == [0, 2, 4]
    [final] = reader.Scalars("eval/digits_fd")
    assert final.step == 4 and final.value == pytest.approx(record["metrics"]["digits_fd"]["value"], rel=1e-6)


def test_unknown_or_missing_trackers_are_refused_before_launch(tmp_path: Path) -> None:
    grid, results = _grid(tmp_path / "grid.yaml"), tmp_path / "results"
    rc, _, err = main("--grid", str(grid), "--results", str(results), "--log-with", "tensorbord")
    assert rc == 2 and "--log-with 'tensorbord': not a tracker of accelerate; known: " in err
    known, installed = tracking.known_trackers()
    missing = sorted(set(known) - set(installed))
    rc, _, err = main("--grid", str(grid), "--results", str(results), "--log-with", f"tensorboard,{missing[0]}")
    assert rc == 2 and f"--log-with {missing[0]!r}: its package is not installed here" in err
    assert not (results / "tracked").exists()
    assert tracking.parse_log_with("all") == installed and "tensorboard" in installed

"""`python -m harness.cell.evaluate`: any folder of samples evaluated under a named protocol, recorded with
a content-derived run id, never overwriting an ok record; bad input stops before any computation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from harness.cell import evaluate
from harness.methods.metrics import fid
from harness.methods.samples import open_samples


def _run(tmp_path, *args: str) -> int:
    return evaluate.main(["--results", str(tmp_path / "results"), *args])


def test_evaluate_writes_record_comparable_with_direct_evaluation(asset_root, image_dirs, tmp_path, capsys):
    args = ("--samples", str(image_dirs["samples"]), "--protocol", "fid-tfidelity",
            "--reference", str(image_dirs["reference"]), "--metrics", "fid", "inception_score",
            "--label", "my-method", "--teacher", "maskbit")
    assert _run(tmp_path, *args) == 0
    records = list((tmp_path / "results" / "evaluate").glob("*/record.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["schema_version"] == 1 and record["grid"] == "evaluate" and record["status"] == "ok"
    assert record["run_id"] == records[0].parent.name and len(record["run_id"]) == 16
    assert record["spec"]["teacher"] == "maskbit" and record["spec"]["method"] == "external"
    assert record["samples"]["count"] == 10
    direct = fid.evaluate(open_samples(image_dirs["samples"]), "fid-tfidelity", ["fid"],
                          reference=image_dirs["reference"])["fid"]
    assert record["metrics"]["fid"]["value"] == pytest.approx(direct.value, rel=1e-12)
    assert record["metrics"]["fid"]["protocol"]["name"] == "fid-tfidelity"
    assert record["metrics"]["fid"]["protocol_id"].startswith("fid-tfidelity:")
    assert set(record["metrics"]) == {"fid", "inception_score"}
    assert {"git_commit", "packages", "started", "finished"} <= set(record["provenance"])
    assert "record:" in capsys.readouterr().out

    mtime = records[0].stat().st_mtime_ns                       # same content -> same id, not rewritten
    assert _run(tmp_path, *args) == 0
    assert "already evaluated" in capsys.readouterr().out
    assert records[0].stat().st_mtime_ns == mtime


def test_failed_evaluation_is_recorded_then_archived(asset_root, image_dirs, tmp_path, capsys):
    np.savez(tmp_path / "stats.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    args = ("--samples", str(image_dirs["samples"]), "--protocol", "imagenet256-fid-adm",
            "--reference", str(tmp_path / "stats.npz"), "--metrics", "fid")
    assert _run(tmp_path, *args) == 1                           # 32x32 images, the protocol needs 256x256
    assert "needs 256x256" in capsys.readouterr().err
    (run_dir,) = (tmp_path / "results" / "evaluate").iterdir()
    assert json.loads((run_dir / "record.json").read_text())["status"] == "failed"
    assert _run(tmp_path, *args) == 1
    assert (run_dir / "attempts" / "1.json").is_file()         # the store keeps replaced attempts


def test_bad_input_stops_before_computation(asset_root, image_dirs, tmp_path, capsys):
    assert _run(tmp_path, "--samples", str(image_dirs["samples"]), "--protocol", "imagenet256-fid") == 2
    err = capsys.readouterr().err
    assert "unknown protocol 'imagenet256-fid'" in err and "imagenet256-fid50k-adm" in err
    assert _run(tmp_path, "--samples", str(image_dirs["samples"]), "--protocol", "imagenet256-fid-adm") == 2
    assert "'adm-imagenet256-ref-batch' is missing" in capsys.readouterr().err
    assert _run(tmp_path, "--samples", str(tmp_path / "nowhere"), "--protocol", "fid-clean",
                "--reference", str(image_dirs["reference"]), "--metrics", "fid", "psnr") == 2
    err = capsys.readouterr().err
    assert "no such file or folder" in err and "--metrics 'psnr'" in err
    assert _run(tmp_path, "--samples", str(image_dirs["samples"]), "--protocol", "clipscore-gigagan") == 2
    assert "needs --captions" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_list_protocols(capsys):
    assert evaluate.main(["--list-protocols"]) == 0
    out = capsys.readouterr().out
    assert "imagenet256-fid50k-adm" in out and "hpsv2-benchmark-v2.1" in out and "geneval" in out

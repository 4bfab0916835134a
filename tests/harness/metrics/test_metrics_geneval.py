"""GenEval: results parsing and summary against a hand-made results.jsonl with known answers; the
layout writer and checker; the subprocess contract exercised with a fake evaluator (the real one
needs mmdet 2.x, mmcv-full 1.7 and CUDA, so it cannot run here)."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from harness.methods.metrics import geneval
from harness.methods.metrics.geneval import GenEvalConfig

METADATA = [
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {"tag": "two_object", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}],
     "prompt": "a photo of a cat and a dog"},
    {"tag": "counting", "include": [{"class": "cup", "count": 2}], "prompt": "a photo of two cups"},
    {"tag": "counting", "include": [{"class": "cup", "count": 3}], "prompt": "a photo of three cups"},
    {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a photo of a red car"},
    {"tag": "position", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1,
                                                                  "position": ["left of", 0]}],
     "prompt": "a photo of a dog left of a cat"},
    {"tag": "color_attr", "include": [{"class": "car", "count": 1, "color": "blue"}], "prompt": "a blue car"},
]
# Correct images per prompt (of 4): task accuracies 3/4, 1/4, 0/8, 4/4, 2/4, 0/4.
CORRECT = [3, 1, 0, 0, 4, 2, 0]
EXPECTED_TASKS = {"single_object": 0.75, "two_object": 0.25, "counting": 0.0, "colors": 1.0,
                  "position": 0.5, "color_attr": 0.0}

# A stand-in for evaluation/evaluate_images.py with the same I/O: it walks the digit folders, reads
# metadata.jsonl with json.load, scores samples/\d+.png (correct iff the mean pixel is above 127) and
# writes one JSON line per image; it also records HF_HUB_OFFLINE as it saw it.
FAKE_EVALUATOR = textwrap.dedent('''
    import json, os, re, sys
    import numpy as np
    from PIL import Image
    imagedir, outfile = sys.argv[1], sys.argv[sys.argv.index("--outfile") + 1]
    skip = os.environ.get("FAKE_GENEVAL_SKIP")
    rows = []
    for sub in os.listdir(imagedir):
        folder = os.path.join(imagedir, sub)
        if not os.path.isdir(folder) or not sub.isdigit():
            continue
        meta = json.load(open(os.path.join(folder, "metadata.jsonl")))
        for name in os.listdir(os.path.join(folder, "samples")):
            if not re.match(r"\\d+\\.png", name) or (skip and f"{sub}/{name}" == skip):
                continue
            correct = bool(np.asarray(Image.open(os.path.join(folder, "samples", name))).mean() > 127)
            rows.append({"filename": name, "tag": meta["tag"], "prompt": meta["prompt"], "correct": correct,
                         "reason": "", "metadata": json.dumps(meta)})
    with open(outfile, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\\n")
    open(os.path.join(os.path.dirname(outfile), "env.txt"), "w").write(os.environ.get("HF_HUB_OFFLINE", ""))
''')


def _results_lines() -> list[str]:
    lines = []
    for meta, n_correct in zip(METADATA, CORRECT):
        for j in range(geneval.IMAGES_PER_PROMPT):
            lines.append(json.dumps({"filename": f"{j:05d}.png", "tag": meta["tag"], "prompt": meta["prompt"],
                                     "correct": j < n_correct, "reason": "", "metadata": json.dumps(meta)}))
    return lines


def test_summary_of_hand_made_results(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(_results_lines()) + "\n")
    summary = geneval.summarize(geneval.parse_results(path))
    assert summary.tasks == pytest.approx(EXPECTED_TASKS)
    assert summary.overall == pytest.approx(2.5 / 6)                  # unweighted over the 6 tasks
    assert summary.correct_images == pytest.approx(10 / 28)           # not the image-level rate
    assert summary.images == 28 and summary.prompts == 7
    assert summary.correct_prompts == pytest.approx(4 / 7)


def test_parse_results_rejects_malformed_lines(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(_results_lines()[0] + "\n{not json\n")
    with pytest.raises(ValueError, match=r"results.jsonl:2: not JSON"):
        geneval.parse_results(path)
    path.write_text(json.dumps({"tag": "colors", "correct": "yes", "metadata": "{}"}) + "\n")
    with pytest.raises(ValueError, match=r"results.jsonl:1: expected .*boolean 'correct'"):
        geneval.parse_results(path)


def _checkout(tmp_path: Path) -> Path:
    root = tmp_path / "geneval"
    (root / "prompts").mkdir(parents=True)
    (root / "prompts" / "evaluation_metadata.jsonl").write_text("\n".join(json.dumps(m) for m in METADATA) + "\n")
    (root / "fake_evaluate.py").write_text(FAKE_EVALUATOR)
    return root


def _images() -> list[np.ndarray]:
    # Bright (correct) images first within each prompt, as many as CORRECT says.
    return [np.full((8, 8, 3), 200 if j < n else 50, np.uint8)
            for n in CORRECT for j in range(geneval.IMAGES_PER_PROMPT)]


def _config(root: Path) -> GenEvalConfig:
    return GenEvalConfig(root, sys.executable, (sys.executable, str(root / "fake_evaluate.py"), "{image_dir}",
                                                "--outfile", "{outfile}"))


def test_layout_and_subprocess_contract(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    root = _checkout(tmp_path)
    metadata = geneval.read_metadata(root / geneval.METADATA_FILE)
    layout = geneval.write_layout(tmp_path / "images", metadata, _images())
    assert json.loads((layout / "00004" / "metadata.jsonl").read_text()) == METADATA[4]
    assert sorted(p.name for p in (layout / "00004" / "samples").iterdir()) == [f"{j:05d}.png" for j in range(4)]
    assert geneval.check_layout(layout, metadata) == 28

    values = geneval.evaluate(layout, _config(root), tmp_path / "work")
    assert values["geneval"].value == pytest.approx(2.5 / 6)
    for task, acc in EXPECTED_TASKS.items():
        assert values[f"geneval_{task}"].value == pytest.approx(acc)
    protocol = values["geneval"].protocol
    assert protocol["name"] == "geneval" and protocol["num_samples"] == 28 and protocol["images_per_prompt"] == 4
    assert protocol["options"]["threshold"] == "0.3" and protocol["evaluator"] == "custom command"
    assert (tmp_path / "work" / "env.txt").read_text() == "1"         # run offline
    assert "$ " in (tmp_path / "work" / "geneval.log").read_text()


def test_skipped_and_missing_images_are_errors(tmp_path, monkeypatch):
    root = _checkout(tmp_path)
    metadata = geneval.read_metadata(root / geneval.METADATA_FILE)
    layout = geneval.write_layout(tmp_path / "images", metadata, _images())
    monkeypatch.setenv("FAKE_GENEVAL_SKIP", "00002/00001.png")           # the evaluator skips one silently
    with pytest.raises(ValueError, match="27 results for 28 images; the evaluator skipped images"):
        geneval.evaluate(layout, _config(root), tmp_path / "work")
    (layout / "00003" / "samples" / "00002.png").unlink()
    with pytest.raises(ValueError, match="00003: 3 samples, expected 4"):
        geneval.check_layout(layout, metadata)
    with pytest.raises(ValueError, match="27 images for 7 prompts x 4"):
        geneval.write_layout(tmp_path / "other", metadata, _images()[:-1])


def test_failing_evaluator_reports_log_tail(tmp_path):
    root = _checkout(tmp_path)
    (root / "fake_evaluate.py").write_text("import sys\nprint('mmdet not found')\nsys.exit(3)\n")
    metadata = geneval.read_metadata(root / geneval.METADATA_FILE)
    layout = geneval.write_layout(tmp_path / "images", metadata, _images())
    with pytest.raises(RuntimeError, match=r"(?s)exit status 3.*mmdet not found"):
        geneval.evaluate(layout, _config(root), tmp_path / "work")


def test_config_from_env_and_default_command(tmp_path, monkeypatch, asset_root):
    monkeypatch.delenv("SOFTDIMO_GENEVAL_DIR", raising=False)
    with pytest.raises(ValueError, match="SOFTDIMO_GENEVAL_DIR"):
        GenEvalConfig.from_env()
    monkeypatch.setenv("SOFTDIMO_GENEVAL_DIR", str(tmp_path / "geneval"))
    monkeypatch.setenv("SOFTDIMO_GENEVAL_PYTHON", "/envs/geneval/bin/python")
    monkeypatch.setenv("SOFTDIMO_GENEVAL_OPTIONS", "threshold=0.4")
    config = GenEvalConfig.from_env()
    detector = asset_root / "geneval" / geneval.DETECTOR_FILE
    detector.parent.mkdir()
    detector.write_bytes(b"weights")
    cmd = config.evaluator_command(Path("/imgs"), Path("/out/results.jsonl"))
    assert cmd == ["/envs/geneval/bin/python", f"{tmp_path / 'geneval'}/evaluation/evaluate_images.py", "/imgs",
                   "--outfile", "/out/results.jsonl", "--model-path", str(detector.parent),
                   "--options", "threshold=0.4"]


def test_evaluate_command_runs_geneval(tmp_path, monkeypatch, asset_root):
    from harness.cell import evaluate
    root = _checkout(tmp_path)
    metadata = geneval.read_metadata(root / geneval.METADATA_FILE)
    layout = geneval.write_layout(tmp_path / "images", metadata, _images())
    monkeypatch.setenv("SOFTDIMO_GENEVAL_COMMAND",
                       f"{sys.executable} {root / 'fake_evaluate.py'} {{image_dir}} --outfile {{outfile}}")
    results = tmp_path / "results"
    assert evaluate.main(["--samples", str(layout), "--protocol", "geneval", "--geneval-dir", str(root),
                          "--results", str(results)]) == 0
    (record_path,) = (results / "evaluate").glob("*/record.json")
    record = json.loads(record_path.read_text())
    assert record["metrics"]["geneval"]["value"] == pytest.approx(2.5 / 6)
    assert record["samples"]["count"] == 28
    assert (record_path.parent / "geneval" / "results.jsonl").is_file()

"""benchmarks/gpu_smoke.py at its tiny size on a CPU: the same code path the GPU run takes, and a
CSV the cost plan reads."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.launch.cost_plan import load_table

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_smoke_tiny_on_cpu_writes_step_cost_rows(tmp_path: Path) -> None:
    out = tmp_path / "smoke.csv"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_smoke.py"), "--device", "cpu", "--tiny",
                           "--threads", "1", "--out", str(out)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "FAILED" not in proc.stdout and "random weights (no asset)" in proc.stdout
    table = load_table([out])
    assert set(table) == {("maskbit", "none", "fp32", "cpu"), ("maskbit", "none", "bf16", "cpu")}
    for row in table.values():
        assert row.status == "measured" and row.batch == 4 and "benchmarks/gpu_smoke.py on cpu" in row.source
        assert min(row.step_s, row.forward_1k_s, row.decode_1k_s, row.eval_1k_s) > 0
    header = out.read_text().splitlines()[0].split(",")
    assert {"peak_mem_gib", "one_step_img_s", "sampler16_img_s"} <= set(header)

"""Baselines: reported numbers stored as cited data, compared with runs only where protocols match.

Two sources are registered (`python -m harness.run --list baselines`):
- `papers`: `baselines/paper_results.csv`, every number of the Di[M]O and Soft-Di[M]O papers and
  the teachers' own reports, built by `baselines/build_paper_baselines.py`;
- `mini_reference`: `baselines/mini_reference.csv`, the project's own mini-scale results, made
  from ok records by

      python -m harness.report.baselines export --grid soft_vs_hard --results results \\
          --out baselines/mini_reference.csv

Both files have the columns of `COLUMNS`; `protocol_json` holds the evaluation protocol as far as
it is known (see `harness.contracts.protocol`). A file of the project's own runs keeps one row per run and
metric (`seed`, `run_id`, and the run's stage hashes in `stage_hashes_json`, harness.store.stages), so
that new runs can be tested against the per-seed values and compared stage by stage
(`python -m harness.report.verify`); a paper's number has none of them.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from harness.contracts import registry
from harness.contracts.protocol import protocol_id
from softdimo.files import atomic_write

BASELINES_ENV = "SOFTDIMO_BASELINES"
COLUMNS = ("source", "paper", "arxiv", "citation", "source_quality", "table", "teacher",
           "teacher_key", "task", "task_original", "method", "steps", "metric", "metric_original",
           "value", "std", "n", "higher_is_better", "protocol_json", "notes", "seed", "run_id",
           "stage_hashes_json")
OPTIONAL = ("seed", "run_id", "stage_hashes_json")   # absent in older files: read as empty
QUALITIES = ("primary", "secondary")

#----------------------------------------------------------------------------


# One reported number with its citation and protocol.
@dataclass(frozen=True)
class Baseline:
    source: str                     # baseline source name: "papers", "mini_reference", ...
    paper: str                      # e.g. "Soft-DiMO (arXiv 2509.22925)"
    arxiv: str                      # arXiv id, "" when the number is not from a paper
    citation: str                   # paper + table / figure (or README) the number comes from
    source_quality: str             # "primary" (read in the original) or "secondary" (transcribed)
    table: str                      # the table as the source names it
    teacher: str                    # teacher as printed
    teacher_key: str                # harness teacher name ("" when no harness teacher matches)
    task: str                       # normalised task key, e.g. "imagenet256-c2i"
    task_original: str
    method: str                     # method as printed: the row label in tables
    steps: int | None               # sampling steps
    metric: str                     # harness metric name
    metric_original: str            # metric as printed
    value: float
    std: float | None
    n: int | None
    higher_is_better: bool
    protocol: Mapping[str, Any]
    notes: str
    seed: int | None = None         # per-seed rows of the project's own runs
    run_id: str = ""
    stage_hashes: Mapping[str, str] = field(default_factory=dict)   # the run's (harness.store.stages)

    # This baseline as a row of the results table (`harness.store.results`).
    def row(self) -> dict[str, Any]:
        return {"kind": "baseline", "source": self.source, "run_id": self.run_id or None, "teacher": self.teacher_key,
                "seed": self.seed, "label": self.method,
                "group": f"{self.source}:{self.teacher_key}:{self.method}:{self.steps}", "steps": self.steps,
                "status": "ok", "metric": self.metric, "value": self.value, "higher_is_better": self.higher_is_better,
                "protocol_id": protocol_id(self.protocol), "protocol": dict(self.protocol), "optimised": False,
                "std": self.std, "n": self.n, "citation": self.citation, "source_quality": self.source_quality}


# A baseline file that cannot be read; the message names the file and line.
class BaselineError(ValueError):
    pass


# A registered baseline source: a CSV file of baselines.
@dataclass(frozen=True)
class BaselineSource:
    name: str
    path: Callable[[], Path]
    description: str = ""

    def load(self) -> list[Baseline]:
        return read_csv(self.path(), self.name)


# The baseline sources reports read, filled by `harness.builtin.plugins`.
registered: registry.Registry[BaselineSource] = registry.Registry("baseline source")


# The directory of the baseline files: $SOFTDIMO_BASELINES, else <project>/baselines.
def baselines_dir() -> Path:
    return Path(os.environ.get(BASELINES_ENV) or Path(__file__).resolve().parents[2] / "baselines")

#----------------------------------------------------------------------------


# Read a baseline CSV; every problem names the file and line.
def read_csv(path: str | Path, source: str) -> list[Baseline]:
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or []) and c not in OPTIONAL]
        if missing:
            raise BaselineError(f"{path}: missing column(s) {', '.join(missing)}")
        out = []
        for i, r in enumerate(reader, start=2):
            try:
                out.append(_parse(r, source))
            except (ValueError, KeyError) as e:
                raise BaselineError(f"{path}:{i}: {e}") from None
    return out


def _parse(r: Mapping[str, str], source: str) -> Baseline:
    if r["source_quality"] not in QUALITIES:
        raise ValueError(f"source_quality {r['source_quality']!r}; allowed: {', '.join(QUALITIES)}")
    protocol = json.loads(r["protocol_json"])
    if not isinstance(protocol, dict) or "name" not in protocol:
        raise ValueError("protocol_json must be an object with a 'name'")
    value = float(r["value"])
    if not math.isfinite(value):
        raise ValueError(f"value {r['value']!r} is not finite")
    return Baseline(source, r["paper"], r["arxiv"], r["citation"], r["source_quality"], r["table"],
                    r["teacher"], r["teacher_key"], r["task"], r["task_original"], r["method"],
                    int(r["steps"]) if r["steps"] else None, r["metric"], r["metric_original"],
                    value, float(r["std"]) if r["std"] else None, int(r["n"]) if r["n"] else None,
                    r["higher_is_better"] == "true", protocol, r["notes"],
                    int(r["seed"]) if r.get("seed") else None, r.get("run_id") or "",
                    json.loads(r["stage_hashes_json"]) if r.get("stage_hashes_json") else {})


# Write baselines as CSV (the columns of COLUMNS).
def write_csv(baselines: Iterable[Baseline], path: str | Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for b in baselines:
        w.writerow({"source": b.source, "paper": b.paper, "arxiv": b.arxiv, "citation": b.citation,
                    "source_quality": b.source_quality, "table": b.table, "teacher": b.teacher,
                    "teacher_key": b.teacher_key, "task": b.task, "task_original": b.task_original,
                    "method": b.method, "steps": "" if b.steps is None else b.steps,
                    "metric": b.metric, "metric_original": b.metric_original,
                    "value": repr(b.value),
                    "std": "" if b.std is None else repr(b.std), "n": "" if b.n is None else b.n,
                    "higher_is_better": "true" if b.higher_is_better else "false",
                    "protocol_json": json.dumps(dict(b.protocol), sort_keys=True),
                    "notes": b.notes, "seed": "" if b.seed is None else b.seed, "run_id": b.run_id,
                    "stage_hashes_json": json.dumps(dict(b.stage_hashes), sort_keys=True) if b.stage_hashes else ""})
    atomic_write(path, buf.getvalue())


# Every baseline of the registered sources (or of `names`), and one line per source saying what
# was loaded; a file that cannot be read is a problem (listed), a file not made yet is not.
def load_all(names: Sequence[str] | None = None) -> tuple[list[Baseline], list[str], list[str]]:
    out: list[Baseline] = []
    summary: list[str] = []
    problems: list[str] = []
    for name in names or registered.names():
        src = registered.get(name)
        if not src.path().exists():
            summary.append(f"{name}: {src.path().name} not present")
            continue
        try:
            rows = src.load()
        except (BaselineError, OSError) as e:
            problems.append(f"baseline source {name!r}: {e}")
            continue
        out += rows
        summary.append(f"{name}: {len(rows)} numbers from {src.path().name}")
    return out, summary, problems

#----------------------------------------------------------------------------

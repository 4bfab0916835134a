"""The exact GenEval-style checker of the shapes world (`shapes_geneval`).

An image is parsed back into objects: every pixel snaps to its nearest palette colour, each
colour's 4-connected components are found, and a component is an object only if its cropped mask
equals one shape template exactly; any other component is junk. A prompt is then scored by
GenEval's rules (Ghosh et al. 2023, `evaluate_images.py`), with an exact parse in place of the
detector:

- lenient (GenEval): every prompted object is present (with its colour where the prompt names
  one); counting needs exactly the prompted number of that shape; position needs a pair of the two
  shapes whose boxes satisfy GenEval's `relative_position` (threshold 0.1). Extra objects and junk
  are ignored. With an exact parse "present" means "some parsed object", where GenEval takes the
  detector's most confident boxes.
- strict: lenient, and the parsed objects are exactly the prompt's (no extra object, no junk).

Scores per task are accuracies; overall = the unweighted mean of the task accuracies (GenEval).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.ndimage
from torch import Tensor

from harness.contracts.entries import EvalInput, MetricValue, RunContext
from softdimo.data import shapes as world

CHECKER_VERSION = "shapes-geneval-1"
_FOUR_CONNECTED = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])
_TEMPLATES = {name: np.array(t, dtype=bool) for name, t in world.TEMPLATES.items()}
_PALETTE = np.array(world.PALETTE, dtype=np.float64)

#----------------------------------------------------------------------------


# One parsed object: shape, colour and pixel box (x0, y0, x1, y1), end-exclusive.
@dataclass(frozen=True)
class ParsedObject:
    shape: str
    color: str
    box: tuple[int, int, int, int]


# An image parsed back into objects, plus the number of components that match no template.
@dataclass(frozen=True)
class ParsedScene:
    objects: tuple[ParsedObject, ...]
    junk: int


# Palette index [H, W] (0 = background) of each pixel of an image [3, H, W]: the nearest colour.
def palette_indices(image: np.ndarray) -> np.ndarray:
    d = ((image.transpose(1, 2, 0)[:, :, None, :] - _PALETTE[None, None]) ** 2).sum(-1)
    return d.argmin(-1)


def _classify(mask: np.ndarray) -> str | None:
    for name, template in _TEMPLATES.items():
        if mask.shape == template.shape and np.array_equal(mask, template):
            return name
    return None


# Parse one image [3, H, W] in [0, 1] into objects (exact template matches per colour component).
def parse_image(image: np.ndarray) -> ParsedScene:
    index = palette_indices(image)
    objects, junk = [], 0
    for c, color in enumerate(world.COLORS, start=1):
        labels, count = scipy.ndimage.label(index == c, structure=_FOUR_CONNECTED)
        for k, sl in enumerate(scipy.ndimage.find_objects(labels), start=1):
            shape = _classify(labels[sl] == k)
            if shape is None:
                junk += 1
            else:
                objects.append(ParsedObject(shape, color, (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)))
    return ParsedScene(tuple(objects), junk)


def _matches(want: world.ObjectSpec, got: ParsedObject) -> bool:
    return got.shape == want.shape and (want.color is None or got.color == want.color)


# GenEval's (lenient) verdict on one parsed scene for one prompt.
def lenient_correct(spec: world.PromptSpec, scene: ParsedScene) -> bool:
    found = [[o for o in scene.objects if _matches(want, o)] for want in spec.objects]
    if spec.task == "counting":
        return len(found[0]) == spec.count
    if spec.task == "position":
        return any(spec.relation in world.relative_position(a.box, b.box) for a in found[0] for b in found[1])
    return all(found)


# The strict verdict: lenient, and exactly the prompt's objects with no junk.
def strict_correct(spec: world.PromptSpec, scene: ParsedScene) -> bool:
    return (scene.junk == 0 and len(scene.objects) == len(spec.scene_objects())
            and lenient_correct(spec, scene))


# Per-task and overall accuracies of one evaluation.
@dataclass(frozen=True)
class GenEvalScores:
    strict: dict[str, float]        # task -> accuracy
    lenient: dict[str, float]
    counts: dict[str, int]          # task -> prompts

    @property
    def strict_overall(self) -> float:
        return float(np.mean(list(self.strict.values())))

    @property
    def lenient_overall(self) -> float:
        return float(np.mean(list(self.lenient.values())))


# Per image: its prompt's task (index into world.TASKS) and the strict and lenient verdicts.
def verdicts(images: Tensor, prompts: Sequence[str]) -> dict[str, np.ndarray]:
    if len(images) != len(prompts):
        raise ValueError(f"shapes_geneval got {len(images)} images but {len(prompts)} prompts")
    pixels = images.detach().double().cpu().numpy()
    tasks, strict, lenient = [], [], []
    for image, prompt in zip(pixels, prompts):
        spec = world.parse_prompt(prompt)
        scene = parse_image(image)
        tasks.append(world.TASKS.index(spec.task))
        strict.append(strict_correct(spec, scene))
        lenient.append(lenient_correct(spec, scene))
    return {"task": np.array(tasks, dtype=np.int64), "strict": np.array(strict, dtype=bool),
            "lenient": np.array(lenient, dtype=bool)}


# Per-task accuracies of the verdicts of a whole evaluation; tasks without prompts are left out of
# the overall mean.
def scores_of(verdict: dict[str, np.ndarray]) -> GenEvalScores:
    if len(verdict.get("task", ())) == 0:
        raise ValueError("shapes_geneval needs at least one image")
    present = [t for t in range(len(world.TASKS)) if (verdict["task"] == t).any()]
    strict = {world.TASKS[t]: float(np.mean(verdict["strict"][verdict["task"] == t].tolist())) for t in present}
    lenient = {world.TASKS[t]: float(np.mean(verdict["lenient"][verdict["task"] == t].tolist())) for t in present}
    counts = {world.TASKS[t]: int((verdict["task"] == t).sum()) for t in present}
    return GenEvalScores(strict, lenient, counts)


# Score images [N, 3, H, W] in [0, 1] against their prompts.
def evaluate(images: Tensor, prompts: Sequence[str]) -> GenEvalScores:
    return scores_of(verdicts(images, prompts))


#----------------------------------------------------------------------------
# Metric entry (per image: the verdicts; reduced to the accuracies).


def extract_verdicts(inp: EvalInput, ctx: RunContext) -> dict[str, np.ndarray]:
    return verdicts(inp.images, [str(c) for c in inp.conditions])


# shapes_geneval: strict overall (`shapes_geneval`), strict per task (`shapes_geneval_<task>`) and
# lenient overall (`shapes_geneval_lenient`).
def reduce_geneval(inp: EvalInput, arrays: dict[str, np.ndarray], ctx: RunContext) -> dict[str, MetricValue]:
    scores = scores_of(arrays)
    base = {"implementation": "softdimo-harness exact shapes checker", "version": CHECKER_VERSION,
            "world": world.WORLD_VERSION, "position_threshold": world.POSITION_THRESHOLD,
            "samples": inp.total, "prompts_per_task": scores.counts}
    out = {"shapes_geneval": MetricValue(scores.strict_overall, True,
                                         {"name": "shapes-geneval-strict", **base}),
           "shapes_geneval_lenient": MetricValue(scores.lenient_overall, True,
                                                 {"name": "shapes-geneval-lenient", **base})}
    for task, value in scores.strict.items():
        out[f"shapes_geneval_{task}"] = MetricValue(value, True, {"name": f"shapes-geneval-strict-{task}", **base})
    return out

"""The shapes world and its exact checker: determinism, the prompt grammar, rendering, and the
checker's calibration on real and corrupted renders."""
from __future__ import annotations

import random

import pytest
import torch

from harness.methods.metrics import shapes_eval
from softdimo.data import shapes as world


def _real(prompts: list[str], seed: int = 0) -> torch.Tensor:
    rng = random.Random(seed)
    return torch.tensor([world.sample_layout(world.parse_prompt(p), rng) for p in prompts])


def test_data_is_deterministic_from_seeds() -> None:
    a_tokens, a_prompts = world.sample_batch(50, seed=3)
    b_tokens, b_prompts = world.sample_batch(50, seed=3)
    c_tokens, c_prompts = world.sample_batch(50, seed=4)
    assert torch.equal(a_tokens, b_tokens) and a_prompts == b_prompts
    assert not torch.equal(a_tokens, c_tokens) and a_prompts != c_prompts
    assert world.eval_prompts(30) == world.eval_prompts(90)[:30]
    counts = [sum(world.parse_prompt(p).task == t for p in world.eval_prompts(60)) for t in world.TASKS]
    assert counts == [10] * 6
    assert world.prompt_marginals("a red square").sum(-1).allclose(torch.ones(world.POSITIONS))


def test_every_task_parses_back() -> None:
    rng = random.Random(0)
    for task in world.TASKS:
        for _ in range(40):
            spec = world.random_prompt(task, rng)
            text = world.prompt_text(spec)
            assert world.parse_prompt(text) == spec, text
            assert (world.tokenize([text])[0] != world.WORD_ID[world.PAD]).sum() == len(text.split())
    grammar = world.all_prompts()
    assert len(set(grammar)) == len(grammar) == 236
    assert {world.parse_prompt(p).task for p in grammar} == set(world.TASKS)
    assert [world.prompt_text(world.parse_prompt(p)) for p in grammar] == list(grammar)


def test_bad_prompts_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown word 'circle'"):
        world.tokenize(["a circle"])
    for bad in ("a purple square", "five squares", "a red square and a bar", ""):
        with pytest.raises(ValueError, match="shapes prompt"):
            world.parse_prompt(bad)


def test_scenes_hold_exactly_the_prompted_objects() -> None:
    rng = random.Random(1)
    for text in world.all_prompts():
        spec = world.parse_prompt(text)
        layout = world.sample_layout(spec, rng)
        objects = sorted(world.token_object(t)[0] for t in layout if t)
        assert objects == sorted(o.shape for o in spec.scene_objects()), text


def test_soft_rendering_of_one_hot_is_the_rendering() -> None:
    tokens, _ = world.sample_batch(20, seed=5)
    one_hot = torch.nn.functional.one_hot(tokens, world.NUM_TOKENS).float()
    assert torch.equal(world.render_soft(one_hot), world.render(tokens))
    probs = torch.softmax(torch.randn(4, world.POSITIONS, world.NUM_TOKENS), -1)
    expected = sum(probs[:, :, j, None, None, None] * world.token_patches()[j] for j in range(world.NUM_TOKENS))
    cells = world.render_soft(probs).view(4, 3, world.GRID, world.CELL, world.GRID, world.CELL)
    torch.testing.assert_close(cells.permute(0, 2, 4, 1, 3, 5).reshape(4, world.POSITIONS, 3, world.CELL, world.CELL),
                               expected)


def test_real_renders_score_one() -> None:
    prompts = world.eval_prompts(300)
    scores = shapes_eval.evaluate(world.render(_real(prompts)), prompts)
    assert scores.strict == scores.lenient == {t: 1.0 for t in world.TASKS}
    assert scores.counts == {t: 50 for t in world.TASKS}


def test_checker_parses_objects_and_junk() -> None:
    layout = [0] * world.POSITIONS
    layout[0] = world.object_token("cross", "red")
    layout[5] = world.object_token("bar", "blue")
    image = world.render(torch.tensor([layout]))[0].numpy()
    scene = shapes_eval.parse_image(image)
    assert scene.junk == 0
    assert sorted((o.shape, o.color, o.box) for o in scene.objects) == [
        ("bar", "blue", (4, 4, 5, 7)), ("cross", "red", (0, 0, 3, 3))]
    image[:, 3, 3] = (1.0, 0.0, 0.0)   # a stray red pixel: its own component, not a shape
    assert shapes_eval.parse_image(image).junk == 1


def _layout_with(objects: dict[int, tuple[str, str]]) -> list[int]:
    layout = [0] * world.POSITIONS
    for cell, (shape, color) in objects.items():
        layout[cell] = world.object_token(shape, color)
    return layout


def _verdicts(prompt: str, layout: list[int]) -> tuple[bool, bool]:
    scene = shapes_eval.parse_image(world.render(torch.tensor([layout]))[0].numpy())
    spec = world.parse_prompt(prompt)
    return shapes_eval.strict_correct(spec, scene), shapes_eval.lenient_correct(spec, scene)


def test_corruptions_fail_the_right_checks() -> None:
    base = {0: ("square", "red"), 10: ("bar", "blue")}
    assert _verdicts("a red square and a blue bar", _layout_with(base)) == (True, True)
    # removed object: both fail
    assert _verdicts("a red square and a blue bar", _layout_with({0: base[0]})) == (False, False)
    # added object: strict fails, GenEval's lenient rule ignores extras
    extra = {**base, 15: ("cross", "green")}
    assert _verdicts("a red square and a blue bar", _layout_with(extra)) == (False, True)
    # recoloured object: colour attribution fails, two_object still holds
    recoloured = {0: ("square", "green"), 10: base[10]}
    assert _verdicts("a red square and a blue bar", _layout_with(recoloured)) == (False, False)
    assert _verdicts("a square and a bar", _layout_with(recoloured)) == (True, True)
    # counting is exact even for the lenient rule
    three = {0: ("cross", "red"), 2: ("cross", "red"), 8: ("cross", "blue")}
    assert _verdicts("three crosses", _layout_with(three)) == (True, True)
    assert _verdicts("two crosses", _layout_with(three)) == (False, False)
    assert _verdicts("three crosses", _layout_with({**three, 15: ("bar", "red")})) == (False, True)
    # moved object: the relation flips
    left = {4: ("square", "red"), 6: ("bar", "blue")}
    assert _verdicts("a square left of a bar", _layout_with(left)) == (True, True)
    moved = {7: ("square", "red"), 6: ("bar", "blue")}
    assert _verdicts("a square left of a bar", _layout_with(moved)) == (False, False)
    assert _verdicts("a square right of a bar", _layout_with(moved)) == (True, True)
    same_column = {2: ("square", "red"), 14: ("bar", "blue")}
    assert _verdicts("a square left of a bar", _layout_with(same_column)) == (False, False)
    assert _verdicts("a square above a bar", _layout_with(same_column)) == (True, True)


def test_randomised_pixels_and_baselines_score_below_real() -> None:
    prompts = world.eval_prompts(240)
    images = world.render(_real(prompts))
    g = torch.Generator().manual_seed(0)
    noisy = images.clone()
    hit = torch.rand(len(images), 1, world.SIDE, world.SIDE, generator=g) < 0.03
    colors = torch.tensor(world.PALETTE)[torch.randint(len(world.PALETTE), (len(images), world.SIDE, world.SIDE),
                                                       generator=g)].permute(0, 3, 1, 2)
    noisy = torch.where(hit, colors, noisy)
    corrupted = shapes_eval.evaluate(noisy, prompts)
    assert corrupted.strict_overall < 0.3 < corrupted.lenient_overall < 1.0
    other = shapes_eval.evaluate(world.render(_real(world.eval_prompts(480)[240:], seed=1)), prompts)
    assert other.strict_overall < 0.3
    mismatched = shapes_eval.evaluate(images, prompts[1:] + prompts[:1])
    assert mismatched.lenient_overall < 0.3

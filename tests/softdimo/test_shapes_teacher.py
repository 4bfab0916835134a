"""The shapes teacher (tiny, trained once per session): cache, soft paths, conditions, Di[M]O steps
with each relaxation, and the registered methods and metrics end to end."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.contracts import registry
from harness.contracts.entries import EvalInput, RunContext
from harness.grid.spec import resolve_cell
from softdimo.config import DistillConfig, RelaxConfig
from softdimo.data import shapes as world
from softdimo.relax import RELAXATIONS
from softdimo.teachers.base import ImageNoise, guided_logits
from softdimo.teachers.shapes import ShapesConfig, ShapesTeacher, build_shapes_teacher
from softdimo.train import Distiller, generate, run_distillation

TINY = ShapesConfig(d_model=16, layers=1, heads=2, train_steps=200, batch_size=32, warmup_steps=5)
TINY_PARAMS = {f"teacher.{k}": v for k, v in TINY.__dict__.items()}


@pytest.fixture(scope="session")
def shapes_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shapes-cache")


@pytest.fixture(scope="session")
def tiny_shapes(shapes_cache: Path) -> ShapesTeacher:
    torch.set_num_threads(1)
    return build_shapes_teacher(TINY, shapes_cache)


def test_second_build_is_a_cache_hit(tiny_shapes: ShapesTeacher, shapes_cache: Path) -> None:
    assert not tiny_shapes.info["cache_hit"]
    again = build_shapes_teacher(TINY, shapes_cache)
    assert again.info["cache_hit"] and again.info["cache_key"] == tiny_shapes.info["cache_key"]
    assert (Path(again.info["cache_dir"]) / "train_log.json").is_file()
    for key, value in tiny_shapes.network.state_dict().items():
        assert torch.equal(value, again.network.state_dict()[key]), key


def test_soft_paths_are_exact_on_one_hot(tiny_shapes: ShapesTeacher) -> None:
    net, layout = tiny_shapes.network, tiny_shapes.layout
    tokens = torch.randint(layout.classes, (3, layout.positions, 1))
    one_hot = torch.nn.functional.one_hot(tokens, layout.classes).float()
    assert torch.equal(net.embed_soft(one_hot), net.embed(tokens))
    assert torch.equal(tiny_shapes.decode_soft(one_hot), tiny_shapes.decode(tokens))
    assert tiny_shapes.decode(tokens).shape == (3, *layout.image_shape)


def test_conditions_and_null_prompt(tiny_shapes: ShapesTeacher) -> None:
    a = tiny_shapes.sample_conditions(12, torch.Generator().manual_seed(1))
    b = tiny_shapes.sample_conditions(12, torch.Generator().manual_seed(1))
    assert a == b and all(world.parse_prompt(p) for p in a)
    assert tiny_shapes.eval_conditions(12) == world.eval_prompts(12)
    net = tiny_shapes.network
    cond = tiny_shapes.encode_condition(["a red square", "three bars"])
    assert cond.kind == "text" and cond.tensors["tokens"].shape == (2, world.PROMPT_LEN)
    e = net.embed(torch.full((2, world.POSITIONS, 1), tiny_shapes.layout.mask_id))
    z_u = net(e, cond, drop=torch.ones(2, dtype=torch.bool)).logits
    other = tiny_shapes.encode_condition(["a cross", "a bar and a square"])
    torch.testing.assert_close(guided_logits(net, e, other, 0.0).logits, z_u)
    assert not torch.allclose(net(e, cond).logits, z_u)
    tokens, prompts = tiny_shapes.real_tokens()
    assert tokens.shape == (5000, world.POSITIONS, 1) and len(prompts) == 5000


@pytest.mark.parametrize("relax", sorted(RELAXATIONS))
def test_dimo_steps_with_each_relaxation(tiny_shapes: ShapesTeacher, relax: str) -> None:
    fn, _ = RELAXATIONS[relax]
    config = DistillConfig(steps=3, batch_size=8, warmup_steps=1, r_init=0.9, sigma_init=0.5)
    d = run_distillation(Distiller(tiny_shapes, fn, RelaxConfig(), config, seed=0))
    assert d.step == 3 and all(torch.isfinite(torch.tensor(h["divergence"])) for h in d.history)
    assert not torch.equal(d.generator.head.weight, tiny_shapes.network.head.weight)
    cond = tiny_shapes.encode_condition(world.eval_prompts(6))
    tokens, probs = generate(d.ema, cond, ImageNoise(0, range(6)), config.r_init, config.sigma_init)
    assert tokens.shape == (6, world.POSITIONS, 1) and probs.shape == (6, world.POSITIONS, 1, world.NUM_TOKENS)


def _run(method: str, cache: Path, tmp: Path, **extra: object) -> dict[str, float]:
    spec = resolve_cell({"teacher": "shapes", "method": method, "seed": 0, "eval.samples": 60,
                         **TINY_PARAMS, **extra}, "mini")
    ctx = RunContext(tmp / spec.run_id, cache, log=lambda s: None)
    result = registry.methods.get(method).run(spec, ctx)
    assert result.samples.all_images().shape == (60, 3, world.SIDE, world.SIDE)
    assert result.conditions == world.eval_prompts(60)
    inp = EvalInput(spec, result.teacher, result.samples.all_images(), result.conditions,
                    result.samples.all_tokens())
    values = {}
    for metric in spec.param("eval.metrics"):
        for name, value in registry.metrics.get(metric).compute(inp, ctx).items():
            assert value.protocol["samples"] == 60
            values[name] = value.value
    return values


def test_registered_rungs_and_methods(tiny_shapes: ShapesTeacher, shapes_cache: Path, tmp_path: Path) -> None:
    real = _run("real_prompt", shapes_cache, tmp_path)
    assert real["shapes_geneval"] == real["shapes_geneval_lenient"] == 1.0
    assert {f"shapes_geneval_{t}" for t in world.TASKS} <= set(real)
    marginals = _run("marginals_prompt", shapes_cache, tmp_path)
    assert marginals["shapes_geneval"] < 0.6 and marginals["shapes_clip"] < real["shapes_clip"]
    floor = _run("real_same_task", shapes_cache, tmp_path)
    assert floor["shapes_geneval"] < 0.5
    dimo = _run("dimo", shapes_cache, tmp_path, relaxation="soft", **{"distill.steps": 2, "distill.batch_size": 8})
    assert 0.0 <= dimo["shapes_geneval"] <= 1.0


def test_visible_slots_predict_themselves(tiny_shapes: ShapesTeacher, shapes_cache: Path) -> None:
    # teacher.loss_positions = "all": visible cells are in the loss, so x_init's random tokens are
    # copied by the teacher-initialised generator (the seeds of one-step sampling)
    tokens, prompts = world.sample_batch(256, seed=3)
    net = tiny_shapes.network
    predicted = net(net.embed(tokens[..., None]), tiny_shapes.encode_condition(prompts)).logits.argmax(-1)[..., 0]
    objects = tokens != 0
    assert (predicted[objects] == tokens[objects]).float().mean() > 0.3
    masked_only = build_shapes_teacher(ShapesConfig(**{**TINY.__dict__, "loss_positions": "masked"}), shapes_cache)
    assert masked_only.info["cache_key"] != tiny_shapes.info["cache_key"]
    net = masked_only.network
    copied = net(net.embed(tokens[..., None]), tiny_shapes.encode_condition(prompts)).logits.argmax(-1)[..., 0]
    assert (copied[objects] == tokens[objects]).float().mean() < 0.1


def test_unknown_loss_positions_are_refused(shapes_cache: Path) -> None:
    with pytest.raises(ValueError, match="loss_positions"):
        build_shapes_teacher(ShapesConfig(**{**TINY.__dict__, "loss_positions": "visible"}), shapes_cache)

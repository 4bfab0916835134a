"""Refinements in the harness: validation before launch, curves over steps, TTEO as a sampling option."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import cell, store
from harness.contracts import registry
from harness.contracts.entries import RelaxationEntry, RunContext
from harness.grid.spec import CellError, resolve_cell
from harness.methods import run_dimo
from harness.methods.students import SAMPLE_BATCH, merged_selection, student_key
from softdimo.refine.selection import SelectionLog
from tests.conftest import TINY_TEACHER

TINY = {f"teacher.{k}": v for k, v in TINY_TEACHER.__dict__.items()}
BASE = {"teacher": "digits", "method": "dimo", "seed": 0, **TINY}


def _cell(**kw: object) -> dict:
    return {**BASE, **{k.replace("__", "."): v for k, v in kw.items()}}


def test_gradient_refinements_are_refused_with_hard_tokens() -> None:
    for refinement in ("gan", "reward"):
        with pytest.raises(CellError) as e:
            resolve_cell(_cell(relaxation="hard", refinement=refinement), "mini")
        msg = str(e.value)
        assert e.value.key == "refinement"
        assert f"refinement {refinement!r} needs gradients" in msg and "relaxation 'hard' passes none" in msg
        assert "gumbel or soft" in msg and "reinforce" in msg
    spec = resolve_cell(_cell(relaxation="hard", refinement="reinforce"), "mini")
    assert spec.param("reinforce.baseline") == "leave_one_out"
    for relax in ("soft", "gumbel"):
        assert resolve_cell(_cell(relaxation=relax, refinement="gan"), "mini").param("gan.mask_max") == 0.95


@pytest.mark.parametrize("cell, key, text", [
    (dict(refinement="reward", reward__models=["no_such_reward"]), "reward.models", "unknown reward model"),
    (dict(refinement="reward", reward__weights=[1.0, 2.0]), "reward.weights", "2 weights for 1 models"),
    (dict(refinement="reinforce", reinforce__models=[]), "reinforce.models", "empty"),
    (dict(refinement="gan", gan__mask_min=0.5, gan__mask_max=0.2), "gan.mask_min", "exceeds"),
    (dict(refinement="gan", gan__layers=["last"]), "gan.layers", "not a block index"),
    (dict(sample__tteo_steps=2), "sample.tteo_reward", "empty, but sample.tteo_steps = 2"),
    (dict(sample__best_of_n=4), "sample.select_reward", "empty, but sample.best_of_n = 4"),
    (dict(sample__best_of_n=4, sample__select_reward=["nope"]), "sample.select_reward", "unknown reward model"),
    (dict(sample__select_combine="zcore"), "sample.select_combine",
     "expected one of 'sum', 'zscore', got 'zcore' (did you mean 'zscore'?)"),
    (dict(distill__weight_decay=0.01), "distill.weight_decay", "needs distill.optimizer 'adamw'"),
    (dict(distill__r_init_range=[0.9, 0.1]), "distill.r_init_range", "0 <= a <= b <= 1"),
    (dict(distill__r_init_range=[0.1]), "distill.r_init_range", "expected [a, b]"),
    (dict(distill__sigma_init_schedule="warmup_cos"), "distill.sigma_init_warmup", "warm-up length"),
])
def test_bad_refinement_and_test_time_settings_are_refused(cell: dict, key: str, text: str) -> None:
    with pytest.raises(CellError) as e:
        resolve_cell(_cell(relaxation="soft", **cell), "mini")
    assert e.value.key == key and text in str(e.value)


def test_test_time_scaling_is_refused_for_the_teacher_sampler() -> None:
    cell = {**BASE, "method": "teacher_sampler", "sample.best_of_n": 4, "sample.select_reward": ["digits_reward"]}
    with pytest.raises(CellError, match="does not do test-time scaling.*methods that do: dimo"):
        resolve_cell(cell, "mini")


def test_reward_registry_and_metric() -> None:
    assert registry.rewards.get("digits_reward").applies_to == ("digits",)
    assert "digits_reward" in registry.metrics


def _run(tmp_path: Path, cache: Path, name: str, **params: object):
    defaults = dict(relaxation="soft", refinement="gan", distill__steps=4, distill__batch_size=8,
                    distill__refine_start=0,
                    distill__checkpoint_every=2, eval__samples=30, eval__curve_samples=20,
                    eval__metrics=["digits_acc", "digits_reward"])
    spec = resolve_cell(_cell(**{**defaults, **params}), "mini")
    ctx = RunContext(tmp_path / name, cache, log=lambda s: None)
    return spec, ctx, run_dimo(spec, ctx)


def test_curves_over_training_steps_and_resume(tmp_path: Path, teacher_cache: Path, tiny_teacher) -> None:
    fast = dict(distill__eval_every=2, distill__ema_decay=0.0, distill__lr_generator=1e-2, distill__warmup_steps=0)
    spec, ctx, result = _run(tmp_path, teacher_cache, "curves", **fast)
    # The metrics, and the training diagnostics of a GAN run: the generator's sharpness, the GAN vs
    # Di[M]O gradient ratio, D's accuracy on real and fake inputs, the softness probe and the
    # sharpness of D's real input (1 for one-hot reals).
    diagnostics = {"p_max", "p_entropy", "grad_ratio", "gan_d_acc_real", "gan_d_acc_fake", "gan_softness_probe",
                   "gan_real_p_max"}
    assert set(result.curves) == {"digits_acc", "digits_reward"} | diagnostics
    assert [s for s, _ in result.curves["digits_reward"]] == [0, 2, 4]
    # the softness probe on the first refinement step and every SOFTNESS_PROBE_EVERY-th after it
    assert [s for s, _ in result.curves["gan_softness_probe"]] == [2]       # steps 0-1; none in 2-3
    assert all(0.0 <= v <= 1.0 for name in ("p_max", "gan_d_acc_real", "gan_softness_probe")
               for _, v in result.curves[name])
    assert all(v > 0 for _, v in result.curves["grad_ratio"])
    assert len({v for _, v in result.curves["digits_reward"]}) > 1
    assert result.stage_seconds["curve_s"] > 0 and "gan_d_loss" in result.info["final_log"]
    stored = json.loads((ctx.checkpoint_dir / "curves.json").read_text())
    assert stored["digits_acc"] == [list(p) for p in result.curves["digits_acc"]]
    assert result.info["student"]["cache_hit"] is False
    # A job resumed after training (checkpoint at the last step, student not yet cached) keeps the
    # curve and the samples.
    shutil.rmtree(teacher_cache / "students" / result.info["student"]["cache_key"])
    _, _, again = _run(tmp_path, teacher_cache, "curves", **fast)
    assert again.curves == result.curves and torch.equal(again.samples.all_tokens(), result.samples.all_tokens())


def test_cells_differing_only_in_sampling_share_the_student(tmp_path: Path, teacher_cache: Path,
                                                            tiny_teacher) -> None:
    spec_a, _, a = _run(tmp_path, teacher_cache, "a", distill__steps=3)
    spec_b, _, b = _run(tmp_path, teacher_cache, "b", distill__steps=3, eval__samples=20,
                        sample__best_of_n=2, sample__select_reward=["digits_reward"])
    spec_c, _, c = _run(tmp_path, teacher_cache, "c", distill__steps=3, gan__weight=0.5)
    assert spec_a.run_id != spec_b.run_id
    assert a.info["student"]["cache_hit"] is False and b.info["student"]["cache_hit"] is True
    assert a.info["student"]["cache_key"] == b.info["student"]["cache_key"] != c.info["student"]["cache_key"]
    assert c.info["student"]["cache_hit"] is False
    assert a.info["final_log"] == b.info["final_log"] != c.info["final_log"]


def test_student_key_follows_what_the_student_trains_with() -> None:
    key = lambda **kw: student_key(resolve_cell(_cell(**kw), "mini"))   # noqa: E731
    hard = key(relaxation="hard")
    assert key(relaxation="gumbel") == key(relaxation="gumbel", relax__gumbel_tau=0.3) == hard
    assert key(relaxation="hard", relax__gumbel_tau=0.3) == hard         # hard reads no relax.* key
    assert key(relaxation="gumbel", refinement="reinforce") == key(relaxation="hard", refinement="reinforce")
    gan = key(relaxation="gumbel", refinement="gan")                     # the GAN's gradient goes through q
    assert gan != key(relaxation="soft", refinement="gan") and gan != key(relaxation="gumbel", refinement="gan",
                                                                          relax__gumbel_tau=0.3)
    # phi and psi read the sample x_theta (Di[M]O's discrete path), which soft draws as hard does.
    assert key(relaxation="soft") == hard and key(relaxation="hard", seed=1) != hard
    assert key(relaxation="hard", distill__refine_start=2) == hard         # no refinement: no effect
    relaxed = dict(distill__teacher_input="relaxed")
    assert key(relaxation="soft", **relaxed) != key(relaxation="hard", **relaxed)
    assert key(relaxation="gumbel", **relaxed) == key(relaxation="hard", **relaxed)


def test_a_relaxation_forward_as_an_unknown_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    gumbel = registry.relaxations.get("gumbel")
    monkeypatch.setitem(registry.relaxations._entries, "st_typo",
                        RelaxationEntry("st_typo", gumbel.fn, True, forward_as="hrad"))
    with pytest.raises(CellError) as e:
        resolve_cell(_cell(relaxation="st_typo"), "mini")
    assert e.value.key == "relaxation" and "forward_as 'hrad', which is not registered" in str(e.value)


def test_refinements_continue_one_shared_di_m_o_prefix(tmp_path: Path, teacher_cache: Path, tiny_teacher) -> None:
    # Di[M]O alone and two GAN cells of one seed share the plain Di[M]O state at refine_start: the
    # first cell trains and stores it, the others continue it, with the very result of training
    # from scratch.
    common = dict(distill__steps=4, distill__refine_start=2, distill__checkpoint_every=0)
    _, _, dimo = _run(tmp_path, teacher_cache, "dimo", relaxation="hard", refinement="none", **common)
    spec, _, soft = _run(tmp_path, teacher_cache, "soft", **common)
    _, _, gumbel = _run(tmp_path, teacher_cache, "gumbel", relaxation="gumbel", **common)
    _, _, balanced = _run(tmp_path, teacher_cache, "balanced", distill__refine_grad_ratio=1.0, **common)
    prefixes = [r.info["student"]["prefix"] for r in (dimo, soft, gumbel, balanced)]
    assert len({p["cache_key"] for p in prefixes}) == 1
    assert [p["cache_hit"] for p in prefixes] == [False, True, True, True]
    assert soft.info["final_log"] != gumbel.info["final_log"]
    shutil.rmtree(teacher_cache / "prefixes")
    shutil.rmtree(teacher_cache / "students" / soft.info["student"]["cache_key"])
    _, _, scratch = _run(tmp_path, teacher_cache, "scratch", **common)
    assert scratch.info["student"]["prefix"]["cache_hit"] is False
    assert torch.equal(scratch.samples.all_tokens(), soft.samples.all_tokens())
    assert scratch.info["final_log"] == soft.info["final_log"]


def test_gumbel_without_refinement_reuses_the_hard_student(tmp_path: Path, teacher_cache: Path,
                                                            tiny_teacher) -> None:
    _, _, hard = _run(tmp_path, teacher_cache, "hard", relaxation="hard", refinement="none", distill__steps=3)
    _, ctx, gumbel = _run(tmp_path, teacher_cache, "gumbel", relaxation="gumbel", refinement="none",
                          distill__steps=3)
    assert hard.info["student"]["trained_as"] == gumbel.info["student"]["trained_as"] == "hard"
    assert gumbel.info["student"]["cache_hit"] and gumbel.info["student"]["cache_key"] == hard.info["student"]["cache_key"]
    assert torch.equal(hard.samples.all_tokens(), gumbel.samples.all_tokens())
    assert hard.info["final_log"] == gumbel.info["final_log"]


def test_tteo_and_best_of_n_as_sampling_options(tmp_path: Path, teacher_cache: Path, tiny_teacher) -> None:
    _, _, plain = _run(tmp_path, teacher_cache, "plain")
    _, _, bon = _run(tmp_path, teacher_cache, "bon", sample__best_of_n=3, sample__select_reward=["digits_reward"],
                     sample__tteo_steps=2, sample__tteo_reward=["digits_reward"], sample__tteo_proximity=0.1)
    assert plain.curves == {} and plain.extra_metrics == {}
    assert bon.extra_metrics["generator_evals_per_image"].value == 3 * 3
    assert bon.extra_metrics["sample_seconds_per_image"].value > 0
    cost = bon.info["test_time"]["per_image"]
    assert cost["generator_backwards"] == 3 * 2 and cost["reward_calls"] == 3 * 2 + 3
    assert not torch.equal(plain.samples.all_tokens(), bon.samples.all_tokens())


# A best-of-N cell writes selection.npz beside its record, listed in it: per image the candidate
# kept, its digits_reward score (whose mean is the run's digits_reward metric) and its combined
# score (zscore of one reward: the best of a standardised set, so >= 0).
def test_a_best_of_n_run_records_its_selection(tmp_path: Path, teacher_cache: Path, tiny_teacher,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOFTDIMO_CACHE", str(teacher_cache))
    spec = resolve_cell(_cell(relaxation="hard", distill__steps=3, eval__samples=20, eval__grid_images=4,
                              eval__metrics=["digits_reward"], sample__best_of_n=3,
                              sample__select_reward=["digits_reward"], sample__select_combine="zscore"), "mini")
    assert cell.execute(spec.to_json(), "bon", str(tmp_path)) == "ok"
    record = store.read_record(store.record_path(tmp_path, "bon", spec.run_id))
    assert record["samples"]["selection"] == store.SELECTION_FILE
    assert record["spec"]["params"]["sample.select_combine"] == "zscore"
    assert record["info"]["test_time"]["select_combine"] == "zscore"
    with np.load(store.run_dir(tmp_path, "bon", spec.run_id) / store.SELECTION_FILE) as selection:
        assert sorted(selection) == ["combined", "digits_reward", "index", "rewards"]
        assert selection["rewards"].tolist() == ["digits_reward"]
        assert selection["index"].shape == (20,) and set(selection["index"].tolist()) <= {0, 1, 2}
        assert (selection["combined"] >= 0).all()
        assert selection["digits_reward"].mean() == pytest.approx(record["metrics"]["digits_reward"]["value"],
                                                                  rel=1e-5)


def test_selection_logs_of_two_processes_merge_into_the_one_process_log() -> None:
    # 3 sampling batches (the last one short): batches 0 and 2 are process 0's, batch 1 process 1's.
    n = 2 * SAMPLE_BATCH + 7
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.randn(4, n, generator=g), "b": torch.randn(4, n, generator=g)}
    combined = scores["a"] + scores["b"]
    index = combined.argmax(0)
    batches = [range(s, min(n, s + SAMPLE_BATCH)) for s in range(0, n, SAMPLE_BATCH)]

    def log_of(ranges: list[range]) -> SelectionLog:
        log = SelectionLog()
        for r in ranges:
            sl = slice(r.start, r.stop)
            log.add(index[sl], {k: v[:, sl] for k, v in scores.items()}, combined[:, sl])
        return log

    one = log_of(batches).tensors()
    merged = merged_selection([log_of(batches[0::2]), log_of(batches[1::2])], n).tensors()
    assert merged.keys() == one.keys() == {"index", "combined", "a", "b"}
    for key in one:
        assert torch.equal(merged[key], one[key]), key
    assert merged_selection([log_of(batches)], n).tensors()["index"].shape == (n,)

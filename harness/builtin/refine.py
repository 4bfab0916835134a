"""Built-in refinements (`gan`, `reward`, `reinforce`) and the mini-scale reward model.

A refinement's `build(config, teacher, ctx, seed)` returns a `softdimo.train.Refinement`; its
`check(config, teacher_name)` runs at grid validation, before anything is launched.
"""
from __future__ import annotations

from typing import Any

from harness.contracts import registry
from harness.contracts.entries import RefinementEntry, RewardEntry
from harness.grid.spec import CellError, check_reward_names
from harness.methods.metrics import digits_reward
from harness.methods.students import build_rewards
from softdimo.refine.gan import GANConfig, GANRefinement
from softdimo.refine.reinforce import ReinforceConfig, ReinforceRefinement
from softdimo.refine.reward import RewardConfig, RewardConfigError, RewardRefinement, reward_weights

#----------------------------------------------------------------------------


def _check_reward_stage(stage: str) -> Any:
    def check(config: Any, teacher: str) -> None:
        try:
            reward_weights(config.models, config.weights, stage)
        except RewardConfigError as e:
            raise CellError(e.key, e.message) from None
        check_reward_names(f"{stage}.models", config.models, teacher)
    return check


def _check_gan(config: GANConfig, teacher: str) -> None:
    if config.mask_min > config.mask_max:
        raise CellError("gan.mask_min", f"{config.mask_min} exceeds gan.mask_max = {config.mask_max}; "
                        f"r_GAN is drawn from U[mask_min, mask_max]")
    bad = [i for i in config.layers if isinstance(i, bool) or not isinstance(i, int)]
    if bad:
        raise CellError("gan.layers", f"{bad[0]!r} is not a block index; allowed: integers (negative = "
                        f"from the last block), or an empty list for three evenly spaced blocks")


registry.refinements.register("gan", RefinementEntry(
    "gan", "gan", GANConfig, needs_gradient=True,
    build=lambda config, teacher, ctx, seed: GANRefinement(config, teacher, seed, ctx.device),
    check=_check_gan,
    description=("GAN refinement: discriminator heads on frozen teacher features vs real tokens "
                 "(docs/refinements.md)")))
registry.refinements.register("reward", RefinementEntry(
    "reward", "reward", RewardConfig, needs_gradient=True,
    build=lambda config, teacher, ctx, seed: RewardRefinement(config, teacher,
                                                              build_rewards(config.models, teacher, ctx)),
    check=_check_reward_stage("reward"),
    description="differentiable reward fine-tuning through decode_soft (docs/refinements.md)"))
registry.refinements.register("reinforce", RefinementEntry(
    "reinforce", "reinforce", ReinforceConfig, needs_gradient=False,
    build=lambda config, teacher, ctx, seed: ReinforceRefinement(config, teacher,
                                                                 build_rewards(config.models, teacher, ctx)),
    check=_check_reward_stage("reinforce"),
    description="score-function (REINFORCE) reward fine-tuning with a baseline; works with hard tokens"))

#----------------------------------------------------------------------------
# Mini scale: the digits reward model (HPS analogue) and its metric.

registry.rewards.register("digits_reward", RewardEntry(
    "digits_reward", digits_reward.build_reward, applies_to=("digits",),
    description="log p(label | image) under digits-reward-v1 (independent of every evaluation network)"))
registry.metrics.register("digits_reward", digits_reward.reward_metric(
    "digits_reward", "reward", applies_to=("digits",), reward="digits_reward",
    description="mean digits-reward-v1 log p(label | image) of the samples (the reward being optimised)"))
registry.metrics.register("digits_reward_heldout", digits_reward.reward_metric(
    "digits_reward_heldout", "reward_heldout", applies_to=("digits",),
    description="mean log p(label | image) under digits-reward-heldout-v1 (another seed; independent of the "
                "digits_reward reward)"))

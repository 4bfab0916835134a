"""Shared fixtures: tiny digits and glyphs teachers trained once per test session in a temporary cache."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.builtin import plugins
from softdimo.teachers.digits import DigitsConfig, DigitsTeacher, build_digits_teacher
from softdimo.teachers.glyphs import GlyphsConfig, GlyphsTeacher, build_glyphs_teacher

plugins.load_builtins()          # the registries, as every entry point fills them

TINY_TEACHER = DigitsConfig(levels=4, d_model=16, layers=1, heads=2, train_steps=30, batch_size=32,
                            warmup_steps=5)
TINY_GLYPHS = GlyphsConfig(codebook_size=16, latent_dim=4, tokenizer_channels=8, tokenizer_steps=20, d_model=16,
                           layers=1, heads=2, train_steps=20, batch_size=16, warmup_steps=5)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def teacher_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_teacher(teacher_cache: Path) -> DigitsTeacher:
    torch.set_num_threads(1)
    return build_digits_teacher(TINY_TEACHER, teacher_cache)


@pytest.fixture(scope="session")
def tiny_glyphs(teacher_cache: Path) -> GlyphsTeacher:
    torch.set_num_threads(1)
    return build_glyphs_teacher(TINY_GLYPHS, teacher_cache)


from tests.slurm_cluster import slurm_cluster  # noqa: E402,F401  (session fixture for tests marked `slurm`)

"""Registries: unknown names suggest the closest valid one; duplicates are refused."""
from __future__ import annotations

import io

import pytest

from harness import run
from harness.builtin import plugins
from harness.contracts import registry
from harness.contracts.registry import Registry, UnknownNameError
from harness.launch import executors
from harness.store import baselines
from softdimo.config import DistillConfig


def test_unknown_name_lists_valid_names_and_closest():
    reg: Registry = Registry("relaxation")
    for name in ("hard", "gumbel", "soft"):
        reg.register(name, object())
    with pytest.raises(UnknownNameError) as e:
        reg.get("sotf")
    assert str(e.value) == "unknown relaxation 'sotf' (did you mean 'soft'?); allowed: gumbel, hard, soft"
    with pytest.raises(UnknownNameError) as e2:
        reg.get("xyz")
    assert "did you mean" not in str(e2.value) and "allowed: gumbel, hard, soft" in str(e2.value)


def test_duplicates_refused_same_object_idempotent():
    reg: Registry = Registry("metric")
    a, b = object(), object()
    reg.register("fid", a)
    reg.register("fid", a)                      # re-importing a module registers the same object
    with pytest.raises(ValueError, match="metric 'fid' is already registered"):
        reg.register("fid", b)
    assert reg.get("fid") is a and reg.names() == ["fid"]


def test_decorator_and_name_rules():
    reg: Registry = Registry("teacher")

    @reg.register("tiny")
    def build() -> None:
        return None

    assert reg.get("tiny") is build
    with pytest.raises(ValueError, match="must be letters, digits"):
        reg.register("has space", object())


def test_plugin_registers_into_every_axis():
    # tests/plugins/toy_lab.py was imported as a plugin module: its entries are registered.
    assert "toy" in registry.teachers and "toy_student" in registry.methods
    assert {"toy_hard", "toy_soft"} <= set(registry.relaxations.names())
    assert "toy_sharpen" in registry.refinements and "toy_fidelity" in registry.metrics
    assert {"debug", "local", "slurm"} <= set(executors.registered.names())
    assert {"papers", "mini_reference"} <= set(baselines.registered.names())
    with pytest.raises(ImportError, match="plugin module 'no_such_module' could not be imported"):
        plugins.load_module("no_such_module")


@pytest.mark.parametrize("axis,expected", [
    ("teachers", "toy "), ("methods", "toy_sampler"), ("relaxations", "toy_soft"),
    ("refinements", "toy_sharpen"), ("metrics", "toy_fidelity"), ("executors", "local"),
    ("baselines", "papers"), ("params", "distill.steps")])
def test_list_axis(axis, expected):
    out = io.StringIO()
    assert run.main(["--list", axis], out, io.StringIO()) == 0
    assert expected in out.getvalue()


def test_list_params_shows_type_default_allowed_help():
    out = io.StringIO()
    run.main(["--list", "params"], out, io.StringIO())
    line = next(ln for ln in out.getvalue().splitlines() if "distill.r_init" in ln)
    assert line.split()[:4] == ["distill.r_init", "float", "default", str(DistillConfig().r_init)]
    assert "a number in [0.0, 1.0]" in line and "fraction of x_init masked" in line
    assert "teacher.* (teacher 'toy')" in out.getvalue()
    assert "toyref.strength" in out.getvalue()


def test_unknown_executor_exit_2(write_grid, tmp_path):
    path = write_grid("name: g\nplugins: [toy_lab]\n"
                      "matrix: {teacher: [toy], method: [toy_sampler], seed: [0]}\n")
    err = io.StringIO()
    rc = run.main(["--grid", str(path), "--executor", "lcoal", "--results", str(tmp_path / "r")],
                  io.StringIO(), err)
    assert rc == 2 and "unknown executor 'lcoal' (did you mean 'local'?)" in err.getvalue()
    assert not (tmp_path / "r").exists()

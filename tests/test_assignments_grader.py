"""The grader's own pieces: reference detection and the feedback filter."""

import pathlib
import sys

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from grader.guards import (  # noqa: E402
    ReferenceUsed, bn_train_cache, forbid_reference, trusted_a1_helpers, trusted_batchnorm_function)
from grader.preprocessors import HideHiddenTests  # noqa: E402


def test_reference_caught_through_an_import_alias_and_a_closure():
    from bnref.functional import batchnorm_forward as bn  # what a student binds at import
    hidden_away = [bn]
    x = np.random.default_rng(0).normal(size=(4, 3))
    for call in (lambda: bn(x, np.ones(3), np.zeros(3), {"mode": "train"}),
                 lambda: hidden_away[0](x, np.ones(3), np.zeros(3), {"mode": "train"})):
        with pytest.raises(ReferenceUsed, match="batchnorm_forward"):
            with forbid_reference("bnref"):
                call()


@pytest.mark.parametrize("call", [
    lambda t: F.batch_norm(t, None, None, training=True),
    lambda t: torch.batch_norm(t, None, None, None, None, True, 0.1, 1e-5, False),
    lambda t: torch.nn.BatchNorm2d(t.shape[1])(t),
])
def test_torch_batch_norm_caught(call):
    with pytest.raises(ReferenceUsed):
        with forbid_reference("torch_bn"):
            call(torch.randn(4, 3, 2, 2))


def test_autograd_caught_and_plain_code_allowed():
    t = torch.randn(5, requires_grad=True)
    with pytest.raises(ReferenceUsed, match="autograd"):
        with forbid_reference("autograd"):
            torch.autograd.grad((t ** 2).sum(), t)
    with forbid_reference("autograd", "torch_bn", "bnref"):
        out = (t.detach() - t.detach().mean()) / t.detach().std()
    assert torch.allclose(out.mean(), torch.tensor(0.0), atol=1e-6)


def test_stand_ins_are_correct_allowed_and_removed_afterwards():
    from bnref.functional import batchnorm_backward, batchnorm_forward
    ns = {"batchnorm_forward": "student's"}
    x = np.random.default_rng(1).normal(size=(6, 4))
    gamma, dout = np.random.default_rng(2).normal(size=4), np.random.default_rng(3).normal(size=(6, 4))
    with forbid_reference("bnref", namespace=ns, replace=trusted_a1_helpers()):
        out, _ = ns["batchnorm_forward"](x, gamma, np.zeros(4), {"mode": "train"})
        dx, _, _ = ns["batchnorm_backward"](dout, bn_train_cache(x, gamma, 1e-5))
    assert ns == {"batchnorm_forward": "student's"}
    ref_out, ref_cache = batchnorm_forward(x, gamma, np.zeros(4), {"mode": "train"})
    assert np.allclose(out, ref_out) and np.allclose(dx, batchnorm_backward(dout, ref_cache)[0])


def test_trusted_function_matches_autograd():
    fn = trusted_batchnorm_function()
    x = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    w = torch.rand(2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: fn.apply(*a, 1e-5), (x, w, b))
    assert torch.allclose(fn.apply(x, w, b, 1e-5), F.batch_norm(x, None, None, w, b, training=True))


def test_feedback_filter_drops_hidden_code_and_tracebacks():
    cell = nbformat.v4.new_code_cell(
        "visible()\n### BEGIN HIDDEN TESTS\nassert secret_check()\n### END HIDDEN TESTS\n")
    cell.outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue="dx is wrong",
                                           traceback=["  assert secret_check()", "AssertionError: dx is wrong"])]
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb, _ = HideHiddenTests().preprocess(nb, {})
    text = nbformat.writes(nb)
    assert "secret_check" not in text and "visible()" in text and "dx is wrong" in text


@pytest.mark.parametrize("call", [
    lambda t: F.layer_norm(t, t.shape[1:]),
    lambda t: F.group_norm(t, 1),
    lambda t: F.instance_norm(t),
    lambda t: torch.nn.LayerNorm(t.shape[1:])(t),
    lambda t: torch.nn.GroupNorm(1, t.shape[1])(t),
])
def test_library_normalization_routines_count_as_the_reference(call):
    with pytest.raises(ReferenceUsed, match="normalization routines"):
        with forbid_reference("torch_bn"):
            call(torch.randn(4, 3, 2, 2))


def test_torch_forbidden_in_numpy_parts_numpy_allowed():
    x = np.random.default_rng(4).normal(size=(5, 3))
    with pytest.raises(ReferenceUsed, match="any torch function"):
        with forbid_reference("torch"):
            torch.tensor(x).mean(0)
    with forbid_reference("torch", "torch_bn", "bnref"):
        out = (x - x.mean(0)) / x.std(0)
    assert np.allclose(out.mean(0), 0.0)


def test_grading_seed_fresh_per_grading_and_fixed_by_the_environment(monkeypatch, capsys):
    import grader.hidden as hidden

    monkeypatch.delenv("GRADER_SEED", raising=False)
    env_a, env_b = {}, {}
    assert hidden.ensure_grading_seed(env_a) != hidden.ensure_grading_seed(env_b)  # 48 random bits each
    assert hidden.ensure_grading_seed({"GRADER_SEED": "17"}) == "17"
    monkeypatch.setenv("GRADER_SEED", "8319427514")
    first = hidden.numpy_rng("bn_backward").normal(size=5)
    again = hidden.numpy_rng("bn_backward").normal(size=5)
    other = hidden.numpy_rng("bn_forward_train").normal(size=5)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert torch.equal(torch.randn(3, generator=hidden.torch_generator("fold_conv_bn")),
                       torch.randn(3, generator=hidden.torch_generator("fold_conv_bn")))
    assert "hidden tests of bn_backward: seed 8319427514 (regrade with GRADER_SEED=8319427514)" in capsys.readouterr().out
    # The notebook's own seeding does not reach the hidden tests' generators.
    torch.manual_seed(0)
    np.random.seed(0)
    assert np.array_equal(hidden.numpy_rng("bn_backward").normal(size=5), first)
    monkeypatch.setenv("GRADER_SEED", "abc")
    with pytest.raises(ValueError, match="GRADER_SEED must be a non-negative integer, got 'abc'"):
        hidden.grading_seed()


def test_kernels_only_catches_torch_arithmetic_and_allows_allocation():
    from grader.guards import ArithmeticOutsideKernels, kernels_only, trusted_bn_stats

    x = torch.randn(6, 3)
    with kernels_only():
        out = torch.empty_like(x)
        n, c = x.shape
        mean, var = trusted_bn_stats(x)  # the grader's stand-ins may compute
    assert out.shape == (n, c) and torch.allclose(mean, x.mean(0))
    for wrapper in (lambda: x.mean(dim=0), lambda: x - 1.0, lambda: torch.sqrt(x.abs()), lambda: x.sum()):
        with pytest.raises(ArithmeticOutsideKernels, match="must run inside @triton.jit kernels"):
            with kernels_only():
                wrapper()

"""bnref.functional against PyTorch, numerical gradients and hand computations (float64)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from bnref import functional as bnf
from bnref.gradcheck import rel_error
from conftest import (FAST, groupnorm_cases, nchw_shapes, numerical_grads, random_inputs,
                      rows_shapes, seeds, torch_reference)

TOL = 1e-10


def assert_close(actual, expected, tol=TOL):
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


def assert_matches_torch(ours, reference):
    for name, a, b in zip(["out", "dx", "dgamma", "dbeta"], ours, reference):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL, err_msg=name)


# --- against PyTorch ---------------------------------------------------------

@FAST
@given(shape=rows_shapes(), seed=seeds)
def test_batchnorm_train_matches_torch(shape, seed):
    """Train-mode forward and both backward passes equal F.batch_norm(training=True)."""
    x, gamma, beta, dout = random_inputs(shape, shape[1:], seed)
    ref = torch_reference(lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True),
                          x, gamma, beta, dout)
    out, cache = bnf.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    assert_matches_torch((out, *bnf.batchnorm_backward(dout, cache)), ref)
    assert_matches_torch((out, *bnf.batchnorm_backward_alt(dout, cache)), ref)


@FAST
@given(shape=rows_shapes(min_n=1), seed=seeds)
def test_batchnorm_test_mode_matches_torch(shape, seed):
    """Test mode equals F.batch_norm(training=False) with the same running statistics."""
    x, gamma, beta, dout = random_inputs(shape, shape[1:], seed)
    rng = np.random.default_rng(seed + 1)
    running_mean, running_var = rng.normal(size=shape[1]), rng.uniform(0.2, 3.0, size=shape[1])
    ref = torch_reference(
        lambda x, g, b: F.batch_norm(x, torch.tensor(running_mean), torch.tensor(running_var),
                                     g, b, training=False), x, gamma, beta, dout)
    bn_param = {"mode": "test", "running_mean": running_mean.copy(),
                "running_var": running_var.copy()}
    out, cache = bnf.batchnorm_forward(x, gamma, beta, bn_param)
    assert_matches_torch((out, *bnf.batchnorm_backward(dout, cache)), ref)
    assert_matches_torch((out, *bnf.batchnorm_backward_alt(dout, cache)), ref)


@FAST
@given(shape=nchw_shapes(), seed=seeds, training=st.booleans())
def test_spatial_batchnorm_matches_torch(shape, seed, training):
    """Spatial BN (train and test mode) equals F.batch_norm on (N, C, H, W)."""
    C = shape[1]
    x, gamma, beta, dout = random_inputs(shape, (C,), seed)
    running_mean = np.linspace(-1, 1, C)
    running_var = np.linspace(0.5, 2, C)
    ref = torch_reference(
        lambda x, g, b: F.batch_norm(x, torch.tensor(running_mean), torch.tensor(running_var),
                                     g, b, training=training), x, gamma, beta, dout)
    bn_param = {"mode": "train" if training else "test", "running_mean": running_mean.copy(),
                "running_var": running_var.copy()}
    out, cache = bnf.spatial_batchnorm_forward(x, gamma, beta, bn_param)
    assert_matches_torch((out, *bnf.spatial_batchnorm_backward(dout, cache)), ref)


@FAST
@given(shape=rows_shapes(min_n=1), seed=seeds)
def test_layernorm_matches_torch(shape, seed):
    """Layer norm forward and backward equal F.layer_norm over the last dimension."""
    x, gamma, beta, dout = random_inputs(shape, shape[1:], seed)
    ref = torch_reference(lambda x, g, b: F.layer_norm(x, (shape[1],), g, b, eps=1e-5),
                          x, gamma, beta, dout)
    out, cache = bnf.layernorm_forward(x, gamma, beta, {})
    assert_matches_torch((out, *bnf.layernorm_backward(dout, cache)), ref)


@FAST
@given(case=groupnorm_cases(), seed=seeds)
def test_groupnorm_matches_torch(case, seed):
    """Group norm forward and backward equal F.group_norm (gamma, beta as (1, C, 1, 1))."""
    shape, G = case
    C = shape[1]
    x, gamma, beta, dout = random_inputs(shape, (1, C, 1, 1), seed)
    ref = torch_reference(
        lambda x, g, b: F.group_norm(x, G, g.reshape(C), b.reshape(C), eps=1e-5),
        x, gamma, beta, dout)
    out, cache = bnf.spatial_groupnorm_forward(x, gamma, beta, G, {})
    assert_matches_torch((out, *bnf.spatial_groupnorm_backward(dout, cache)), ref)


@FAST
@given(shape=rows_shapes(), seed=seeds)
def test_backward_alt_equals_backward(shape, seed):
    """The closed form and the staged graph give the same gradients."""
    x, gamma, beta, dout = random_inputs(shape, shape[1:], seed)
    _, cache = bnf.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    for staged, closed in zip(bnf.batchnorm_backward(dout, cache),
                              bnf.batchnorm_backward_alt(dout, cache)):
        # An absolute floor, not rel_error: with N=2, dx is O(eps / var) and
        # made of cancelling terms, so its relative error is ill-conditioned.
        np.testing.assert_allclose(closed, staged, rtol=1e-9, atol=1e-12)


# --- numerical gradients -----------------------------------------------------

def _bn_train(x, gamma, beta):
    # A fresh bn_param per call: the running statistics must not leak between calls.
    return bnf.batchnorm_forward(x, gamma, beta, {"mode": "train"})[0]


def _check_numerically(forward, backward, x, gamma, beta, dout):
    _, cache = forward(x, gamma, beta)
    analytic = backward(dout, cache)
    numeric = numerical_grads(lambda *a: forward(*a)[0], x, gamma, beta, dout)
    for name, a, n in zip(["dx", "dgamma", "dbeta"], analytic, numeric):
        assert rel_error(a, n) < 1e-7, name


@pytest.mark.parametrize("backward", [bnf.batchnorm_backward, bnf.batchnorm_backward_alt])
@pytest.mark.parametrize("mode", ["train", "test"])
def test_batchnorm_numerical_gradient(backward, mode):
    x, gamma, beta, dout = random_inputs((6, 4), (4,), seed=1)
    running = {"running_mean": np.array([0.5, -1, 2, 0]), "running_var": np.array([1, 2, .5, 3.])}

    def forward(x, gamma, beta):
        return bnf.batchnorm_forward(x, gamma, beta, {"mode": mode, **{
            k: v.copy() for k, v in running.items()}})
    _check_numerically(forward, backward, x, gamma, beta, dout)


def test_spatial_batchnorm_numerical_gradient():
    x, gamma, beta, dout = random_inputs((3, 2, 3, 2), (2,), seed=2)
    _check_numerically(lambda *a: bnf.spatial_batchnorm_forward(*a, {"mode": "train"}),
                       bnf.spatial_batchnorm_backward, x, gamma, beta, dout)


def test_layernorm_numerical_gradient():
    x, gamma, beta, dout = random_inputs((4, 5), (5,), seed=3)
    _check_numerically(lambda *a: bnf.layernorm_forward(*a, {}), bnf.layernorm_backward,
                       x, gamma, beta, dout)


def test_groupnorm_numerical_gradient():
    x, gamma, beta, dout = random_inputs((2, 6, 2, 3), (1, 6, 1, 1), seed=4)
    _check_numerically(lambda x, g, b: bnf.spatial_groupnorm_forward(x, g, b, 3, {}),
                       bnf.spatial_groupnorm_backward, x, gamma, beta, dout)


# --- running statistics --------------------------------------------------------

def test_running_statistics_are_an_ewa_and_test_mode_uses_them():
    """After several train steps the buffers equal an EWA computed by hand, in place."""
    rng = np.random.default_rng(5)
    D, momentum, eps = 3, 0.8, 1e-3
    gamma, beta = rng.normal(size=D), rng.normal(size=D)
    bn_param = {"mode": "train", "momentum": momentum, "eps": eps}
    expected_mean, expected_var = np.zeros(D), np.ones(D)
    for step in range(5):
        x = rng.normal(loc=step, scale=1 + step, size=(7, D))
        bnf.batchnorm_forward(x, gamma, beta, bn_param)
        for d in range(D):
            column = list(x[:, d])
            mu = sum(column) / len(column)
            var = sum((v - mu) ** 2 for v in column) / len(column)  # biased
            expected_mean[d] = momentum * expected_mean[d] + (1 - momentum) * mu
            expected_var[d] = momentum * expected_var[d] + (1 - momentum) * var
    assert_close(bn_param["running_mean"], expected_mean)
    assert_close(bn_param["running_var"], expected_var)

    running_mean_before = bn_param["running_mean"]
    bn_param["mode"] = "test"
    x = rng.normal(size=(4, D))
    out, _ = bnf.batchnorm_forward(x, gamma, beta, bn_param)
    for n in range(4):
        for d in range(D):
            hand = gamma[d] * (x[n, d] - expected_mean[d]) / np.sqrt(expected_var[d] + eps) + beta[d]
            assert abs(out[n, d] - hand) < TOL
    assert bn_param["running_mean"] is running_mean_before  # updated in place, not replaced
    assert_close(bn_param["running_mean"], expected_mean)   # test mode leaves it alone


def test_default_momentum_and_buffers():
    """Missing buffers start at zeros/ones; default momentum is 0.9."""
    x = np.array([[1.0, 4.0], [3.0, 8.0]])
    bn_param = {"mode": "train"}
    bnf.batchnorm_forward(x, np.ones(2), np.zeros(2), bn_param)
    assert_close(bn_param["running_mean"], 0.1 * np.array([2.0, 6.0]))
    assert_close(bn_param["running_var"], 0.9 + 0.1 * np.array([1.0, 4.0]))


# --- numerical robustness ------------------------------------------------------

def _standardized_moments(out, axis):
    out = out.astype(np.float64)
    return np.abs(out.mean(axis=axis)).max(), np.abs(out.std(axis=axis) - 1).max()


@pytest.mark.parametrize("norm", ["batch", "spatial", "layer", "group"])
def test_large_mean_float32_is_stable(norm):
    """float32 data with mean 1e4 and std 1 normalizes to mean 0, std 1 within 1e-3."""
    rng = np.random.default_rng(6)
    if norm in ("batch", "layer"):
        x = (1e4 + rng.normal(size=(256, 64))).astype(np.float32)
        D = 64
        ones, zeros = np.ones(D, np.float32), np.zeros(D, np.float32)
    else:
        x = (1e4 + rng.normal(size=(16, 8, 8, 8))).astype(np.float32)
        shape = (8,) if norm == "spatial" else (1, 8, 1, 1)
        ones, zeros = np.ones(shape, np.float32), np.zeros(shape, np.float32)
    if norm == "batch":
        out, _ = bnf.batchnorm_forward(x, ones, zeros, {"mode": "train"})
        moments = _standardized_moments(out, 0)
    elif norm == "spatial":
        out, _ = bnf.spatial_batchnorm_forward(x, ones, zeros, {"mode": "train"})
        moments = _standardized_moments(out, (0, 2, 3))
    elif norm == "layer":
        out, _ = bnf.layernorm_forward(x, ones, zeros, {})
        moments = _standardized_moments(out, 1)
    else:
        out, _ = bnf.spatial_groupnorm_forward(x, ones, zeros, 2, {})
        moments = _standardized_moments(out.reshape(16 * 2, -1), 1)
    assert out.dtype == np.float32
    assert moments[0] < 1e-3 and moments[1] < 1e-3, moments


def test_nan_propagates():
    """A NaN poisons exactly the statistics it enters, and never becomes a number."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5, 3))
    x[2, 1] = np.nan
    bn_param = {"mode": "train"}
    out, _ = bnf.batchnorm_forward(x, np.ones(3), np.zeros(3), bn_param)
    assert np.isnan(out[:, 1]).all() and np.isfinite(out[:, [0, 2]]).all()
    assert np.isnan(bn_param["running_mean"][1]) and np.isnan(bn_param["running_var"][1])
    out, _ = bnf.layernorm_forward(x, np.ones(3), np.zeros(3), {})
    assert np.isnan(out[2]).all() and np.isfinite(np.delete(out, 2, axis=0)).all()
    x4 = rng.normal(size=(2, 4, 2, 2))
    x4[1, 3, 0, 0] = np.nan
    out, _ = bnf.spatial_groupnorm_forward(x4, np.ones((1, 4, 1, 1)), np.zeros((1, 4, 1, 1)), 2, {})
    assert np.isnan(out[1, 2:]).all() and np.isfinite(out[0]).all() and np.isfinite(out[1, :2]).all()


def test_numpy_scalar_hyperparameters_are_numbers():
    """eps and momentum may be NumPy scalars (e.g. read from a float32 config)."""
    x, gamma, beta, _ = random_inputs((5, 3), (3,), seed=8)
    plain = {"mode": "train", "eps": 1e-3, "momentum": 0.5}
    numpy_scalars = {"mode": "train", "eps": np.float32(1e-3), "momentum": np.float64(0.5)}
    out_plain, _ = bnf.batchnorm_forward(x, gamma, beta, plain)
    out_numpy, _ = bnf.batchnorm_forward(x, gamma, beta, numpy_scalars)
    assert_close(out_numpy, out_plain, tol=1e-9)  # float32(1e-3) differs from 1e-3 by ~1e-11
    assert_close(numpy_scalars["running_var"], plain["running_var"])

"""The helpers that chapters 1 and 2 add to bnref.experiments and bnref.plotting.

Each is checked against an independent computation: the closed-form
gradient-descent recurrence, an eigenvalue analysis, torch's own layers.
"""

import numpy as np
import pytest
import torch
from torch import nn

from bnref.experiments import (gd_least_squares, init_weights_, largest_stable_lr,
                               layer_activations, make_mlp)


def _problem(seed=0, N=50, scales=(1.0, 7.0)):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, 2)) * np.asarray(scales) + 1.0
    y = X @ np.array([2.0, -1.0]) + 0.1 * rng.standard_normal(N)
    return X, y


def test_gd_matches_the_closed_form_recurrence():
    """Full-batch GD equals w_t - w* = (I - lr H)^t (w_0 - w*) with H = X^T X / N."""
    X, y = _problem()
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]
    H = X.T @ X / len(X)
    lr, steps = 0.5 * largest_stable_lr(X), 40
    w0 = np.array([3.0, 4.0])
    path = gd_least_squares(X, y, lr, steps, w0=w0)
    assert path.shape == (steps + 1, 2)
    expected = w_star + np.linalg.matrix_power(np.eye(2) - lr * H, steps) @ (w0 - w_star)
    np.testing.assert_allclose(path[-1], expected, rtol=1e-9, atol=1e-9)


def test_largest_stable_lr_separates_convergence_from_divergence():
    """GD converges just below 2 / lambda_max and diverges just above it."""
    X, y = _problem()
    lr_max = largest_stable_lr(X)
    assert lr_max == pytest.approx(2 / np.linalg.svd(X / np.sqrt(len(X)), compute_uv=False)[0] ** 2)
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]
    below = gd_least_squares(X, y, 0.98 * lr_max, 3000)[-1]
    above = gd_least_squares(X, y, 1.02 * lr_max, 3000)[-1]
    np.testing.assert_allclose(below, w_star, atol=1e-6)
    assert not np.all(np.isfinite(above)) or np.linalg.norm(above - w_star) > 1e6


def test_sgd_with_batch_size_one_uses_single_examples():
    """With batch_size=1 every update is a multiple of one input row (the zig-zag argument)."""
    X, y = _problem()
    X = np.abs(X)                                  # all-positive inputs
    path = gd_least_squares(X, y, 0.01, 100, batch_size=1, seed=3)
    updates = np.diff(path, axis=0)
    assert np.all(np.sign(updates[:, 0]) * np.sign(updates[:, 1]) >= 0)


def test_gd_rejects_bad_shapes_and_batch_sizes():
    X, y = _problem()
    with pytest.raises(ValueError, match="X must be"):
        gd_least_squares(X[:, 0], y, 0.1, 1)
    with pytest.raises(ValueError, match="batch_size"):
        gd_least_squares(X, y, 0.1, 1, batch_size=0)
    with pytest.raises(ValueError, match="X must be"):
        largest_stable_lr(X[:, 0])


@pytest.mark.parametrize("scheme, std_of_fan_in", [
    ("small", lambda n: 0.01), ("large", lambda n: 1.0),
    ("xavier", lambda n: n ** -0.5), ("he", lambda n: (2 / n) ** 0.5)])
def test_init_weights_draws_the_documented_scale(scheme, std_of_fan_in):
    model = make_mlp([400, 300, 10])
    init_weights_(model, scheme, seed=0)
    for layer in (model[0], model[2]):
        assert layer.weight.std().item() == pytest.approx(std_of_fan_in(layer.in_features), rel=0.03)
        assert layer.weight.mean().abs().item() < 0.05 * std_of_fan_in(layer.in_features)
        assert torch.count_nonzero(layer.bias) == 0


def test_init_weights_rejects_unknown_scheme():
    with pytest.raises(ValueError, match="scheme must be one of"):
        init_weights_(make_mlp([4, 3, 2]), "glorot-ish")


def test_layer_activations_match_a_manual_forward_pass():
    """The captured outputs equal the activations computed layer by layer with torch."""
    torch.manual_seed(0)
    model = make_mlp([8, 6, 5, 3], activation="tanh")
    model[3] = nn.LeakyReLU(0.1)                   # mixed activation types are all captured
    x = torch.randn(7, 8)
    acts = layer_activations(model, x)
    with torch.no_grad():
        h1 = torch.tanh(model[0](x))
        h2 = torch.nn.functional.leaky_relu(model[2](h1), 0.1)
    assert len(acts) == 2
    np.testing.assert_allclose(acts[0], h1.numpy(), rtol=1e-6)
    np.testing.assert_allclose(acts[1], h2.numpy(), rtol=1e-6)
    assert not any(m._forward_hooks for m in model.modules()), "hooks must be removed"


def test_layer_activations_needs_an_activation():
    with pytest.raises(ValueError, match="no activation module"):
        layer_activations(nn.Sequential(nn.Linear(3, 2)), torch.zeros(1, 3))


def test_plot_helpers_draw_what_they_are_given():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bnref.plotting import plot_layer_histograms, plot_least_squares_contours

    X, y = _problem()
    path = gd_least_squares(X, y, 0.5 * largest_stable_lr(X), 10)
    fig, ax = plt.subplots()
    assert plot_least_squares_contours(ax, X, y, paths=[path]) is ax
    np.testing.assert_allclose(ax.lines[0].get_xydata(), path)
    fig, axes = plt.subplots(1, 3)
    acts = [np.full(10, 1.0), np.arange(10.0), np.zeros(4)]
    assert plot_layer_histograms(axes, acts) is axes
    assert [sum(p.get_height() for p in a.patches) for a in axes] == [10, 10, 4]
    with pytest.raises(ValueError, match="axes must hold"):
        plot_layer_histograms(axes[:2], acts)
    plt.close("all")

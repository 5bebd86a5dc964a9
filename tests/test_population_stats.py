"""bnref.experiments.population_statistics_ against statistics computed directly.

The oracle is torch.var_mean over the full set of values each BN layer sees,
computed without the function under test.
"""

import copy

import pytest
import torch
from torch import nn

import bnref.nn as bnn
from bnref.experiments import make_convnet, make_mlp, population_statistics_


def _x(n=103, d=7, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * 3 + 1


@pytest.mark.parametrize("norm", [nn.BatchNorm1d, bnn.BatchNorm1d])
@pytest.mark.parametrize("batch_size", [2, 10, 32, 103, 500])
def test_first_layer_gets_the_full_set_statistics(norm, batch_size):
    """The first BN layer's input does not depend on batching: its population
    statistics are the mean and biased variance of Linear(X) over all of X."""
    torch.manual_seed(0)
    model = make_mlp([7, 5, 5, 3], norm=norm)
    X = _x()
    with torch.no_grad():
        var, mean = torch.var_mean(model[0](X).double(), dim=0, unbiased=False)
    population_statistics_(model, X, batch_size=batch_size)
    bn = model[1]
    torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-5, atol=1e-5)


def test_one_batch_matches_a_training_mode_pass_in_every_layer():
    """With the whole set in one batch, every layer's population statistics are
    those of its input in a single training-mode forward pass."""
    torch.manual_seed(1)
    model = make_mlp([7, 6, 6, 6, 3], norm=nn.BatchNorm1d)
    oracle = copy.deepcopy(model).train()
    X = _x(n=64)
    inputs = []
    hooks = [m.register_forward_pre_hook(lambda m, a: inputs.append(a[0].double()))
             for m in oracle if isinstance(m, nn.BatchNorm1d)]
    with torch.no_grad():
        oracle(X)
    for h in hooks:
        h.remove()
    population_statistics_(model, X, batch_size=64)
    bns = [m for m in model if isinstance(m, nn.BatchNorm1d)]
    assert len(bns) == len(inputs) == 3
    for bn, x in zip(bns, inputs):
        var, mean = torch.var_mean(x, dim=0, unbiased=False)
        torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", [nn.BatchNorm2d, bnn.BatchNorm2d])
def test_conv_statistics_are_per_channel_over_n_h_w(norm):
    torch.manual_seed(2)
    model = make_convnet(channels=(4, 6), norm=norm)
    X = torch.randn(37, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        var, mean = torch.var_mean(model[0](X).double(), dim=(0, 2, 3), unbiased=False)
    population_statistics_(model, X, batch_size=8)
    torch.testing.assert_close(model[1].running_mean.double(), mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model[1].running_var.double(), var, rtol=1e-5, atol=1e-5)


def test_leaves_mode_parameters_and_batch_count_alone():
    torch.manual_seed(4)
    model = make_mlp([7, 5, 3], norm=bnn.BatchNorm1d).eval()
    before = copy.deepcopy(model.state_dict())
    population_statistics_(model, _x(), batch_size=16)
    assert not model.training
    after = model.state_dict()
    for key, value in before.items():
        if key.endswith(("running_mean", "running_var")):
            assert not torch.equal(value, after[key]), key  # these are replaced
        else:
            assert torch.equal(value, after[key]), key      # weights and the batch count are not


def test_bad_arguments_raise_value_errors():
    model = make_mlp([7, 5, 3], norm=nn.BatchNorm1d)
    with pytest.raises(ValueError, match="batch_size"):
        population_statistics_(model, _x(), batch_size=1)
    with pytest.raises(ValueError, match="batch-norm layer"):
        population_statistics_(make_mlp([7, 5, 3]), _x())
    with pytest.raises(ValueError, match="X must be a tensor"):
        population_statistics_(model, _x()[:1])


@pytest.mark.parametrize("batch_size", [2, 3])
def test_correlated_values_get_the_full_set_variance_where_a_bessel_factor_fails(batch_size):
    """Each image carries its own large offset, so the N*H*W values of a channel
    in one batch are far from independent draws: averaging batch variances and
    multiplying by m/(m-1) misses over 20 % of it in some channel, while the merged
    population statistics still equal the variance over all values (oracle:
    torch.var_mean over the whole set; 37 images leave a last batch of another size)."""
    torch.manual_seed(5)
    model = make_convnet(channels=(3, 4), norm=bnn.BatchNorm2d)
    gen = torch.Generator().manual_seed(6)
    X = torch.randn(37, 1, 8, 8, generator=gen) + 20 * torch.randn(37, 1, 1, 1, generator=gen)
    with torch.no_grad():
        z = model[0](X).double()                                        # N,C,H,W
    var, mean = torch.var_mean(z, dim=(0, 2, 3), unbiased=False)
    m = batch_size * 8 * 8
    within = torch.stack([chunk.var(dim=(0, 2, 3), unbiased=False) for chunk in z.split(batch_size)])
    bessel = m / (m - 1) * within.mean(0)
    assert (bessel / var).min() < 0.8, "the data must break the i.i.d. assumption (in some channel) for this test to mean anything"
    population_statistics_(model, X, batch_size=batch_size)
    torch.testing.assert_close(model[1].running_var.double(), var, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model[1].running_mean.double(), mean, rtol=1e-5, atol=1e-5)

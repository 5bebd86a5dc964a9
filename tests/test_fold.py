"""bnref.fold: folded models equal the eval-mode originals, and the originals stay untouched."""

import copy

import pytest
import torch
from torch import nn

import bnref.nn as bnn
from bnref.experiments import make_convnet, make_mlp
from bnref.fold import fold_conv_bn, fold_linear_bn, fold_sequential

BN_KINDS = {"torch": (nn.BatchNorm1d, nn.BatchNorm2d), "bnref": (bnn.BatchNorm1d, bnn.BatchNorm2d)}


def _trained(model, input_shape, steps=5, seed=0):
    """Give every BN non-trivial running statistics and affine parameters."""
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "weight", None) is not None and hasattr(m, "running_mean"):
                m.weight.uniform_(0.5, 2.0, generator=gen)
                m.bias.normal_(0.0, 1.0, generator=gen)
        for step in range(steps):
            model(torch.randn(input_shape, generator=gen, dtype=torch.float64) * 3 + step)
    return model.eval()


def _assert_folded_equals(model, folded, x):
    bn_types = BN_KINDS["torch"] + BN_KINDS["bnref"]
    assert not any(isinstance(m, bn_types) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["torch", "bnref"])
@pytest.mark.parametrize("bias", [False, True])
def test_fold_mlp(kind, bias):
    torch.manual_seed(0)
    model = make_mlp([6, 8, 7, 3], norm=BN_KINDS[kind][0], bias=bias).double()
    _trained(model, (16, 6))
    before = copy.deepcopy(model.state_dict())
    folded = fold_sequential(model)
    assert [type(m) for m in folded] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    _assert_folded_equals(model, folded, torch.randn(10, 6, dtype=torch.float64))
    for key, value in model.state_dict().items():  # the original is not modified
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("kind", ["torch", "bnref"])
@pytest.mark.parametrize("bias", [False, True])
def test_fold_convnet(kind, bias):
    torch.manual_seed(1)
    model = make_convnet(channels=(4, 6), norm=BN_KINDS[kind][1]).double()
    if bias:  # make_convnet drops conv biases under a norm; give them back
        for i, m in enumerate(model):
            if isinstance(m, nn.Conv2d):
                model[i] = nn.Conv2d(m.in_channels, m.out_channels, 3, padding=1).double()
    _trained(model, (8, 1, 8, 8))
    folded = fold_sequential(model)
    assert sum(isinstance(m, nn.Conv2d) for m in folded) == 2
    _assert_folded_equals(model, folded, torch.randn(5, 1, 8, 8, dtype=torch.float64))


def test_fold_nested_strided_grouped_and_affine_false():
    """Nested Sequentials, stride/dilation/groups, and affine=False BN all fold."""
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4, affine=False), nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, dilation=1, groups=2), bnn.BatchNorm2d(6)),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 5), bnn.BatchNorm1d(5, affine=False),
    ).double()
    _trained(model, (6, 2, 9, 9))
    folded = fold_sequential(model)
    _assert_folded_equals(model, folded, torch.randn(3, 2, 9, 9, dtype=torch.float64))


def test_fold_pairs_directly():
    """fold_linear_bn / fold_conv_bn against the hand-written eval-mode formula."""
    torch.manual_seed(3)
    linear = nn.Linear(4, 3, bias=False).double()
    bn = _trained(nn.Sequential(nn.BatchNorm1d(3).double()), (8, 3))[0]
    folded = fold_linear_bn(linear, bn)
    assert folded is not linear and folded.bias is not None and linear.bias is None
    x = torch.randn(6, 4, dtype=torch.float64)
    z = x @ linear.weight.T
    hand = bn.weight * (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) + bn.bias
    torch.testing.assert_close(folded(x), hand, rtol=1e-10, atol=1e-10)

    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    bn2 = _trained(nn.Sequential(nn.BatchNorm2d(3).double()), (4, 3, 2, 2))[0]
    folded = fold_conv_bn(conv, bn2)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), bn2(conv(x)), rtol=1e-10, atol=1e-10)


def test_fold_keeps_float32():
    torch.manual_seed(4)
    model = _trained(make_mlp([5, 6, 2], norm=nn.BatchNorm1d).double(), (8, 5)).float()
    folded = fold_sequential(model)
    assert folded[0].weight.dtype == torch.float32
    x = torch.randn(4, 5)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)

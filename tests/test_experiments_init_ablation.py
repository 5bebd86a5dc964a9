"""bnref.experiments: initialization with a gain, sigmoid layer statistics, partial BN layers.

Oracles: PyTorch's own initializers and BatchNorm1d, autograd, and hand computation.
"""

import math

import pytest
import torch
from torch import nn

from bnref.experiments import (init_with_gain_, make_mlp, partial_batchnorm1d,
                               sigmoid_layer_statistics)


@pytest.mark.parametrize("mode,gain", [("fan_avg", 4.0), ("fan_avg", 1.0), ("fan_in", 5 / 3), ("fan_in", math.sqrt(2))])
def test_init_with_gain_matches_pytorch_initializers(mode, gain):
    """The weight std equals that of PyTorch's xavier_normal_ (fan_avg) or kaiming_normal_ (fan_in)."""
    ours = init_with_gain_(nn.Sequential(nn.Linear(400, 600)), gain, mode=mode, bias=0.25, seed=1)[0]
    ref = nn.Linear(400, 600)
    if mode == "fan_avg":
        nn.init.xavier_normal_(ref.weight, gain=gain)
    else:
        nn.init.kaiming_normal_(ref.weight, a=0, mode="fan_in", nonlinearity="linear")
        ref.weight.data *= gain
    # Both are Gaussian samples of 240 000 draws: their stds agree to well under 1 %.
    assert ours.weight.std().item() == pytest.approx(ref.weight.std().item(), rel=0.01)
    assert abs(ours.weight.mean().item()) < 0.01 * ours.weight.std().item()
    assert torch.all(ours.bias == 0.25)


def test_init_with_gain_is_seeded_and_rejects_bad_arguments():
    a = init_with_gain_(make_mlp([8, 6, 3]), 2.0, seed=3)
    b = init_with_gain_(make_mlp([8, 6, 3]), 2.0, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="mode must be"):
        init_with_gain_(make_mlp([8, 3]), 1.0, mode="fan_out")
    with pytest.raises(ValueError, match="gain must be a positive number, got -1"):
        init_with_gain_(make_mlp([8, 3]), -1)


def test_sigmoid_layer_statistics_match_a_hand_computation():
    """Pre-activation stds, slopes and weight-gradient stds, recomputed with autograd by hand."""
    torch.manual_seed(0)
    model = make_mlp([5, 7, 6, 3], activation="sigmoid")
    X, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    stats = sigmoid_layer_statistics(model, X, y)
    lin1, lin2 = model[0], model[2]
    z1 = lin1(X)
    z2 = lin2(torch.sigmoid(z1))
    loss = nn.functional.cross_entropy(model[4](torch.sigmoid(z2)), y)
    g1, g2 = torch.autograd.grad(loss, [lin1.weight, lin2.weight])
    expected = {"pre_std": [z1.std(), z2.std()],
                "slope": [(torch.sigmoid(z) * (1 - torch.sigmoid(z))).mean() for z in (z1, z2)],
                "weight_std": [lin1.weight.std(), lin2.weight.std()],
                "weight_grad_std": [g1.std(), g2.std()]}
    for key, values in expected.items():
        assert stats[key] == pytest.approx([v.item() for v in values], rel=1e-5), key
    with pytest.raises(ValueError, match="no nn.Sigmoid"):
        sigmoid_layer_statistics(make_mlp([5, 4, 3]), X, y)


def test_partial_batchnorm_with_every_part_equals_pytorch():
    """Outputs, gradients and running statistics equal torch.nn.BatchNorm1d's, in both modes."""
    torch.manual_seed(0)
    ours, ref = partial_batchnorm1d()(4), nn.BatchNorm1d(4)
    with torch.no_grad():
        for layer in (ours, ref):
            layer.weight.copy_(torch.tensor([0.5, 2.0, -1.0, 1.5]))
            layer.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
    for _ in range(3):
        x = (3 * torch.randn(16, 4) + 2).requires_grad_()
        upstream = torch.randn(16, 4)
        out_ours, out_ref = ours(x), ref(x)
        torch.testing.assert_close(out_ours, out_ref)
        (dx_ours, dw_ours) = torch.autograd.grad(out_ours, [x, ours.weight], upstream)
        (dx_ref, dw_ref) = torch.autograd.grad(out_ref, [x, ref.weight], upstream)
        torch.testing.assert_close(dx_ours, dx_ref)
        torch.testing.assert_close(dw_ours, dw_ref)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    x = torch.randn(5, 4)
    torch.testing.assert_close(ours(x), ref(x))


def test_partial_batchnorm_ablations_compute_what_they_say():
    torch.manual_seed(1)
    x = 2 * torch.randn(32, 3) + 5
    mean, var = x.mean(0), x.var(0, unbiased=False)
    mean_only = partial_batchnorm1d(scale=False)(3)
    torch.testing.assert_close(mean_only(x), x - mean)
    variance_only = partial_batchnorm1d(center=False)(3)
    torch.testing.assert_close(variance_only(x), x / torch.sqrt(var + 1e-5))
    frozen = partial_batchnorm1d(affine=False)(3)
    assert not any(p.requires_grad for p in frozen.parameters())
    torch.testing.assert_close(frozen(x), (x - mean) / torch.sqrt(var + 1e-5))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3\), got \(32, 4\)"):
        frozen(torch.randn(32, 4))

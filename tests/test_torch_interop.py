"""bnref's layers inside torch's own tools: each check runs the tool on bnref and on torch.nn.

torch finds batch norm with ``isinstance(m, torch.nn.modules.batchnorm._BatchNorm)``;
these tests show that the tools which rely on it treat bnref's layers exactly
as torch's, in float64 to 1e-10.
"""

import copy

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import bnref.nn as bnn

TOL = dict(rtol=1e-10, atol=1e-10)


def _pair(cls_ours, cls_theirs, C=3, **kwargs):
    ours = cls_ours(C, dtype=torch.float64, **kwargs)
    theirs = cls_theirs(C, dtype=torch.float64, **kwargs)
    return ours, theirs


@pytest.mark.parametrize("cls", [bnn.BatchNorm1d, bnn.BatchNorm2d])
def test_layers_are_torch_batch_norms(cls):
    assert isinstance(cls(3), _BatchNorm)


def test_update_bn_recomputes_running_stats_like_torch():
    """swa_utils.update_bn resets the buffers and averages over a loader (momentum None)."""
    gen = torch.Generator().manual_seed(0)
    loader = [torch.randn(6, 3, 4, 4, generator=gen, dtype=torch.float64) * 2 + 1
              for _ in range(4)]
    ours, theirs = _pair(bnn.BatchNorm2d, nn.BatchNorm2d, momentum=0.3)
    ours(loader[0] * 10)  # stale statistics that update_bn must discard
    theirs(loader[0] * 10)
    torch.optim.swa_utils.update_bn(loader, ours)
    torch.optim.swa_utils.update_bn(loader, theirs)
    stacked = torch.cat(loader)
    # The cumulative average of per-batch means is the mean of the equal-sized batches.
    torch.testing.assert_close(ours.running_mean, stacked.mean(dim=(0, 2, 3)), **TOL)
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, **TOL, msg=key)
    assert ours.momentum == 0.3, "update_bn must restore the layer's momentum"


def test_convert_sync_batchnorm_finds_bnref_layers():
    """convert_sync_batchnorm replaces every batch-norm layer, carrying its state over."""
    model = nn.Sequential(nn.Conv2d(2, 3, 1), bnn.BatchNorm2d(3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(12, 4), bnn.BatchNorm1d(4)).double()
    model(torch.randn(5, 2, 2, 2, dtype=torch.float64))  # non-trivial running stats
    before = copy.deepcopy(model.state_dict())
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    kinds = [type(m) for m in converted]
    assert kinds[1] is nn.SyncBatchNorm and kinds[5] is nn.SyncBatchNorm
    after = converted.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key


@pytest.mark.parametrize("with_metadata", [True, False], ids=["version-1", "plain-dict"])
def test_loads_a_checkpoint_without_num_batches_tracked(with_metadata):
    """Checkpoints from torch before 0.4.1 lack num_batches_tracked; torch fills in 0."""
    theirs = nn.BatchNorm2d(3, dtype=torch.float64)
    theirs(torch.randn(4, 3, 2, 2, dtype=torch.float64) + 2)
    old = theirs.state_dict()
    del old["num_batches_tracked"]
    if with_metadata:
        old._metadata[""]["version"] = 1  # what such a checkpoint records
    else:
        old = dict(old)
    ours, fresh = bnn.BatchNorm2d(3, dtype=torch.float64), nn.BatchNorm2d(3, dtype=torch.float64)
    ours.num_batches_tracked.fill_(7)
    fresh.num_batches_tracked.fill_(7)
    ours.load_state_dict(old)
    fresh.load_state_dict(old)
    for key, value in fresh.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    torch.testing.assert_close(ours.running_mean, theirs.running_mean, **TOL)


def test_channels_last_input_matches_torch():
    """Values, gradients and memory format of the output as torch.nn.BatchNorm2d gives them."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 5, 6, generator=gen, dtype=torch.float64)
    x = x.to(memory_format=torch.channels_last)
    dout = torch.randn(4, 3, 5, 6, generator=gen, dtype=torch.float64)
    ours, theirs = _pair(bnn.BatchNorm2d, nn.BatchNorm2d)
    grads = []
    for module in (ours, theirs):
        xi = x.detach().clone().requires_grad_(True)
        out = module(xi)
        out.backward(dout)
        grads.append((out, xi.grad, module.weight.grad, module.bias.grad))
    for mine, ref in zip(*grads):
        torch.testing.assert_close(mine, ref, **TOL)
    assert grads[0][0].is_contiguous(memory_format=torch.channels_last) == \
        grads[1][0].is_contiguous(memory_format=torch.channels_last)


def test_torch_compile_captures_the_layer_in_one_graph():
    """torch.compile with fullgraph=True: dynamo captures the autograd.Function, no graph break.

    The aot_eager backend runs dynamo and AOTAutograd (the parts that must
    understand the Function) without inductor's C++ code generation, which
    takes about a minute on two cores for the same model.
    """
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), bnn.BatchNorm2d(4), nn.ReLU()).double()
    reference = copy.deepcopy(model)
    try:
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        x = torch.randn(6, 3, 6, 6, dtype=torch.float64)
        out = compiled(x)
    except RuntimeError as error:  # e.g. a torch build without dynamo support
        pytest.skip(f"torch.compile does not run on this machine: {error}")
    out.sum().backward()
    ref = reference(x)
    ref.sum().backward()
    torch.testing.assert_close(out, ref, **TOL)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, **TOL, msg=name)
    torch.testing.assert_close(model[1].running_var, reference[1].running_var, **TOL)


def test_triton_double_backward_is_refused():
    """bnref.triton's backward runs kernels autograd cannot see: once_differentiable says so."""
    triton_bn = pytest.importorskip("bnref.triton", reason="triton is not installed")
    if triton_bn.MODE == "unavailable":
        pytest.skip(f"bnref.triton cannot run here: {triton_bn.WHY}")
    device = "cuda" if triton_bn.MODE == "gpu" else "cpu"
    x = torch.randn(8, 3, device=device, requires_grad=True)
    out = triton_bn.BatchNorm2d(3).to(device)(x)
    (dx,) = torch.autograd.grad((out ** 3).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        dx.sum().backward()

"""bnref.distributed: synchronized BN statistics across gloo CPU processes.

The oracle is NumPy on the whole, unsplit batch. Each run_demo call starts
real processes (about 3 s), so the runs are shared through module fixtures.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnref.distributed import local_moments, merge_moments, run_demo


def _full_batch_stats(x):
    rows = x.numpy().transpose(0, 2, 3, 1).reshape(-1, x.shape[1])  # NHW,C
    return rows.mean(axis=0), rows.var(axis=0)


@pytest.fixture(scope="module")
def x64():
    gen = torch.Generator().manual_seed(0)
    # Shards differ on purpose: each rank's data has its own offset.
    x = torch.randn(10, 4, 3, 3, generator=gen, dtype=torch.float64)
    x[:3] += 2.0
    x[3:6] -= 1.0
    return x


@pytest.fixture(scope="module")
def demo64(x64):
    return run_demo(x64, world_size=3, sizes=[3, 3, 4])


def test_synced_stats_equal_full_batch(x64, demo64):
    """Every rank's synced mean/var equal the whole batch's to 1e-10 (float64)."""
    mean, var = _full_batch_stats(x64)
    assert [r["rank"] for r in demo64] == [0, 1, 2]
    for r in demo64:
        np.testing.assert_allclose(r["sync_mean"], mean, rtol=0, atol=1e-10)
        np.testing.assert_allclose(r["sync_var"], var, rtol=0, atol=1e-10)
        np.testing.assert_allclose(r["sums_mean"], mean, rtol=0, atol=1e-10)
        np.testing.assert_allclose(r["sums_var"], var, rtol=0, atol=1e-10)


def test_local_stats_are_the_shards_not_the_batch(x64, demo64):
    """Without sync each rank sees only its shard: right for it, wrong for the batch."""
    mean, var = _full_batch_stats(x64)
    start = 0
    for r, size in zip(demo64, [3, 3, 4]):
        shard_mean, shard_var = _full_batch_stats(x64[start:start + size])
        start += size
        assert r["count"] == size * 9
        np.testing.assert_allclose(r["local_mean"], shard_mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(r["local_var"], shard_var, rtol=0, atol=1e-12)
        assert np.abs(r["local_mean"] - mean).max() > 0.1


def test_torch_syncbn_on_cpu_is_reported(demo64):
    """PyTorch's SyncBatchNorm either runs or its refusal is passed back, never lost."""
    for r in demo64:
        assert (r["syncbn_out"] is None) != (r["syncbn_error"] is None)
        if r["syncbn_error"] is not None:
            assert "SyncBatchNorm" in r["syncbn_error"]


def test_sums_cancel_in_float32_but_chan_merge_does_not():
    """Mean 1e4, std 1, float32: E[x^2]-E[x]^2 loses the variance, the Chan merge keeps it."""
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(64, 2, generator=gen, dtype=torch.float64) + 1e4).float()
    var = x.double().numpy().var(axis=0)
    results = run_demo(x, world_size=2)
    for r in results:
        np.testing.assert_allclose(r["sync_var"], var, rtol=1e-3)
        assert np.abs(r["sums_var"] - var).max() > 0.1


def test_merge_moments_matches_numpy_on_the_union():
    rng = np.random.default_rng(2)
    a = torch.from_numpy(rng.normal(3.0, 2.0, size=(7, 5)))
    b = torch.from_numpy(rng.normal(-1.0, 0.5, size=(13, 5)))
    count, mean, m2 = merge_moments(*local_moments(a), *local_moments(b))
    union = np.concatenate([a.numpy(), b.numpy()])
    assert count == 20
    np.testing.assert_allclose(mean.numpy(), union.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose((m2 / count).numpy(), union.var(axis=0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(world_size=0), "world_size"),
    (dict(world_size=2, sizes=[3, 3]), "sizes"),
    (dict(world_size=2, sizes=[4, 0]), "sizes"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_demo(torch.zeros(4, 2), **kwargs)


@pytest.mark.parametrize("x", [np.zeros((4, 2)), torch.zeros(4, 2, 3)])
def test_bad_batch_raises_before_spawning(x):
    with pytest.raises(ValueError, match=r"x must be a torch tensor of shape \(N, C\)"):
        run_demo(x, world_size=2)
    with pytest.raises(ValueError, match="x must have a floating-point dtype, got torch.int64"):
        run_demo(torch.zeros(4, 2, dtype=torch.int64), world_size=2)


def test_bad_shape_raises():
    with pytest.raises(ValueError, match=r"x must have shape"):
        local_moments(torch.zeros(2, 3, 4))


@pytest.mark.parametrize("N, shard_size", [(5, 2), (6, 2), (6, 1), (8, 4)])
def test_sharded_bn_normalizes_each_shard_on_its_own(N, shard_size):
    """Train mode: each shard equals from-scratch BN of that shard; first shard feeds the buffers."""
    from bnref.distributed import ShardedBatchNorm2d
    from bnref.functional import spatial_batchnorm_forward

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(N, 3, 4, 4, generator=gen, dtype=torch.float64) * 2 + 1
    x[::2] += 3.0  # shards must differ for the test to mean anything
    bn = ShardedBatchNorm2d(3, shard_size=shard_size).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5, generator=gen)
        bn.bias.uniform_(-1, 1, generator=gen)
    out = bn(x).detach().numpy()
    gamma, beta = bn.weight.detach().numpy(), bn.bias.detach().numpy()
    first_param = {"mode": "train", "momentum": 0.9}  # EWA decay 0.9 == torch's 0.1
    for start in range(0, N, shard_size):
        param = first_param if start == 0 else {"mode": "train"}
        shard = x[start:start + shard_size].numpy()
        ref, _ = spatial_batchnorm_forward(shard, gamma, beta, param)
        np.testing.assert_allclose(out[start:start + shard_size], ref, rtol=0, atol=1e-10)
    n = shard_size * 4 * 4  # torch keeps the unbiased variance in its buffer
    ref_var = 0.9 + (first_param["running_var"] - 0.9) * n / (n - 1)
    np.testing.assert_allclose(bn.running_mean.numpy(), first_param["running_mean"],
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), ref_var, rtol=0, atol=1e-12)


@pytest.mark.parametrize("N, shard_size", [(6, 2), (5, 2)])
def test_sharded_bn_gradients_match_per_shard_batch_norm(N, shard_size):
    """Gradients through the (vectorized) sharded BN equal those of torch BN run shard by shard."""
    from bnref.distributed import ShardedBatchNorm2d

    gen = torch.Generator().manual_seed(4)
    x = torch.randn(N, 2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    dout = torch.randn(N, 2, 3, 3, generator=gen, dtype=torch.float64)
    bn = ShardedBatchNorm2d(2, shard_size=shard_size).double()
    (bn(x) * dout).sum().backward()
    x_ref = x.detach().clone().requires_grad_(True)
    w_ref = bn.weight.detach().clone().requires_grad_(True)
    b_ref = bn.bias.detach().clone().requires_grad_(True)
    out_ref = torch.cat([F.batch_norm(s, None, None, w_ref, b_ref, training=True)
                         for s in x_ref.split(shard_size)])
    (out_ref * dout).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(bn.weight.grad, w_ref.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(bn.bias.grad, b_ref.grad, rtol=0, atol=1e-12)


def test_sharded_bn_with_one_shard_is_batchnorm2d():
    from bnref.distributed import ShardedBatchNorm2d

    x = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    bn, ref = ShardedBatchNorm2d(2, shard_size=6).double(), torch.nn.BatchNorm2d(2).double()
    for _ in range(2):
        torch.testing.assert_close(bn(x), ref(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(bn.running_var, ref.running_var, rtol=0, atol=1e-12)
    bn.eval(), ref.eval()
    torch.testing.assert_close(bn(x), ref(x), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="shard_size"):
        ShardedBatchNorm2d(2, shard_size=0)

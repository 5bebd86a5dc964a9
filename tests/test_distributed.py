"""bnref.distributed: synchronized BN statistics across gloo CPU processes.

The oracle is NumPy on the whole, unsplit batch. Each run_demo call starts
real processes (about 3 s), so the runs are shared through module fixtures.
"""

import numpy as np
import pytest
import torch

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


def test_bad_shape_raises():
    with pytest.raises(ValueError, match=r"x must have shape"):
        local_moments(torch.zeros(2, 3, 4))

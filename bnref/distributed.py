"""Synchronized batch norm statistics across processes, with torch.distributed.

When one mini-batch is split across ``P`` processes (data parallelism), each
process sees only its shard. Plain batch norm then normalizes with the
shard's statistics, which are not those of the batch. Synchronized batch
norm exchanges per-channel moments so that every process normalizes with the
statistics of the whole batch.

Two ways to combine the moments are here:

* :func:`sync_moments` gathers each process's ``(count, mean, M2)`` and merges
  them with the pairwise update of Chan, Golub and LeVeque (1983). ``M2`` is
  the sum of squared deviations from the shard's own mean, so no large
  numbers are subtracted from each other.
* :func:`sync_moments_sums` all-reduces ``(count, sum, sum of squares)`` and
  takes ``E[x^2] - E[x]^2``: one cheap all-reduce, but it cancels
  catastrophically when the mean is large compared with the spread.

:func:`run_demo` starts ``world_size`` CPU processes on 127.0.0.1 with the
gloo backend, gives each a shard of one batch and returns, for each rank,
the shard's own statistics and the synchronized ones.
"""

import socket
from queue import Empty

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = [
    "local_moments",
    "merge_moments",
    "sync_moments",
    "sync_moments_sums",
    "free_port",
    "run_demo",
    "ShardedBatchNorm2d",
]


def _channel_rows(x):
    """View (N, C) or (N, C, H, W) as rows of (N*H*W, C), one column per channel."""
    if x.dim() == 2:
        return x                                            # N,C
    if x.dim() == 4:
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # NHW,C
    raise ValueError(f"x must have shape (N, C) or (N, C, H, W), got {tuple(x.shape)}")


def local_moments(x):
    """Per-channel count, mean and M2 (sum of squared deviations) of one shard.

    Args:
        x: torch tensor of shape (N, C) or (N, C, H, W).

    Returns:
        count (a float), mean (C,), m2 (C,); the biased variance is ``m2 / count``.
    """
    rows = _channel_rows(x)                  # M,C
    count = float(rows.shape[0])
    if count == 0:
        raise ValueError("x must hold at least one value per channel, got an empty shard")
    mean = rows.mean(dim=0)                  # C
    m2 = ((rows - mean) ** 2).sum(dim=0)     # C   two passes: no cancellation
    return count, mean, m2


def merge_moments(count_a, mean_a, m2_a, count_b, mean_b, m2_b):
    """Chan et al.'s merge of the moments of two disjoint sets of values.

    Returns:
        count, mean, m2 of the union.
    """
    count = count_a + count_b
    delta = mean_b - mean_a                                   # C
    mean = mean_a + delta * (count_b / count)                 # C
    m2 = m2_a + m2_b + delta**2 * (count_a * count_b / count)  # C
    return count, mean, m2


def sync_moments(x, group=None):
    """Whole-batch mean and biased variance, merged from every process's shard.

    Each process contributes ``(count, mean, M2)`` of its shard; an all-gather
    collects them and every process merges them in rank order, so all ranks
    get bit-identical results. Must be called by every process in ``group``.

    Returns:
        count, mean (C,), var (C,).
    """
    count, mean, m2 = local_moments(x)
    packed = torch.stack([torch.full_like(mean, count), mean, m2])  # 3,C
    gathered = [torch.empty_like(packed) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, packed, group=group)
    total = (gathered[0][0, 0].item(), gathered[0][1], gathered[0][2])
    for other in gathered[1:]:
        total = merge_moments(*total, other[0, 0].item(), other[1], other[2])
    count, mean, m2 = total
    return count, mean, m2 / count


def sync_moments_sums(x, group=None):
    """Whole-batch mean and biased variance from all-reduced sums.

    One all-reduce of ``(count, sum, sum of squares)``; the variance is
    ``E[x^2] - E[x]^2``, which loses precision when the mean is large compared
    with the spread (kept to show exactly that).

    Returns:
        count, mean (C,), var (C,).
    """
    rows = _channel_rows(x)                                  # M,C
    packed = torch.stack([torch.full_like(rows[0], rows.shape[0]),
                          rows.sum(dim=0), (rows**2).sum(dim=0)])  # 3,C
    dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=group)
    count = packed[0, 0].item()
    mean = packed[1] / count
    return count, mean, packed[2] / count - mean**2


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _try_torch_syncbn(shard):
    """Run torch.nn.SyncBatchNorm on this CPU shard; its output, or the error it raises."""
    bn = torch.nn.SyncBatchNorm(shard.shape[1]).to(shard.dtype)
    try:
        return bn(shard).detach().numpy(), None
    except ValueError as err:  # PyTorch syncs only GPU-like devices
        return None, str(err)


def _worker(rank, world_size, port, x, sizes, queue):
    """One process of :func:`run_demo`: statistics of its shard, local and synced."""
    torch.set_num_threads(1)  # several processes share few cores
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                             rank=rank, world_size=world_size)
    try:
        start = sum(sizes[:rank])
        shard = x[start:start + sizes[rank]]
        count, mean, m2 = local_moments(shard)
        _, sync_mean, sync_var = sync_moments(shard)
        _, sums_mean, sums_var = sync_moments_sums(shard)
        syncbn_out, syncbn_error = _try_torch_syncbn(shard)
        queue.put(dict(rank=rank, count=count, local_mean=mean.numpy(),
                       local_var=(m2 / count).numpy(), sync_mean=sync_mean.numpy(),
                       sync_var=sync_var.numpy(), sums_mean=sums_mean.numpy(),
                       sums_var=sums_var.numpy(), syncbn_out=syncbn_out,
                       syncbn_error=syncbn_error))
    finally:
        dist.destroy_process_group()


def run_demo(x, world_size=2, sizes=None):
    """Split the batch ``x`` across ``world_size`` CPU processes and sync its statistics.

    Args:
        x: torch tensor (N, C) or (N, C, H, W); rank r gets the r-th slice along N.
        world_size: number of processes (gloo backend on 127.0.0.1).
        sizes: examples per rank (summing to N); by default as equal as possible.

    Returns:
        a list with one dict per rank (sorted by rank): ``count``, ``local_mean``,
        ``local_var`` (the shard's own statistics), ``sync_mean``, ``sync_var``
        (Chan merge), ``sums_mean``, ``sums_var`` (sums all-reduce) as NumPy
        arrays, and ``syncbn_out``/``syncbn_error`` from ``torch.nn.SyncBatchNorm``.
    """
    import torch.multiprocessing as mp

    if not isinstance(x, torch.Tensor) or x.dim() not in (2, 4):
        raise ValueError(f"x must be a torch tensor of shape (N, C) or (N, C, H, W), "
                         f"got {type(x).__name__} of shape {tuple(getattr(x, 'shape', ()))}")
    if not x.is_floating_point():
        raise ValueError(f"x must have a floating-point dtype, got {x.dtype}")
    N = x.shape[0]
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if sizes is None:
        sizes = [len(part) for part in np.array_split(np.arange(N), world_size)]
    sizes = [int(s) for s in sizes]
    if len(sizes) != world_size or sum(sizes) != N or min(sizes) < 1:
        raise ValueError(f"sizes must be {world_size} positive counts summing to N={N}, "
                         f"got {sizes!r}")
    queue = mp.get_context("spawn").Queue()
    ctx = mp.spawn(_worker, args=(world_size, free_port(), x, sizes, queue),
                   nprocs=world_size, join=False)
    results = []
    while len(results) < world_size:  # drain before join: a full pipe would block the workers
        try:
            results.append(queue.get(timeout=1.0))
        except Empty:
            # Re-raises a worker's exception here instead of waiting forever.
            if ctx.join(timeout=0) and queue.empty():
                raise RuntimeError(f"{world_size - len(results)} worker(s) exited without a result")
    ctx.join()
    return sorted(results, key=lambda r: r["rank"])


class ShardedBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm2d as data parallelism without sync sees it, simulated in one process.

    In train mode the batch is cut into shards of ``shard_size`` examples and
    each shard is normalized with its own statistics, as each of several
    processes would. Only the first shard updates the running statistics, as
    with DistributedDataParallel, which broadcasts rank 0's buffers. Eval
    mode is plain BatchNorm2d.
    """

    def __init__(self, num_features, shard_size, **kwargs):
        super().__init__(num_features, **kwargs)
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be a positive int, got {shard_size!r}")
        self.shard_size = shard_size

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        self.num_batches_tracked += 1
        factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                  else self.momentum)  # None means the cumulative average, as in torch
        N, C = x.shape[:2]
        s = self.shard_size
        if N % s or N == s:
            outs = [self._shard_bn(shard, factor, i == 0) for i, shard in enumerate(x.split(s))]
            return torch.cat(outs)
        # Equal shards: view them as extra channels, (N,C,H,W) -> (s, N/s*C, H, W),
        # so one batch_norm call normalizes every shard at once.
        with torch.no_grad():  # the buffers follow the first shard only
            self._shard_bn(x[:s], factor, True)
        stacked = x.reshape(N // s, s, C, *x.shape[2:]).transpose(0, 1)   # s,N/s,C,H,W
        weight = None if self.weight is None else self.weight.repeat(N // s)
        bias = None if self.bias is None else self.bias.repeat(N // s)
        out = F.batch_norm(stacked.reshape(s, (N // s) * C, *x.shape[2:]), None, None,
                           weight, bias, True, 0.0, self.eps)             # s,N/s*C,H,W
        return out.reshape(s, N // s, C, *x.shape[2:]).transpose(0, 1).reshape(x.shape)

    def _shard_bn(self, shard, factor, update_running):
        return F.batch_norm(shard, self.running_mean if update_running else None,
                            self.running_var if update_running else None,
                            self.weight, self.bias, True, factor, self.eps)

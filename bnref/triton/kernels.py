"""The Triton kernels of batch norm: statistics, normalization, backward.

Batch norm reads and writes every element once or twice and does a handful of
flops per element, so it is memory-bound: a kernel is as good as the fraction
of the memory bandwidth it reaches. What the naive PyTorch composition moves,
per element of ``x`` (compare tutorial 02-fused-softmax)::

    mean = x.mean((0, 2, 3))                  # read x
    var = ((x - mean) ** 2).mean((0, 2, 3))   # read x, write and read x - mean
    y = (x - mean) / sqrt(var + eps) * w + b  # read x, write y (plus temporaries)

The split kernels here read ``x`` twice and write ``y`` once in the forward
pass, and read ``x`` and ``dy`` twice and write ``dx`` once in the backward
pass. When a whole channel fits in one tile, the single-pass kernels at the end
of this file read each input once.

One picture covers both memory formats. The input is a stack of ``G`` planes,
each an ``(R, K)`` matrix whose rows lie ``row_stride`` elements apart and
whose columns are contiguous:

* NCHW: one plane per channel (``G = C``), ``R = N`` rows of ``K = H*W``
  pixels; a channel is a whole plane, reduced over both axes.
* channels-last NHWC and ``(N, C)``: a single plane (``G = 1``) with
  ``R = N*H*W`` rows and ``K = C`` columns; a channel is a column.

The constexpr ``CHANNELS_IN_COLS`` tells a kernel which case it is in. Every
kernel works on ``(BLOCK_R, BLOCK_K)`` tiles: loads are coalesced along the
contiguous columns, and each program sums down its rows. The grid is
``(G, row splits, column splits)``; each program owns a rectangle of one plane
(``rows_per_prog`` by ``cols_per_prog``) and loops over its tiles, so a channel
with millions of values is spread over many programs whatever ``C`` is. Their
partial results, one row per program in a ``(P, C)`` float32 buffer, are merged
by a second kernel in a fixed order: the result is deterministic and there are
no atomics.

Statistics follow Chan, Golub and LeVeque: each tile contributes its count,
mean and centred sum of squares ``M2``, and summaries merge exactly with
``mean = mean_a + delta * n_b / n`` and
``M2 = M2_a + M2_b + delta**2 * n_a * n_b / n``. Nothing computes
``E[x^2] - E[x]^2``, which cancels catastrophically when the mean is large
compared with the spread. Everything accumulates in float32, whatever the
input dtype; offsets are 64-bit so tensors past 2**31 elements work.
"""

import triton
import triton.language as tl


@triton.jit
def _merge(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """Chan's pairwise merge of two (count, mean, M2) summaries."""
    n = n_a + n_b
    delta = mean_b - mean_a
    frac_b = n_b / tl.maximum(n, 1.0)  # empty summaries (n = 0) merge to zero
    mean = mean_a + delta * frac_b
    m2 = m2_a + m2_b + delta * delta * n_a * frac_b
    return n, mean, m2


@triton.jit
def _combine(n, mean, m2):
    """Merge many summaries along axis 0 at once (the parallel form of Chan's merge)."""
    total = tl.sum(n, axis=0)
    mean_all = tl.sum(n * mean, axis=0) / tl.maximum(total, 1.0)
    delta = mean - mean_all
    m2_all = tl.sum(m2, axis=0) + tl.sum(n * delta * delta, axis=0)
    return total, mean_all, m2_all


@triton.jit
def _region(R, K, rows_per_prog, cols_per_prog):
    """The rectangle [r_start, r_end) x [k_start, k_end) of a plane this program owns."""
    r_start = tl.program_id(1) * rows_per_prog
    k_start = tl.program_id(2) * cols_per_prog
    r_end = tl.minimum(r_start + rows_per_prog, R)
    k_end = tl.minimum(k_start + cols_per_prog, K)
    return r_start, r_end, k_start, k_end


@triton.jit
def _tile(r0, r_end, cols, col_ok, row_stride, BLOCK_R: tl.constexpr):
    """Offsets (int64, within the plane) and mask of the tile whose first row is r0."""
    rows = r0 + tl.arange(0, BLOCK_R)
    mask = (rows < r_end)[:, None] & col_ok[None, :]
    offs = rows.to(tl.int64)[:, None] * row_stride + cols[None, :]
    return offs, mask


@triton.jit
def _channels(cols, CHANNELS_IN_COLS: tl.constexpr):
    """The channel of each column: the column itself, or this program's plane."""
    ch = cols
    if not CHANNELS_IN_COLS:
        ch = tl.program_id(0) + 0 * cols
    return ch


@triton.jit
def _stats_kernel(
    x_ptr,  # input, G planes of (R, K)
    n_ptr, mean_ptr, m2_ptr,  # out: per-program summaries, (P, C) float32
    R, K, C,  # plane rows, plane columns, channels
    row_stride, plane_stride,  # elements between rows, between planes
    rows_per_prog, cols_per_prog,  # the rectangle each program owns
    CHANNELS_IN_COLS: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Stage 1 of the forward statistics: count, mean and M2 of one rectangle."""
    r_start, r_end, k_start, k_end = _region(R, K, rows_per_prog, cols_per_prog)
    base = x_ptr + tl.program_id(0).to(tl.int64) * plane_stride
    lanes = tl.arange(0, BLOCK_K)
    # One running summary per column lane, merged across lanes only at the end.
    n = tl.zeros([BLOCK_K], tl.float32)
    mean = tl.zeros([BLOCK_K], tl.float32)
    m2 = tl.zeros([BLOCK_K], tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        cols = k0 + lanes
        col_ok = cols < k_end
        for r0 in range(r_start, r_end, BLOCK_R):
            offs, mask = _tile(r0, r_end, cols, col_ok, row_stride, BLOCK_R)
            x = tl.load(base + offs, mask=mask, other=0.0).to(tl.float32)
            n_t = tl.where(col_ok, tl.minimum(r_end - r0, BLOCK_R), 0).to(tl.float32)
            mean_t = tl.sum(x, axis=0) / tl.maximum(n_t, 1.0)
            centred = tl.where(mask, x - mean_t[None, :], 0.0)
            m2_t = tl.sum(centred * centred, axis=0)
            n, mean, m2 = _merge(n, mean, m2, n_t, mean_t, m2_t)
    if CHANNELS_IN_COLS:
        # Lanes are channels k_start + lanes (cols_per_prog == BLOCK_K).
        out = tl.program_id(1).to(tl.int64) * C + k_start + lanes
        ok = k_start + lanes < K
        tl.store(n_ptr + out, n, mask=ok)
        tl.store(mean_ptr + out, mean, mask=ok)
        tl.store(m2_ptr + out, m2, mask=ok)
    else:
        n_all, mean_all, m2_all = _combine(n, mean, m2)
        p = tl.program_id(1) * tl.num_programs(2) + tl.program_id(2)
        out = p.to(tl.int64) * C + tl.program_id(0)
        tl.store(n_ptr + out, n_all)
        tl.store(mean_ptr + out, mean_all)
        tl.store(m2_ptr + out, m2_all)


@triton.jit
def _finalize_stats_kernel(
    n_ptr, mean_ptr, m2_ptr,  # per-program summaries, (P, C) float32
    P, C,
    save_mean_ptr, save_invstd_ptr,  # out: (C,) float32
    running_mean_ptr, running_var_ptr,  # in/out: (C,), updated in place
    momentum, eps,
    UPDATE_RUNNING: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Stage 2: merge the P summaries of each channel, in a fixed order."""
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < C
    n = tl.zeros([BLOCK_C], tl.float32)
    mean = tl.zeros([BLOCK_C], tl.float32)
    m2 = tl.zeros([BLOCK_C], tl.float32)
    for p0 in range(0, P, BLOCK_P):
        offs, mask = _tile(p0, P, cols, col_ok, C, BLOCK_P)
        n_p = tl.load(n_ptr + offs, mask=mask, other=0.0)
        mean_p = tl.load(mean_ptr + offs, mask=mask, other=0.0)
        m2_p = tl.load(m2_ptr + offs, mask=mask, other=0.0)
        n_c, mean_c, m2_c = _combine(n_p, mean_p, m2_p)
        n, mean, m2 = _merge(n, mean, m2, n_c, mean_c, m2_c)
    _save_stats(n, mean, m2, cols, col_ok, save_mean_ptr, save_invstd_ptr,
                running_mean_ptr, running_var_ptr, momentum, eps, UPDATE_RUNNING)


@triton.jit
def _save_stats(n, mean, m2, ch, ok, save_mean_ptr, save_invstd_ptr,
                running_mean_ptr, running_var_ptr, momentum, eps,
                UPDATE_RUNNING: tl.constexpr):
    """Store mean and invstd of channels ``ch``; update the running statistics."""
    var = m2 / tl.maximum(n, 1.0)  # n = 0 only in masked lanes
    tl.store(save_mean_ptr + ch, mean, mask=ok)
    tl.store(save_invstd_ptr + ch, 1.0 / tl.sqrt(var + eps), mask=ok)
    if UPDATE_RUNNING:
        # PyTorch's convention: momentum weighs the new value, the variance is unbiased.
        rm = tl.load(running_mean_ptr + ch, mask=ok, other=0.0).to(tl.float32)
        rv = tl.load(running_var_ptr + ch, mask=ok, other=0.0).to(tl.float32)
        rm = (1.0 - momentum) * rm + momentum * mean
        rv = (1.0 - momentum) * rv + momentum * (m2 / tl.maximum(n - 1.0, 1.0))
        tl.store(running_mean_ptr + ch, rm, mask=ok)
        tl.store(running_var_ptr + ch, rv, mask=ok)


@triton.jit
def _normalize_kernel(
    x_ptr, y_ptr,  # input and output, same layout
    mean_ptr, spread_ptr,  # (C,): mean, and invstd (FROM_VAR=False) or var (True)
    w_ptr, b_ptr,  # (C,) weight and bias, read only when HAS_WEIGHT / HAS_BIAS
    eps,
    R, K, row_stride, plane_stride, rows_per_prog, cols_per_prog,
    CHANNELS_IN_COLS: tl.constexpr, FROM_VAR: tl.constexpr,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """y = (x - mean) * invstd * w + b: the last pass of training, all of eval."""
    r_start, r_end, k_start, k_end = _region(R, K, rows_per_prog, cols_per_prog)
    plane_off = tl.program_id(0).to(tl.int64) * plane_stride
    for k0 in range(k_start, k_end, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_ok = cols < k_end
        ch = _channels(cols, CHANNELS_IN_COLS)
        mean = tl.load(mean_ptr + ch, mask=col_ok, other=0.0).to(tl.float32)
        spread = tl.load(spread_ptr + ch, mask=col_ok, other=1.0).to(tl.float32)
        scale = spread
        if FROM_VAR:
            scale = 1.0 / tl.sqrt(spread + eps)
        if HAS_WEIGHT:
            scale *= tl.load(w_ptr + ch, mask=col_ok, other=0.0).to(tl.float32)
        shift = tl.zeros_like(scale)
        if HAS_BIAS:
            shift += tl.load(b_ptr + ch, mask=col_ok, other=0.0).to(tl.float32)
        for r0 in range(r_start, r_end, BLOCK_R):
            offs, mask = _tile(r0, r_end, cols, col_ok, row_stride, BLOCK_R)
            x = tl.load(x_ptr + plane_off + offs, mask=mask, other=0.0).to(tl.float32)
            # Subtract first: (x - mean) is exact enough when |mean| >> std;
            # x * scale + (b - mean * scale) would round away the signal.
            y = (x - mean[None, :]) * scale[None, :] + shift[None, :]
            tl.store(y_ptr + plane_off + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _grad_sums_kernel(
    dy_ptr, x_ptr,  # upstream gradient and input, same layout
    mean_ptr,  # (C,) saved batch mean
    sum_dy_ptr, sum_dy_xmu_ptr,  # out: per-program sums, (P, C) float32
    R, K, C, row_stride, plane_stride, rows_per_prog, cols_per_prog,
    CHANNELS_IN_COLS: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Stage 1 of the backward: sum(dy) and sum(dy * (x - mean)) of one rectangle."""
    r_start, r_end, k_start, k_end = _region(R, K, rows_per_prog, cols_per_prog)
    plane_off = tl.program_id(0).to(tl.int64) * plane_stride
    lanes = tl.arange(0, BLOCK_K)
    sum_dy = tl.zeros([BLOCK_K], tl.float32)
    sum_dy_xmu = tl.zeros([BLOCK_K], tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        cols = k0 + lanes
        col_ok = cols < k_end
        mean = tl.load(mean_ptr + _channels(cols, CHANNELS_IN_COLS), mask=col_ok, other=0.0)
        for r0 in range(r_start, r_end, BLOCK_R):
            offs, mask = _tile(r0, r_end, cols, col_ok, row_stride, BLOCK_R)
            dy = tl.load(dy_ptr + plane_off + offs, mask=mask, other=0.0).to(tl.float32)
            x = tl.load(x_ptr + plane_off + offs, mask=mask, other=0.0).to(tl.float32)
            xmu = tl.where(mask, x - mean[None, :], 0.0)
            sum_dy += tl.sum(dy, axis=0)
            sum_dy_xmu += tl.sum(dy * xmu, axis=0)
    if CHANNELS_IN_COLS:
        out = tl.program_id(1).to(tl.int64) * C + k_start + lanes
        ok = k_start + lanes < K
        tl.store(sum_dy_ptr + out, sum_dy, mask=ok)
        tl.store(sum_dy_xmu_ptr + out, sum_dy_xmu, mask=ok)
    else:
        p = tl.program_id(1) * tl.num_programs(2) + tl.program_id(2)
        out = p.to(tl.int64) * C + tl.program_id(0)
        tl.store(sum_dy_ptr + out, tl.sum(sum_dy, axis=0))
        tl.store(sum_dy_xmu_ptr + out, tl.sum(sum_dy_xmu, axis=0))


@triton.jit
def _finalize_grads_kernel(
    sum_dy_ptr, sum_dy_xmu_ptr,  # per-program sums, (P, C) float32
    P, C,
    invstd_ptr,  # (C,) saved invstd
    dweight_ptr, dbias_ptr,  # out: (C,) float32
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Stage 2 of the backward: dbias = sum(dy), dweight = sum(dy * x_hat)."""
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < C
    sum_dy = tl.zeros([BLOCK_C], tl.float32)
    sum_dy_xmu = tl.zeros([BLOCK_C], tl.float32)
    for p0 in range(0, P, BLOCK_P):
        offs, mask = _tile(p0, P, cols, col_ok, C, BLOCK_P)
        sum_dy += tl.sum(tl.load(sum_dy_ptr + offs, mask=mask, other=0.0), axis=0)
        sum_dy_xmu += tl.sum(tl.load(sum_dy_xmu_ptr + offs, mask=mask, other=0.0), axis=0)
    invstd = tl.load(invstd_ptr + cols, mask=col_ok, other=0.0)
    tl.store(dbias_ptr + cols, sum_dy, mask=col_ok)
    tl.store(dweight_ptr + cols, sum_dy_xmu * invstd, mask=col_ok)


@triton.jit
def _grad_input_kernel(
    dy_ptr, x_ptr, dx_ptr,  # same layout
    mean_ptr, invstd_ptr, w_ptr,  # (C,) saved statistics and weight (HAS_WEIGHT)
    dweight_ptr, dbias_ptr,  # (C,) float32 from _finalize_grads_kernel
    count,  # values per channel, N*H*W
    R, K, row_stride, plane_stride, rows_per_prog, cols_per_prog,
    CHANNELS_IN_COLS: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """dx = w * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat))."""
    r_start, r_end, k_start, k_end = _region(R, K, rows_per_prog, cols_per_prog)
    plane_off = tl.program_id(0).to(tl.int64) * plane_stride
    for k0 in range(k_start, k_end, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_ok = cols < k_end
        ch = _channels(cols, CHANNELS_IN_COLS)
        mean = tl.load(mean_ptr + ch, mask=col_ok, other=0.0)
        invstd = tl.load(invstd_ptr + ch, mask=col_ok, other=0.0)
        scale = invstd
        if HAS_WEIGHT:
            scale *= tl.load(w_ptr + ch, mask=col_ok, other=0.0).to(tl.float32)
        mean_dy = tl.load(dbias_ptr + ch, mask=col_ok, other=0.0) / count
        mean_dy_xhat = tl.load(dweight_ptr + ch, mask=col_ok, other=0.0) / count
        for r0 in range(r_start, r_end, BLOCK_R):
            offs, mask = _tile(r0, r_end, cols, col_ok, row_stride, BLOCK_R)
            dy = tl.load(dy_ptr + plane_off + offs, mask=mask, other=0.0).to(tl.float32)
            x = tl.load(x_ptr + plane_off + offs, mask=mask, other=0.0).to(tl.float32)
            x_hat = (x - mean[None, :]) * invstd[None, :]
            dx = scale[None, :] * (dy - mean_dy[None, :] - x_hat * mean_dy_xhat[None, :])
            tl.store(dx_ptr + plane_off + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# Single pass: when a whole channel (NCHW) or block of channels (channels-last)
# fits in one tile, one program per channel (block) reads x (and dy) once.


@triton.jit
def _channel_sums(t, CHANNELS_IN_COLS: tl.constexpr, BLOCK_K: tl.constexpr):
    """Per-lane channel sums of a tile: down the rows, or of the whole tile (NCHW)."""
    sums = tl.sum(t, axis=0)
    if not CHANNELS_IN_COLS:
        sums = tl.zeros([BLOCK_K], tl.float32) + tl.sum(sums, axis=0)
    return sums


@triton.jit
def _train_single_pass_kernel(
    x_ptr, y_ptr, w_ptr, b_ptr,
    save_mean_ptr, save_invstd_ptr, running_mean_ptr, running_var_ptr,
    momentum, eps,
    R, K, row_stride, plane_stride,
    CHANNELS_IN_COLS: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    UPDATE_RUNNING: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,  # BLOCK_R >= R; NCHW: BLOCK_K >= K
):
    """Statistics and normalization of whole channels held in registers: x is read once."""
    plane_off = tl.program_id(0).to(tl.int64) * plane_stride
    cols = tl.program_id(2) * BLOCK_K + tl.arange(0, BLOCK_K)
    col_ok = cols < K
    offs, mask = _tile(0, R, cols, col_ok, row_stride, BLOCK_R)
    x = tl.load(x_ptr + plane_off + offs, mask=mask, other=0.0).to(tl.float32)
    count = R
    if not CHANNELS_IN_COLS:
        count = R * K
    n = tl.where(col_ok, count, 0).to(tl.float32)
    mean = _channel_sums(x, CHANNELS_IN_COLS, BLOCK_K) / tl.maximum(n, 1.0)
    xmu = tl.where(mask, x - mean[None, :], 0.0)  # two passes over registers, exact
    m2 = _channel_sums(xmu * xmu, CHANNELS_IN_COLS, BLOCK_K)
    ch = _channels(cols, CHANNELS_IN_COLS)
    owner = col_ok
    if not CHANNELS_IN_COLS:
        owner = cols == 0  # one lane stores each channel's results
    _save_stats(n, mean, m2, ch, owner, save_mean_ptr, save_invstd_ptr,
                running_mean_ptr, running_var_ptr, momentum, eps, UPDATE_RUNNING)
    scale = 1.0 / tl.sqrt(m2 / tl.maximum(n, 1.0) + eps)
    if HAS_WEIGHT:
        scale *= tl.load(w_ptr + ch, mask=col_ok, other=0.0).to(tl.float32)
    y = xmu * scale[None, :]
    if HAS_BIAS:
        y += tl.load(b_ptr + ch, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + plane_off + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_single_pass_kernel(
    dy_ptr, x_ptr, dx_ptr, mean_ptr, invstd_ptr, w_ptr,
    dweight_ptr, dbias_ptr,  # out: (C,) float32
    R, K, row_stride, plane_stride,
    CHANNELS_IN_COLS: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,  # BLOCK_R >= R; NCHW: BLOCK_K >= K
):
    """Both reductions and dx of whole channels held in registers: x and dy read once."""
    plane_off = tl.program_id(0).to(tl.int64) * plane_stride
    cols = tl.program_id(2) * BLOCK_K + tl.arange(0, BLOCK_K)
    col_ok = cols < K
    offs, mask = _tile(0, R, cols, col_ok, row_stride, BLOCK_R)
    ch = _channels(cols, CHANNELS_IN_COLS)
    mean = tl.load(mean_ptr + ch, mask=col_ok, other=0.0)
    invstd = tl.load(invstd_ptr + ch, mask=col_ok, other=0.0)
    dy = tl.load(dy_ptr + plane_off + offs, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + plane_off + offs, mask=mask, other=0.0).to(tl.float32)
    x_hat = tl.where(mask, (x - mean[None, :]) * invstd[None, :], 0.0)
    dbias = _channel_sums(dy, CHANNELS_IN_COLS, BLOCK_K)
    dweight = _channel_sums(dy * x_hat, CHANNELS_IN_COLS, BLOCK_K)
    owner = col_ok
    if not CHANNELS_IN_COLS:
        owner = cols == 0
    tl.store(dbias_ptr + ch, dbias, mask=owner)
    tl.store(dweight_ptr + ch, dweight, mask=owner)
    count = R
    if not CHANNELS_IN_COLS:
        count = R * K
    scale = invstd
    if HAS_WEIGHT:
        scale *= tl.load(w_ptr + ch, mask=col_ok, other=0.0).to(tl.float32)
    dx = scale[None, :] * (dy - (dbias / count)[None, :] - x_hat * (dweight / count)[None, :])
    tl.store(dx_ptr + plane_off + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)

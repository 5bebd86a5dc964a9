"""Launchers: check the arguments, lay the tensor out as planes, split the work, launch.

See :mod:`bnref.triton.kernels` for the plane picture and the kernels.
"""

import contextlib
import functools
import re
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from bnref.triton import kernels

__all__ = ["batch_norm_train", "batch_norm_backward", "batch_norm_eval", "tiling", "explain",
           "plan", "Plan"]

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _version(text):
    """'3.6.0+git1' -> (3, 6): the numeric major and minor of a version string."""
    parts = re.findall(r"\d+", text)[:2]
    return tuple(int(p) for p in parts)


def _interpreter_problem(triton_version=None, numpy_version=None):
    """Why Triton's interpreter cannot run these kernels here, or '' when it can.

    Triton's interpreter before 3.7 turns one-element arrays into Python ints
    (for loop bounds such as ``range(tl.program_id(0) * n, ...)``), which
    NumPy 2.4 made an error; Triton 3.7.0 and later do not (checked with
    Triton 3.6.0, 3.7.0 and 3.7.1 against NumPy 2.3.5 and 2.4).
    """
    import numpy
    triton_version = triton_version or triton.__version__
    numpy_version = numpy_version or numpy.__version__
    if _version(triton_version) < (3, 7) and _version(numpy_version) >= (2, 4):
        return (f"Triton {triton_version}'s interpreter cannot run with NumPy {numpy_version} "
                "(it converts one-element arrays to Python ints, an error since NumPy 2.4): "
                "install triton>=3.7 or numpy<2.4")
    return ""
_compiled = isinstance(kernels._stats_kernel, triton.runtime.JITFunction)
if _compiled != isinstance(tl.sum, triton.runtime.JITFunction):
    # Triton's own library was defined before TRITON_INTERPRET=1 was set.
    MODE = "unavailable"
    WHY = ("triton was imported before TRITON_INTERPRET=1 was set: set it first "
           "(or import bnref.triton before triton) in a fresh process")
elif not _compiled:
    MODE, WHY = "interpreter", ""
    _problem = _interpreter_problem()
    if _problem:
        MODE, WHY = "unavailable", _problem
elif torch.cuda.is_available():
    MODE, WHY = "gpu", ""
else:
    MODE = "unavailable"
    WHY = ("no GPU and TRITON_INTERPRET is not 1: set TRITON_INTERPRET=1 before "
           "importing triton or bnref.triton")

# Elements per tile and programs per streaming multiprocessor: starting points
# for the GPU (benchmarks/gpu_bn.py measures them). In the interpreter every
# program is a Python loop, so there the fewest, largest tiles are fastest.
_TILE_ELEMS = 4096
_PROGRAMS_PER_SM = 4
# Single pass: values one program may hold (registers), and the fewest
# channels-last columns per program that still give coalesced loads.
_SINGLE_PASS_ELEMS = 8192
_SINGLE_PASS_MIN_COLS = 16
_overrides = {}


class Layout(NamedTuple):
    """The input as G planes of (R, K); a channel is a column or a plane."""
    channels_in_cols: bool
    G: int
    R: int
    K: int
    row_stride: int
    plane_stride: int


class Tiling(NamedTuple):
    block_r: int
    block_k: int
    rows_per_prog: int
    cols_per_prog: int
    grid: tuple


@contextlib.contextmanager
def tiling(block_r=None, block_k=None, rows_per_prog=None, cols_per_prog=None,
           single_pass=None, num_warps=None, programs_per_sm=None):
    """Force tile sizes and program rectangles (for tests and tuning experiments).

    Small values make tiny inputs take the many-tile, many-program split path
    that large inputs take on a GPU; forcing any of them turns the single-pass
    path off unless ``single_pass=True``. ``single_pass=False`` turns it off
    alone. In the channels-last layout ``cols_per_prog`` is always ``block_k``
    (a program owns one block of channels).

    Two knobs for tuning on a GPU leave the choice of path alone:
    ``num_warps`` (a power of two up to 32) for the kernels that stream the
    tensor, and ``programs_per_sm``, how many programs per streaming
    multiprocessor the split path aims for (default 4).
    """
    if single_pass not in (None, True, False):
        raise ValueError(f"single_pass must be None, True or False, got {single_pass!r}")
    forced = dict(block_r=block_r, block_k=block_k, rows_per_prog=rows_per_prog,
                  cols_per_prog=cols_per_prog)
    for name, value in forced.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
        if name.startswith("block") and value is not None and value & (value - 1):
            raise ValueError(f"{name} must be a power of two, got {value}")
    knobs = dict(num_warps=num_warps, programs_per_sm=programs_per_sm)
    for name, value in knobs.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if num_warps is not None and (num_warps > 32 or num_warps & (num_warps - 1)):
        raise ValueError(f"num_warps must be a power of two from 1 to 32, got {num_warps}")
    saved = dict(_overrides)
    _overrides.update({k: v for k, v in forced.items() if v is not None})
    _overrides.update({k: v for k, v in knobs.items() if v is not None})
    if single_pass is not None or any(v is not None for v in forced.values()):
        _overrides["single_pass"] = bool(single_pass)
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(saved)


@functools.lru_cache(maxsize=None)
def _target_programs(device):
    if MODE == "interpreter":
        return 1
    return _PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count


def _pow2_at_most(n, cap):
    return min(triton.next_power_of_2(max(n, 1)), cap)


def _plan(layout, device, target=None):
    """Choose tile sizes and how many programs share each plane.

    ``target``: how many programs would fill the GPU (default: the device's).
    """
    o = _overrides
    G, R, K = layout.G, layout.R, layout.K
    if target is None:
        target = _target_programs(device)
        if "programs_per_sm" in o:  # _target_programs is _PROGRAMS_PER_SM per SM on a GPU
            target = max(1, target * o["programs_per_sm"] // _PROGRAMS_PER_SM)
    block_k = o.get("block_k") or _pow2_at_most(K, 64 if layout.channels_in_cols else 1024)
    block_r = o.get("block_r") or _pow2_at_most(R, max(1, _TILE_ELEMS // block_k))
    if layout.channels_in_cols:
        cols_per_prog = block_k
    else:
        cols_per_prog = o.get("cols_per_prog") or K
    # Split rows until the GPU is busy, then (NCHW with few rows) columns too.
    wanted = max(1, target // (G * triton.cdiv(K, cols_per_prog)))
    rows_per_prog = o.get("rows_per_prog") or block_r * triton.cdiv(
        triton.cdiv(R, block_r), min(wanted, triton.cdiv(R, block_r)))
    rows_per_prog = max(rows_per_prog, triton.cdiv(R, 65535))  # grid axis limit
    n_r = triton.cdiv(R, rows_per_prog)
    if not layout.channels_in_cols and "cols_per_prog" not in o and n_r < wanted:
        col_tiles = triton.cdiv(K, block_k)
        cols_per_prog = block_k * triton.cdiv(col_tiles, min(col_tiles, triton.cdiv(wanted, n_r)))
    grid = (G, n_r, triton.cdiv(K, cols_per_prog))
    return Tiling(block_r, block_k, rows_per_prog, cols_per_prog, grid)


def _single_pass_plan(layout):
    """Tiling for the single-pass kernels, or None when a channel does not fit in one tile."""
    if not _overrides.get("single_pass", True):
        return None
    block_r = triton.next_power_of_2(layout.R)
    if layout.channels_in_cols:
        block_k = _pow2_at_most(layout.K, min(64, _SINGLE_PASS_ELEMS // block_r))
        if block_r > _SINGLE_PASS_ELEMS or block_k < _pow2_at_most(layout.K, _SINGLE_PASS_MIN_COLS):
            return None
        return Tiling(block_r, block_k, layout.R, block_k, (1, 1, triton.cdiv(layout.K, block_k)))
    block_k = triton.next_power_of_2(layout.K)
    if block_r * block_k > _SINGLE_PASS_ELEMS:
        return None
    return Tiling(block_r, block_k, layout.R, layout.K, (layout.G, 1, 1))


class Plan(NamedTuple):
    """How bnref.triton splits the work for one input; see :func:`plan`."""
    layout: str  # "NCHW" or "channels-last"
    planes: int  # G: planes of (rows, cols); a channel is a plane (NCHW) or a column
    rows: int  # R
    cols: int  # K
    single_pass: bool  # training kernels read each input once
    grid: tuple  # grid of the training kernels (single-pass, or stats/normalize/backward)
    block: tuple  # (BLOCK_R, BLOCK_K) tile of those kernels
    partials: int  # summaries per channel merged by the second-stage kernel (0: none)
    eval_grid: tuple  # grid of the eval (normalize) kernel
    passes: dict  # tensor-sized reads and writes per pass: forward, backward, eval

    @property
    def programs(self):
        """Programs launched by the main training kernel."""
        G, n_r, n_k = self.grid
        return G * n_r * n_k


# Tensor-sized memory passes of each path, and the least any kernel can do.
# forward: read x (stats), read x and write y (normalize); backward: read x and
# dy (sums), read x and dy and write dx; single pass: every input read once.
_PASSES = {True: dict(forward=2, backward=3, eval=2), False: dict(forward=3, backward=5, eval=2)}
MIN_PASSES = dict(forward=2, backward=3, eval=2)


def plan(x, sm_count=None):
    """The launch plan for an input like ``x``: layout, path, grids, tiles, memory passes.

    Args:
        x: a tensor of the input's shape, dtype and memory format; a ``'meta'``
            tensor is enough (nothing is read or launched).
        sm_count: plan as on a GPU with this many streaming multiprocessors
            (132 on an H100 SXM). Default: the GPU in use; in the interpreter,
            one program per plane (the fastest there).

    The pass counts are the model of :mod:`bnref.triton.kernels`: the split
    path reads ``x`` twice in the forward pass and ``x`` and ``dy`` twice in
    the backward pass; when the second read misses the L2 cache, a kernel can
    reach at most ``MIN_PASSES[p] / passes[p]`` of the copy bandwidth.
    """
    if not isinstance(x, torch.Tensor) or x.dim() not in (2, 4):
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape (N, C) or (N, C, H, W), got {got}")
    if sm_count is not None and (not isinstance(sm_count, int) or isinstance(sm_count, bool)
                                 or sm_count < 1):
        raise ValueError(f"sm_count must be a positive int or None, got {sm_count!r}")
    layout, x = _layout(x)
    target = (None if sm_count is None
              else _overrides.get("programs_per_sm", _PROGRAMS_PER_SM) * sm_count)
    split = _plan(layout, x.device, target)
    single = _single_pass_plan(layout)
    t = single or split
    partials = 0 if single else split.grid[1] * (1 if layout.channels_in_cols else split.grid[2])
    return Plan("channels-last" if layout.channels_in_cols else "NCHW", layout.G, layout.R,
                layout.K, single is not None, t.grid, (t.block_r, t.block_k), partials,
                split.grid, dict(_PASSES[single is not None]))


def explain(x, sm_count=None):
    """How bnref.triton splits the work for an input like ``x``, in words (see :func:`plan`)."""
    p = plan(x, sm_count)
    where = (f"{p.layout} layout: {p.planes} plane(s) of {p.rows} rows x {p.cols} columns, "
             f"a channel is a {'column' if p.layout == 'channels-last' else 'plane'}")
    if p.single_pass:
        return (f"{where}; single pass: grid {p.grid}, one {p.block[0]} x {p.block[1]} tile "
                "per program, x read once")
    return (f"{where}; split reduction: grid {p.grid}, tiles of {p.block[0]} x {p.block[1]}, "
            f"{p.partials} partial summaries per channel merged in a second kernel")


def _layout(x):
    """Lay ``x`` out as planes; returns (layout, x), x copied only if its strides are unusual."""
    N, C = x.shape[0], x.shape[1]
    S = x.shape[2] * x.shape[3] if x.dim() == 4 else 1
    if S > 1 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return Layout(True, 1, N * S, C, C, 0), x
    x = x.contiguous()
    if S == 1:  # (N, C) and (N, C, 1, 1): the channel is the contiguous axis
        return Layout(True, 1, N, C, C, 0), x
    return Layout(False, C, N, S, C * S, S), x


def _like_layout(t, x, layout):
    """``t`` (dy) with the same strides as ``x``."""
    if t.stride() == x.stride():
        return t
    channels_last = layout.channels_in_cols and x.dim() == 4
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return t.contiguous(memory_format=fmt)


def _launch_args(layout, t):
    return dict(R=layout.R, K=layout.K, row_stride=layout.row_stride,
                plane_stride=layout.plane_stride, rows_per_prog=t.rows_per_prog,
                cols_per_prog=t.cols_per_prog, CHANNELS_IN_COLS=layout.channels_in_cols,
                BLOCK_R=t.block_r, BLOCK_K=t.block_k, num_warps=_main_warps(t.block_r * t.block_k))


def _main_warps(tile_elems):
    """Warps of the kernels that stream the tensor: forced by tiling(num_warps=...), or default."""
    return _overrides.get("num_warps") or _num_warps(tile_elems)


def _num_warps(tile_elems):
    """About 16 values per thread: few registers, many warps in flight to hide latency.

    Compiled for sm_90 with 4096-value tiles, 4 warps need up to 226 registers
    per thread, 16 warps at most 60 (no spills either way).
    """
    return max(4, min(16, tile_elems // 256))


def _finalize_blocks(P, C):
    block_c = _pow2_at_most(C, 128)
    return _pow2_at_most(P, max(1, _TILE_ELEMS // block_c)), block_c


def _check_input(x, training):
    if MODE == "unavailable":
        raise RuntimeError(f"bnref.triton cannot run: {WHY}")
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (2, 4):
        raise ValueError(f"x must have shape (N, C) or (N, C, H, W), got {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"x must be float32, float16 or bfloat16, got {x.dtype}")
    if MODE == "gpu" and not x.is_cuda:
        raise ValueError(
            f"x is on {x.device}, but bnref.triton runs compiled GPU kernels (MODE='gpu'): "
            "move it to the GPU, or set TRITON_INTERPRET=1 before importing bnref.triton")
    if training and x.numel() // max(x.shape[1], 1) <= 1:
        raise ValueError("Expected more than 1 value per channel when training, "
                         f"got x of shape {tuple(x.shape)}")


def _check_channel_param(name, t, x):
    if t is None:
        return
    C = x.shape[1]
    if not isinstance(t, torch.Tensor) or t.shape != (C,):
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a tensor of shape ({C},) to match x, got {got}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {t.dtype}")
    if t.device != x.device:
        raise ValueError(f"{name} must be on x's device {x.device}, got {t.device}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous, got strides {t.stride()}")


def _check_scalar(name, value, low, high=None):
    ok = isinstance(value, (int, float)) and value >= low and (high is None or value <= high)
    if not ok or (name == "eps" and value <= 0):
        bound = f"in [{low}, {high}]" if high is not None else "positive"
        raise ValueError(f"{name} must be a number {bound}, got {value!r}")


def batch_norm_train(x, weight=None, bias=None, running_mean=None, running_var=None,
                     momentum=0.1, eps=1e-5):
    """Training-mode batch norm: normalize with the batch statistics.

    Args:
        x: (N, C) or (N, C, H, W), float32/float16/bfloat16, NCHW or channels-last.
        weight, bias: (C,) or None.
        running_mean, running_var: (C,) or both None; updated in place with
            ``running = (1 - momentum) * running + momentum * batch_stat``
            (the variance unbiased), as in PyTorch.
        momentum: in [0, 1]. eps: positive, added to the variance.

    Returns:
        y: like x (dtype and memory format).
        save_mean, save_invstd: (C,) float32, what :func:`batch_norm_backward` needs.
    """
    _check_input(x, training=True)
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                    ("running_var", running_var)):
        _check_channel_param(name, t, x)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must both be tensors or both be None")
    _check_scalar("momentum", momentum, 0.0, 1.0)
    _check_scalar("eps", eps, 0.0)
    layout, x = _layout(x)
    C = x.shape[1]
    save_mean = torch.empty(C, device=x.device, dtype=torch.float32)
    save_invstd = torch.empty_like(save_mean)
    update = running_mean is not None
    running = (running_mean, running_var) if update else (save_mean, save_invstd)  # unused
    y = torch.empty_like(x)
    t = _single_pass_plan(layout)
    if t is not None:
        kernels._train_single_pass_kernel[t.grid](
            x, y, x if weight is None else weight, x if bias is None else bias,
            save_mean, save_invstd, *running, float(momentum), float(eps),
            layout.R, layout.K, layout.row_stride, layout.plane_stride,
            CHANNELS_IN_COLS=layout.channels_in_cols, HAS_WEIGHT=weight is not None,
            HAS_BIAS=bias is not None, UPDATE_RUNNING=update, BLOCK_R=t.block_r,
            BLOCK_K=t.block_k, num_warps=_main_warps(t.block_r * t.block_k))
        return y, save_mean, save_invstd
    t = _plan(layout, x.device)
    P = t.grid[1] * (1 if layout.channels_in_cols else t.grid[2])
    n, mean, m2 = torch.empty((3, P, C), device=x.device, dtype=torch.float32)
    kernels._stats_kernel[t.grid](x, n, mean, m2, C=C, **_launch_args(layout, t))
    block_p, block_c = _finalize_blocks(P, C)
    kernels._finalize_stats_kernel[(triton.cdiv(C, block_c),)](
        n, mean, m2, P, C, save_mean, save_invstd, *running, float(momentum), float(eps),
        UPDATE_RUNNING=update, BLOCK_P=block_p, BLOCK_C=block_c,
        num_warps=_num_warps(block_p * block_c))
    _normalize(x, y, layout, save_mean, save_invstd, weight, bias, eps, from_var=False)
    return y, save_mean, save_invstd


def batch_norm_eval(x, weight=None, bias=None, running_mean=None, running_var=None, eps=1e-5):
    """Inference-mode batch norm in one pass.

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``; same
    arguments as :func:`batch_norm_train`, but the running statistics are required
    and left unchanged.
    """
    _check_input(x, training=False)
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                    ("running_var", running_var)):
        _check_channel_param(name, t, x)
    if running_mean is None or running_var is None:
        raise ValueError("batch_norm_eval needs running_mean and running_var, got None")
    _check_scalar("eps", eps, 0.0)
    layout, x = _layout(x)
    y = torch.empty_like(x)
    if x.numel():
        _normalize(x, y, layout, running_mean, running_var, weight, bias, eps, from_var=True)
    return y


def _normalize(x, y, layout, mean, spread, weight, bias, eps, from_var):
    t = _plan(layout, x.device)
    kernels._normalize_kernel[t.grid](
        x, y, mean, spread, x if weight is None else weight, x if bias is None else bias,
        float(eps), FROM_VAR=from_var, HAS_WEIGHT=weight is not None,
        HAS_BIAS=bias is not None, **_launch_args(layout, t))


def batch_norm_backward(dy, x, weight, save_mean, save_invstd):
    """Gradients of training-mode batch norm.

    Args:
        dy: gradient of y, shaped like x. x: the forward input.
        weight: (C,) or None. save_mean, save_invstd: from :func:`batch_norm_train`.

    Returns:
        dx (like x), dweight and dbias ((C,), in weight's dtype, float32 without weight).
    """
    _check_input(x, training=True)
    if not isinstance(dy, torch.Tensor) or dy.shape != x.shape:
        got = tuple(dy.shape) if isinstance(dy, torch.Tensor) else type(dy).__name__
        raise ValueError(f"dy must be a tensor of x's shape {tuple(x.shape)}, got {got}")
    if dy.dtype not in FLOAT_DTYPES or dy.device != x.device:
        raise ValueError(f"dy must be a floating tensor on {x.device}, "
                         f"got {dy.dtype} on {dy.device}")
    for name, t in (("weight", weight), ("save_mean", save_mean), ("save_invstd", save_invstd)):
        _check_channel_param(name, t, x)
    if save_mean is None or save_invstd is None:
        raise ValueError("save_mean and save_invstd are required (from batch_norm_train), got None")
    save_mean, save_invstd = save_mean.float(), save_invstd.float()
    layout, x = _layout(x)
    dy = _like_layout(dy, x, layout)
    C = x.shape[1]
    dweight, dbias = torch.empty((2, C), device=x.device, dtype=torch.float32)
    dx = torch.empty_like(x)
    w = x if weight is None else weight
    t = _single_pass_plan(layout)
    if t is not None:
        kernels._backward_single_pass_kernel[t.grid](
            dy, x, dx, save_mean, save_invstd, w, dweight, dbias,
            layout.R, layout.K, layout.row_stride, layout.plane_stride,
            CHANNELS_IN_COLS=layout.channels_in_cols, HAS_WEIGHT=weight is not None,
            BLOCK_R=t.block_r, BLOCK_K=t.block_k, num_warps=_main_warps(t.block_r * t.block_k))
    else:
        t = _plan(layout, x.device)
        P = t.grid[1] * (1 if layout.channels_in_cols else t.grid[2])
        sum_dy, sum_dy_xmu = torch.empty((2, P, C), device=x.device, dtype=torch.float32)
        kernels._grad_sums_kernel[t.grid](dy, x, save_mean, sum_dy, sum_dy_xmu, C=C,
                                          **_launch_args(layout, t))
        block_p, block_c = _finalize_blocks(P, C)
        kernels._finalize_grads_kernel[(triton.cdiv(C, block_c),)](
            sum_dy, sum_dy_xmu, P, C, save_invstd, dweight, dbias,
            BLOCK_P=block_p, BLOCK_C=block_c, num_warps=_num_warps(block_p * block_c))
        kernels._grad_input_kernel[t.grid](
            dy, x, dx, save_mean, save_invstd, w, dweight, dbias, float(x.numel() // C),
            HAS_WEIGHT=weight is not None, **_launch_args(layout, t))
    if weight is not None and weight.dtype != torch.float32:
        dweight, dbias = dweight.to(weight.dtype), dbias.to(weight.dtype)
    return dx, dweight, dbias

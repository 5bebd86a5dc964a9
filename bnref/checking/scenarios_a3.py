"""Runs inside the grading kernel: A3's scenarios (Triton wrappers on the kernel's device).

Each scenario moves the grader's tensors to the device the notebook's
kernels run on (``"cuda"`` where there is a GPU, else the CPU for Triton's
interpreter), calls the student's wrapper under the watcher of
:mod:`bnref.checking.watch_kernels`, and answers with plain data: what the
wrapper returned and the torch calls the watcher saw. The trusted grader
(:mod:`grader.checks.a3`) computes every expected value itself, on the CPU
in float64, and applies every rule, the 40% bandwidth rule included.

Nothing here computes batch norm statistics. The stand-in for ``bn_stats``
that isolates Part 2 (and Part 4) from Part 1 is a lookup table: it returns
the grader's precomputed mean and variance for the exact tensor the check
sends, and refuses any other call.

The bandwidth scenario times the student's kernels with
``triton.testing.do_bench`` here, in the student's process: those times are
reported as data and could be forged by student code (the remaining risk of
Part 4, 2 points; see :mod:`grader.checks.a3`).
"""
from bnref.checking.driver import lookup, reported, scenario
from bnref.checking.watch_kernels import watch


def device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _on(value, where):
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(where)
    if isinstance(value, (list, tuple)):
        return type(value)(_on(v, where) for v in value)
    return value


def table_bn_stats(entries, miss, where):
    """A ``bn_stats`` that knows only the grader's inputs.

    ``entries``: ``[{"x": tensor, "returns": (mean, var)}, ...]``; a call
    whose argument equals one entry's ``x`` exactly (same shape, dtype and
    values) returns copies of that entry's tensors on ``where``; any other
    call raises ``AssertionError(miss)``. It computes nothing.
    """
    import torch

    tables = [(entry["x"], tuple(t.to(where) for t in entry["returns"])) for entry in entries]

    def bn_stats(x, *args, **kwargs):
        if isinstance(x, torch.Tensor) and not args and not kwargs:
            host = x.detach().to("cpu")
            for want, returns in tables:
                if host.shape == want.shape and host.dtype == want.dtype and bool(torch.equal(host, want)):
                    return tuple(t.clone() for t in returns)
        raise AssertionError(miss)

    return bn_stats


class _Replaced:
    """Put ``name = value`` in the notebook's namespace for a block, then restore it."""

    _ABSENT = object()

    def __init__(self, ns, name, value):
        self.ns, self.name, self.value = ns, name, value

    def __enter__(self):
        self.saved = self.ns.get(self.name, self._ABSENT)
        if self.value is not None:
            self.ns[self.name] = self.value

    def __exit__(self, *exc):
        if self.value is None:
            return
        if self.saved is self._ABSENT:
            self.ns.pop(self.name, None)
        else:
            self.ns[self.name] = self.saved


@scenario
def a3_call(ns, fn, args, bn_stats=None):
    """Call one wrapper on the kernel's device under the watcher.

    Args:
        fn: the notebook's wrapper (``bn_stats``, ``bn_forward``, ``bn_backward``).
        args: its arguments; tensors are moved to the kernel's device.
        bn_stats: ``{"entries", "miss"}`` of :func:`table_bn_stats`, put in
            place of the notebook's ``bn_stats`` for the call.

    Returns:
        ``{"returned": what the wrapper returned or raised, "watched": [torch
        calls the wrapper made outside the allowed set], "device": device}``.
    """
    where = device()
    function = lookup(ns, fn)
    args = _on(list(args), where)
    stand_in = table_bn_stats(bn_stats["entries"], bn_stats["miss"], where) if bn_stats else None
    with _Replaced(ns, "bn_stats", stand_in), watch() as seen:
        returned = reported(function, *args)
    return {"returned": returned, "watched": sorted(set(seen)), "device": where}


@scenario
def a3_device(ns):
    """The device the kernels would run on (nothing else runs)."""
    return device()


def timing_device():
    """Where Part 4 times the kernels: the GPU (the grader asks only where there is one)."""
    return "cuda"


@scenario
def a3_bandwidth(ns, seed, n, gamma, beta, eps, mean, var, rows, miss):
    """Part 4 on a GPU: one checked call of each wrapper, then their times with ``do_bench``.

    ``x = randn(n, n) * 2 + 1`` and ``dy = randn(n, n)`` are drawn from a
    CPU generator seeded with ``seed`` (the grader draws the same ones) and
    moved to the GPU: too large to travel. While ``bn_forward`` runs, the
    notebook's ``bn_stats`` returns the grader's ``(mean, var)`` when called
    on that very ``x`` (an identity test, free) and raises ``AssertionError(miss)``
    otherwise.

    Returns:
        ``{"watched", "forward": returned or raised, "backward": ..., "y_rows",
        "dx_rows", "ms": {"copy", "forward", "backward"}}`` (``ms`` only when
        both calls returned three tensors).
    """
    import torch
    from triton.testing import do_bench

    where = timing_device()
    generator = torch.Generator().manual_seed(int(seed))
    x = (torch.randn(n, n, generator=generator) * 2 + 1).to(where)
    dy = torch.randn(n, n, generator=generator).to(where)
    gamma, beta = gamma.to(where), beta.to(where)
    stats = (mean.to(where), var.to(where))

    def bn_stats(t, *args, **kwargs):
        if t is x and not args and not kwargs:
            return stats
        raise AssertionError(miss)

    forward, backward = lookup(ns, "bn_forward"), lookup(ns, "bn_backward")
    answer = {}
    with _Replaced(ns, "bn_stats", bn_stats):
        with watch() as seen:
            answer["forward"] = fwd = reported(forward, x, gamma, beta, eps)
            ok = isinstance(fwd, (tuple, list)) and len(fwd) == 3
            answer["backward"] = bwd = reported(backward, dy, x, gamma, fwd[1], fwd[2]) if ok else None
        answer["watched"] = sorted(set(seen))
        tensors = [t for t in (*fwd, *bwd) if isinstance(t, torch.Tensor)] if ok and isinstance(
            bwd, (tuple, list)) and len(bwd) == 3 else []
        if len(tensors) != 6 or fwd[0].shape != x.shape or bwd[0].shape != x.shape:
            # Too large to send whole: what came back, as shapes and type names.
            answer["forward"], answer["backward"] = _outline(fwd), _outline(bwd)
            return answer
        index = torch.as_tensor(rows, device=fwd[0].device)
        answer["forward"] = (fwd[0][index], fwd[1], fwd[2])
        answer["backward"] = (bwd[0][index], bwd[1], bwd[2])
        saved_mean, saved_invstd = fwd[1], fwd[2]
        del fwd, bwd, tensors
        copy = torch.empty_like(x)
        try:
            answer["ms"] = {
                "copy": float(do_bench(lambda: copy.copy_(x))),
                "forward": float(do_bench(lambda: forward(x, gamma, beta, eps))),
                "backward": float(do_bench(lambda: backward(dy, x, gamma, saved_mean, saved_invstd))),
            }
        except Exception as err:  # the student's exception while timed, reported as data
            answer["ms"] = err
    return answer


def _outline(value):
    """A returned value as data small enough to send: exceptions as they are, tensors as shapes."""
    import torch

    if isinstance(value, Exception) or value is None:
        return value
    if isinstance(value, torch.Tensor):
        return {"tensor of shape": list(value.shape)}
    if isinstance(value, (tuple, list)):
        return tuple(_outline(v) for v in value)
    return type(value).__name__

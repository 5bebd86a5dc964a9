"""Checks of A3 (batch norm as Triton kernels): every graded cell, visible rules and fresh cases.

Profile ``triton``: the grading kernel has torch and Triton (its interpreter
where there is no GPU), every library normalization routine refuses to run
and ``bnref.triton``/``bnref.functional`` are absent, so a part cannot
delegate to them. The scenarios (:mod:`bnref.checking.scenarios_a3`) run the
student's wrappers on the kernel's device; every reference here is computed
on the CPU in float64 from the very float32 values the kernel received.

The rule "arithmetic only inside ``@triton.jit`` kernels" is watched in the
kernel (:mod:`bnref.checking.watch_kernels`) and reported as data: a part
fails when the report names any torch call. Student code can switch that
watcher off (it runs in the student's process): a documented remaining risk.

Part 4 (``bn_bandwidth``) cannot be timed from here. Where this grader has no
GPU the part fails with "not graded here: no GPU" and nothing is timed.
With a GPU, the scenario times the wrappers with ``triton.testing.do_bench``
in the student's process and reports the milliseconds; this side checks the
timed calls' results and applies the 40% rule. Those times are measured in
the student's process and could be forged by student code: the remaining
risk of this part (2 points).
"""
import functools

import numpy as np

from bnref.checking import codec
from grader import checks
from grader.checks import array, fail, require

A3 = "a3_triton_batchnorm"
check = functools.partial(checks.check, A3)

KERNELS_ONLY = ("this part's arithmetic must run inside @triton.jit kernels; the wrapper may only allocate "
                "tensors, read shapes and launch kernels, but your code called torch's {calls}")
NO_REFERENCE = ("this part must be implemented without the course's reference code (bnref.triton, "
                "bnref.functional) or a library normalization routine, which grading does not provide: "
                "{fn} raised {raised!r}")
NO_GPU = ("bandwidth not measured: no GPU. Part 4 is not graded here: this grading machine has no GPU, so the "
          "bandwidth cannot be measured (0 of 2 points here; your instructor grades this part on a GPU machine)")
STATS_MISS = ("bn_forward called bn_stats with something other than its input x: call bn_stats(x) on the x "
              "it was given")


def _torch():
    import torch

    return torch


def f32(t):
    """A float64 tensor rounded to float32: what the kernel receives."""
    return t.float()


def call(fn, *args, bn_stats=None):
    request = {"scenario": "a3_call", "fn": fn, "args": list(args)}
    if bn_stats is not None:
        request["bn_stats"] = bn_stats
    return request


def stats_table(*xs):
    """The lookup table standing in for ``bn_stats``: each x's float32 mean and biased variance."""
    entries = []
    for x in xs:
        xd = x.double()
        entries.append({"x": x, "returns": (xd.mean(dim=0).float(), xd.var(dim=0, unbiased=False).float())})
    return {"entries": entries, "miss": STATS_MISS}


def answered(result, fn, length):
    """The wrapper's returned values, after the watcher's report; fails with the student's message."""
    if not isinstance(result, dict) or "returned" not in result:
        fail(f"the answer to this part is malformed ({type(result).__name__})")
    value = result["returned"]
    if isinstance(value, codec.Raised):
        if value.type in ("ModuleNotFoundError", "ImportError") and "bnref" in value.message:
            fail(NO_REFERENCE.format(fn=fn, raised=value))
        fail(f"{fn} raised {value!r}")
    watched = result.get("watched") or []
    if watched:
        fail(KERNELS_ONLY.format(calls=", ".join(sorted(set(map(str, watched))))))
    if isinstance(value, codec.Opaque):
        fail(f"{fn} returned {value!r}, which is not a value the assignment asks for")
    if not isinstance(value, (tuple, list)) or len(value) != length:
        what = f"a {type(value).__name__} of {len(value)} items" if isinstance(value, (tuple, list)) \
            else type(value).__name__
        fail(f"{fn} must return {length} values, got {what}")
    return value


def values(value, what):
    """A returned tensor as a float64 NumPy array (shape kept)."""
    return array(value, what)


def allclose(got, want, rtol, atol):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    return got.shape == want.shape and bool(np.all(np.isfinite(got))) and bool(
        np.allclose(got, want, rtol=rtol, atol=atol))


def _generator(rng):
    return _torch().Generator().manual_seed(int(rng.integers(0, 2**62)))


def _int(g, low, high):
    return int(_torch().randint(low, high, (), generator=g))


# --- Part 1: statistics ----------------------------------------------------

def _verify_stats(x, rules):
    """``rules``: ``{"shape": message, "mean": (rtol, atol, message), "var": (rtol, atol, message)}``."""
    xd = x.double()
    want = {"mean": xd.mean(dim=0).numpy(), "var": xd.var(dim=0, unbiased=False).numpy()}
    C = x.shape[1]

    def verify(result):
        mean, var = answered(result, "bn_stats", 2)
        mean, var = values(mean, "mean"), values(var, "var")
        require(mean.shape == (C,) and var.shape == (C,), rules["shape"])
        for name, got in (("mean", mean), ("var", var)):
            rtol, atol, message = rules[name]
            require(allclose(got, want[name], rtol, atol), message)

    return verify


@check("bn_stats", profile="triton")
def bn_stats(rng):
    torch = _torch()
    g = _generator(rng)
    # The visible test's rules and shapes (the second is larger than one block in both directions).
    for shape in ((37, 5), (130, 70)):
        x = f32(torch.randn(*shape, generator=g, dtype=torch.float64) * 2 + 3)
        yield call("bn_stats", x), _verify_stats(x, {
            "shape": "mean and var must have shape (C,)",
            "mean": (0, 1e-4, f"the grid must cover every channel, the loop every row: mean wrong for {shape}"),
            "var": (0, 1e-4, f"biased (divide by N), masked-out elements left out: var wrong for {shape}")})
    # Fresh shapes (odd sizes, sizes that are not powers of two, more than one block) and scales.
    shapes = [(2 * _int(g, 1, 40) + 1, 2 * _int(g, 1, 25) + 1), (_int(g, 2, 90), _int(g, 1, 70)),
              (_int(g, 65, 130), _int(g, 33, 50))]
    for N, C in shapes:
        x = f32(torch.randn(N, C, generator=g, dtype=torch.float64)
                * (torch.rand(C, generator=g, dtype=torch.float64) * 3 + 0.5)
                + torch.randn(C, generator=g, dtype=torch.float64) * 4)
        yield call("bn_stats", x), _verify_stats(x, {
            "shape": f"mean and var must have shape (C,) = ({C},)",
            "mean": (1e-5, 1e-5, f"mean is wrong for x of shape {(N, C)}"),
            "var": (1e-4, 1e-5, f"var is wrong for x of shape {(N, C)} (biased, per channel, masked-out "
                                "elements left out?)")})
    # A large mean: E[x^2] - E[x]^2 cancels catastrophically in float32.
    N, C = _int(g, 40, 120), _int(g, 3, 20)
    x = f32(torch.randn(N, C, generator=g, dtype=torch.float64) + 1e4)
    yield call("bn_stats", x), _verify_stats(x, {
        "shape": f"mean and var must have shape (C,) = ({C},)",
        "mean": (1e-6, 0, "mean is wrong for an input with mean 1e4"),
        "var": (2e-2, 0, "var is wrong for an input with mean 1e4 and standard deviation 1: is the formula "
                         "numerically stable?")})


# --- Part 2: forward -------------------------------------------------------

def _verify_forward(x, gamma, beta, eps, rules):
    xd, gd, bd = x.double(), gamma.double(), beta.double()
    mean, var = xd.mean(dim=0), xd.var(dim=0, unbiased=False)
    invstd = 1 / np.sqrt(var.numpy() + eps)
    want_y = (gd * (xd - mean) * (var + eps).rsqrt() + bd).numpy()
    # The mean the stand-in returned: float32, as the table sends it.
    table_mean = mean.float().double().numpy()
    N, C = x.shape

    def verify(result):
        y, got_mean, got_invstd = answered(result, "bn_forward", 3)
        y, got_mean, got_invstd = values(y, "y"), values(got_mean, "mean"), values(got_invstd, "invstd")
        require(y.shape == (N, C), f"y must have x's shape {(N, C)}, got {y.shape}")
        require(got_mean.shape == (C,) and got_invstd.shape == (C,), "mean and invstd must have shape (C,)")
        require(allclose(got_invstd, invstd, *rules["invstd"][:2]), rules["invstd"][2])
        require(allclose(y, want_y, *rules["y"][:2]), rules["y"][2])
        require(allclose(got_mean, table_mean, *rules["mean"][:2]), rules["mean"][2])

    return verify


@check("bn_forward", profile="triton")
def bn_forward(rng):
    torch = _torch()
    g = _generator(rng)
    # The visible test: bn_stats replaced by a table of the right answers for these x; a large eps,
    # so that where it goes shows.
    for shape in ((37, 5), (130, 70)):
        x = f32(torch.randn(*shape, generator=g, dtype=torch.float64) * 2 + 1)
        gamma = f32(torch.rand(shape[1], generator=g, dtype=torch.float64) + 0.5)
        beta = f32(torch.randn(shape[1], generator=g, dtype=torch.float64))
        yield call("bn_forward", x, gamma, beta, 0.5, bn_stats=stats_table(x)), _verify_forward(x, gamma, beta, 0.5, {
            "invstd": (0, 1e-4, f"eps goes inside the square root: invstd must be 1 / sqrt(var + eps) ({shape})"),
            "y": (0, 1e-4, f"the grid must cover every tile: y must be gamma * (x - mean) * invstd + beta ({shape})"),
            "mean": (0, 1e-4, f"mean must be the one bn_stats returned ({shape})")})
    # Fresh shapes and values, one with channel means near 1e4.
    cases = [(2 * _int(g, 1, 40) + 1, 2 * _int(g, 1, 25) + 1, 3.0), (_int(g, 65, 150), _int(g, 33, 70), 3.0),
             (_int(g, 40, 100), _int(g, 3, 20), 1e4)]
    for N, C, shift in cases:
        x = f32(torch.randn(N, C, generator=g, dtype=torch.float64)
                * (torch.rand(C, generator=g, dtype=torch.float64) + 0.3)
                + torch.randn(C, generator=g, dtype=torch.float64) * shift)
        gamma, beta = (f32(torch.randn(C, generator=g, dtype=torch.float64)) for _ in range(2))
        eps = float(rng.uniform(1e-3, 1e-1))
        tol = 1e-4 if shift < 100 else 2e-2  # float32 statistics of values near 1e4 carry errors near 1e-3
        yield call("bn_forward", x, gamma, beta, eps, bn_stats=stats_table(x)), _verify_forward(x, gamma, beta, eps, {
            "invstd": (1e-4, 0, "invstd is wrong (1 / sqrt(var + eps))"),
            "y": (tol, tol, f"y is wrong for x of shape {(N, C)} with channel means up to {shift:g}"),
            "mean": (1e-5, 1e-5, "the returned mean is wrong")})


# --- Part 3: backward ------------------------------------------------------

def backward_reference(x, gamma, dy, eps=1e-5):
    """(mean, invstd) saved by the forward pass and (dx, dgamma, dbeta), float64, by autograd."""
    torch = _torch()
    xd, gd = x.double().requires_grad_(), gamma.double().requires_grad_()
    bd = torch.zeros_like(gd, requires_grad=True)
    y = torch.nn.functional.batch_norm(xd, None, None, gd, bd, training=True, eps=eps)
    grads = torch.autograd.grad(y, (xd, gd, bd), dy.double())
    with torch.no_grad():
        mean, invstd = xd.mean(dim=0), (xd.var(dim=0, unbiased=False) + eps).rsqrt()
    return mean.detach(), invstd.detach(), [t.numpy() for t in grads]


def _verify_backward(want, label, tolerance):
    def verify(result):
        got = answered(result, "bn_backward", 3)
        for name, g, w in zip(("dx", "dgamma", "dbeta"), got, want):
            g = values(g, name)
            require(g.shape == w.shape, f"{name} must have shape {w.shape}, got {g.shape}")
            rtol, atol = tolerance(w)
            require(allclose(g, w, rtol, atol), f"{name} {label}")

    return verify


@check("bn_backward", profile="triton")
def bn_backward(rng):
    torch = _torch()
    g = _generator(rng)
    # The visible test's shapes (the second is larger than one block in both directions).
    for shape in ((37, 5), (100, 40)):
        x = f32(torch.randn(*shape, generator=g, dtype=torch.float64) * 2 + 1)
        gamma = f32(torch.rand(shape[1], generator=g, dtype=torch.float64) + 0.5)
        dy = f32(torch.randn(*shape, generator=g, dtype=torch.float64))
        mean, invstd, want = backward_reference(x, gamma, dy)
        yield (call("bn_backward", dy, x, gamma, f32(mean), f32(invstd)),
               _verify_backward(want, f"does not match autograd for x of shape {shape}", lambda w: (0, 1e-4)))
    shapes = [(2 * _int(g, 2, 40) + 1, 2 * _int(g, 1, 25) + 1), (_int(g, 65, 150), _int(g, 33, 70))]
    for N, C in shapes:
        x = f32(torch.randn(N, C, generator=g, dtype=torch.float64) * 2
                + torch.randn(C, generator=g, dtype=torch.float64) * 3)
        gamma, dy = f32(torch.randn(C, generator=g, dtype=torch.float64)), f32(
            torch.randn(N, C, generator=g, dtype=torch.float64))
        mean, invstd, want = backward_reference(x, gamma, dy)
        yield (call("bn_backward", dy, x, gamma, f32(mean), f32(invstd)),
               _verify_backward(want, f"is wrong for x of shape {(N, C)}",
                                lambda w: (1e-4, 1e-5 * (float(np.abs(w).max()) + 1.0))))


# --- Part 4: bandwidth on a GPU --------------------------------------------

BANDWIDTH_N = 8192
BANDWIDTH_ROWS = 16


def _gpu():
    torch = _torch()
    return bool(torch.cuda.is_available())


def _column_sums(seed, n, eps):
    """x and dy as the scenario draws them; per-channel float64 statistics and sums, in slabs of rows."""
    torch = _torch()
    generator = torch.Generator().manual_seed(int(seed))
    x = torch.randn(n, n, generator=generator) * 2 + 1
    dy = torch.randn(n, n, generator=generator)
    slabs = range(0, n, 1024)
    total = sum(x[i:i + 1024].double().sum(dim=0) for i in slabs)
    mean = total / n
    var = sum(((x[i:i + 1024].double() - mean) ** 2).sum(dim=0) for i in slabs) / n
    invstd = (var + eps).rsqrt()
    dbeta = sum(dy[i:i + 1024].double().sum(dim=0) for i in slabs)
    dgamma = sum((dy[i:i + 1024].double() * (x[i:i + 1024].double() - mean) * invstd).sum(dim=0) for i in slabs)
    return x, dy, mean, var, invstd, dbeta, dgamma


@check("bn_bandwidth", profile="triton")
def bn_bandwidth(rng):
    if not _gpu():
        # Nothing is timed or run: the part is not measurable here.
        def not_here(result):
            fail(NO_GPU)

        yield {"scenario": "a3_device"}, not_here
        return
    torch = _torch()
    n, eps = BANDWIDTH_N, 1e-5
    seed = int(rng.integers(0, 2**62))
    g = _generator(rng)
    gamma = f32(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
    beta = f32(torch.randn(n, generator=g, dtype=torch.float64))
    rows = sorted(int(r) for r in rng.choice(n, size=BANDWIDTH_ROWS, replace=False))
    x, dy, mean, var, invstd, dbeta, dgamma = _column_sums(seed, n, eps)
    xr, dyr = x[rows].double(), dy[rows].double()
    gd, bd = gamma.double(), beta.double()
    x_hat = (xr - mean) * invstd
    want_y = (gd * x_hat + bd).numpy()
    want_dx = (gd * invstd * (dyr - dbeta / n - x_hat * dgamma / n)).numpy()
    request = {"scenario": "a3_bandwidth", "seed": seed, "n": n, "gamma": gamma, "beta": beta, "eps": eps,
               "mean": mean.float(), "var": var.float(), "rows": rows, "miss": STATS_MISS}

    def verify(result):
        if not isinstance(result, dict):
            fail(f"the answer to this part is malformed ({type(result).__name__})")
        forward = answered({"returned": result.get("forward"), "watched": result.get("watched")}, "bn_forward", 3)
        backward = answered({"returned": result.get("backward"), "watched": []}, "bn_backward", 3)
        for name, got in (("y", forward[0]), ("dx", backward[0])):
            require(not isinstance(got, dict), f"{name} must have shape {(n, n)}, got {got}")
        require(allclose(values(forward[0], "y"), want_y, 0, 1e-3), "the timed forward pass gives wrong results")
        require(allclose(values(backward[0], "dx"), want_dx, 0, 1e-3), "the timed backward pass gives wrong results")
        ms = result.get("ms")
        if isinstance(ms, codec.Raised):
            fail(f"a timed call raised {ms!r}")
        if not (isinstance(ms, dict) and all(isinstance(ms.get(k), (int, float)) and ms[k] > 0
                                             for k in ("copy", "forward", "backward"))):
            fail("the grader got no times for this part")
        moved = {"copy": 2 * 4 * n * n, "forward": 2 * 4 * n * n, "backward": 3 * 4 * n * n}
        gbs = {k: moved[k] / ms[k] / 1e6 for k in moved}  # bytes per millisecond -> GB/s
        measured = ", ".join(f"{k} {v:.0f} GB/s ({v / gbs['copy']:.0%} of copy)" for k, v in gbs.items())
        for k in ("forward", "backward"):
            require(gbs[k] >= 0.4 * gbs["copy"],
                    f"{k} reaches {gbs[k] / gbs['copy']:.0%} of the copy bandwidth, below 40% ({measured})")

    yield request, verify


"""bnref.triton against PyTorch: forward, backward, eval, running statistics, module.

Without a GPU the kernels run through Triton's interpreter (bnref.triton sets
TRITON_INTERPRET=1 itself when there is no GPU), so the shapes stay small and
awkward (no powers of two) and ``bt.tiling`` forces tiny tiles and many
programs per channel: the split reduction and the deterministic Chan merge that
large inputs take on a GPU. The oracle is ``torch.nn.functional.batch_norm`` in
float64 on the same (already rounded) input, with autograd for the gradients.
"""

import importlib.util

import pytest
import torch
import torch.nn.functional as F

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed: bnref.triton cannot run", allow_module_level=True)
# Imported before triton itself, so that it can switch on the interpreter.
import bnref.triton as bt  # noqa: E402

if bt.MODE == "unavailable":
    pytest.skip(f"bnref.triton cannot run here: {bt.WHY}", allow_module_level=True)

DEVICE = "cuda" if bt.MODE == "gpu" else "cpu"
# Output tolerance: float32 arithmetic, then rounding to the output dtype.
TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def split(x):
    """Small tiles and odd program rectangles: several tiles and programs per channel."""
    S = x[0, 0].numel()
    if S > 1 and x.is_contiguous():  # NCHW: split the rows and the pixels of each channel
        return bt.tiling(block_r=2, block_k=8, rows_per_prog=3, cols_per_prog=24)
    R = x.numel() // x.shape[1]  # channels last: split the rows into about 5 programs
    return bt.tiling(block_r=4, block_k=4, rows_per_prog=R // 5 + 1)

CASES = [  # (shape, channels_last)
    ((7, 5), False),
    ((3, 5, 7, 9), False),
    ((3, 5, 7, 9), True),
    ((4, 3, 1, 1), False),
]


def make(shape, dtype, channels_last=False, mean=2.0, std=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * std + mean).to(dtype)
    C = shape[1]
    w = torch.rand(C, generator=g) + 0.5
    b = torch.randn(C, generator=g)
    dy = torch.randn(shape, generator=g).to(dtype)
    if channels_last:
        x, dy = (t.contiguous(memory_format=torch.channels_last) for t in (x, dy))
    return [t.to(DEVICE) for t in (x, w, b, dy)]


def reference(x, w, b, dy, rm=None, rv=None, momentum=0.1, eps=1e-5):
    """F.batch_norm in float64: y, dx, dw, db (running stats updated in place)."""
    xd = x.double().requires_grad_()
    wd, bd = (None if t is None else t.double().requires_grad_() for t in (w, b))
    rmd, rvd = (None if t is None else t.double() for t in (rm, rv))
    y = F.batch_norm(xd, rmd, rvd, wd, bd, True, momentum, eps)
    y.backward(dy.double())
    if rm is not None:
        rm.copy_(rmd), rv.copy_(rvd)
    grads = [None if t is None else t.grad for t in (wd, bd)]
    return y.detach(), xd.grad, *grads


def close(actual, expected, tol, what):
    err = (actual.double() - expected.double()).abs().max().item()
    scale = max(1.0, expected.double().abs().max().item())
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol * scale:.3g}"


def test_mode_is_reported():
    assert bt.MODE == ("gpu" if torch.cuda.is_available() else "interpreter")
    assert ("interpreter" if bt.MODE == "interpreter" else "compiled kernels") in bt.describe()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape,channels_last", CASES)
def test_train_forward_and_running_stats(shape, channels_last, dtype):
    x, w, b, dy = make(shape, dtype, channels_last)
    C = shape[1]
    rm, rv = torch.randn(C, device=DEVICE), torch.rand(C, device=DEVICE) + 0.5
    rm_ref, rv_ref = rm.clone(), rv.clone()
    assert "single pass" in bt.explain(x)  # small channels: one tile each, x read once
    y, mean, invstd = bt.batch_norm_train(x, w, b, rm, rv, momentum=0.3)
    y_ref, *_ = reference(x, w, b, dy, rm_ref, rv_ref, momentum=0.3)
    assert y.dtype == dtype and y.shape == x.shape and y.stride() == x.stride()
    close(y, y_ref, TOL[dtype], "y")
    dims = [0] + list(range(2, x.dim()))
    close(mean, x.double().mean(dims), 1e-6, "save_mean")
    close(invstd, (x.double().var(dims, unbiased=False) + 1e-5).rsqrt(), 1e-5, "save_invstd")
    close(rm, rm_ref, 1e-6, "running_mean")
    close(rv, rv_ref, 1e-5, "running_var")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape,channels_last", CASES[:3])
def test_backward_matches_autograd(shape, channels_last, dtype):
    x, w, b, dy = make(shape, dtype, channels_last)
    _, mean, invstd = bt.batch_norm_train(x, w, b, None, None)
    dx, dw, db = bt.batch_norm_backward(dy, x, w, mean, invstd)
    _, dx_ref, dw_ref, db_ref = reference(x, w, b, dy)
    assert dx.dtype == dtype and dx.stride() == x.stride()
    close(dx, dx_ref, TOL[dtype], "dx")
    close(dw, dw_ref, 1e-5, "dweight")
    close(db, db_ref, 1e-5, "dbias")


@pytest.mark.parametrize("shape,channels_last", CASES[:3])
def test_split_reduction_many_programs(shape, channels_last):
    """Tiny tiles: each channel is summarized by several programs, then merged."""
    x, w, b, dy = make(shape, torch.float32, channels_last, seed=1)
    rm, rv = torch.zeros(shape[1], device=DEVICE), torch.ones(shape[1], device=DEVICE)
    rm_ref, rv_ref = rm.clone(), rv.clone()
    with split(x):
        assert "split reduction" in bt.explain(x)
        y, mean, invstd = bt.batch_norm_train(x, w, b, rm, rv)
        dx, dw, db = bt.batch_norm_backward(dy, x, w, mean, invstd)
        y_eval = bt.batch_norm_eval(x, w, b, rm, rv)
    y_ref, dx_ref, dw_ref, db_ref = reference(x, w, b, dy, rm_ref, rv_ref)
    for got, want, what in ((y, y_ref, "y"), (dx, dx_ref, "dx"), (dw, dw_ref, "dweight"),
                            (db, db_ref, "dbias"), (rm, rm_ref, "running_mean"),
                            (rv, rv_ref, "running_var")):
        close(got, want, 2e-5, what)
    close(y_eval, F.batch_norm(x.double(), rm_ref.double(), rv_ref.double(), w.double(),
                                b.double()), 2e-5, "eval")


@pytest.mark.parametrize("channels_last", [False, True])
def test_default_split_when_a_channel_does_not_fit_one_tile(channels_last):
    x, w, b, dy = make((2, 2, 70, 70), torch.float32, channels_last, seed=6)
    assert "split reduction" in bt.explain(x)
    y, mean, invstd = bt.batch_norm_train(x, w, b)
    dx, dw, db = bt.batch_norm_backward(dy, x, w, mean, invstd)
    y_ref, dx_ref, dw_ref, db_ref = reference(x, w, b, dy)
    close(y, y_ref, 2e-5, "y")
    close(dx, dx_ref, 2e-5, "dx")
    close(dw, dw_ref, 1e-4, "dweight")
    close(db, db_ref, 1e-4, "dbias")


def test_nchw_split_across_columns():
    """NCHW with a single row (N = 1): the pixels of a channel are split between programs."""
    x, w, b, dy = make((1, 3, 11, 13), torch.float32, seed=2)
    with bt.tiling(block_r=1, block_k=16, cols_per_prog=40):
        y, mean, invstd = bt.batch_norm_train(x, w, b)
        dx, dw, db = bt.batch_norm_backward(dy, x, w, mean, invstd)
    y_ref, dx_ref, dw_ref, db_ref = reference(x, w, b, dy)
    close(y, y_ref, 2e-5, "y")
    close(dx, dx_ref, 2e-5, "dx")
    close(dw, dw_ref, 1e-5, "dweight")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_large_mean_is_stable(dtype, channels_last):
    """Mean 1e4, std 1: E[x^2] - E[x]^2 in float32 would lose every digit of the variance.

    In bfloat16 the input itself rounds to a few values 64 apart near 1e4; the
    check is then that exactly those values are normalized, with no overflow or NaN.
    """
    x, w, b, dy = make((6, 3, 5, 7), dtype, channels_last, mean=1e4, std=1.0, seed=3)
    y_ref, dx_ref, *_ = reference(x, w, b, dy)
    # float32 itself spaces numbers near 1e4 by 1e-3, hence the looser bound.
    tol = 3e-3 if dtype == torch.float32 else TOL[dtype]
    for path in (split(x), bt.tiling()):  # split reduction, then the single pass
        with path:
            y, mean, invstd = bt.batch_norm_train(x, w, b)
            dx, *_ = bt.batch_norm_backward(dy, x, w, mean, invstd)
        close(y, y_ref, tol, "y")
        close(dx, dx_ref, tol, "dx")


def test_strided_input_is_copied_not_misread():
    """Neither NCHW nor channels-last strides (a transposed view): normalized like torch does."""
    x, w, b, dy = make((3, 4, 6, 5), torch.float32)
    x = x.transpose(2, 3)
    dy = dy.transpose(2, 3)
    y, mean, invstd = bt.batch_norm_train(x, w, b)
    dx, dw, db = bt.batch_norm_backward(dy, x, w, mean, invstd)
    y_ref, dx_ref, dw_ref, db_ref = reference(x, w, b, dy)
    close(y, y_ref, 2e-5, "y")
    close(dx, dx_ref, 2e-5, "dx")
    close(dw, dw_ref, 1e-5, "dweight")


def test_results_are_deterministic():
    x, w, b, dy = make((5, 4, 3, 7), torch.float32, seed=4)
    with split(x):
        first = bt.batch_norm_train(x, w, b)
        second = bt.batch_norm_train(x, w, b)
    for a, c in zip(first, second):
        assert torch.equal(a, c)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape,channels_last", CASES[1:3])
def test_eval_matches_torch(shape, channels_last, dtype):
    x, w, b, _ = make(shape, dtype, channels_last)
    rm, rv = torch.randn(shape[1], device=DEVICE), torch.rand(shape[1], device=DEVICE) + 0.5
    y = bt.batch_norm_eval(x, w, b, rm, rv, eps=1e-3)
    y_ref = F.batch_norm(x.double(), rm.double(), rv.double(), w.double(), b.double(), eps=1e-3)
    assert y.dtype == dtype and y.stride() == x.stride()
    close(y, y_ref, TOL[dtype], "y")


def test_without_affine_parameters():
    x, _, _, dy = make((6, 4), torch.float32)
    _, mean, invstd = bt.batch_norm_train(x, None, None, None, None)
    y = bt.batch_norm_train(x, None, None, None, None)[0]
    dx, _, db = bt.batch_norm_backward(dy, x, None, mean, invstd)
    y_ref, dx_ref, *_ = reference(x, None, None, dy)
    close(y, y_ref, 2e-5, "y")
    close(dx, dx_ref, 2e-5, "dx")
    close(db, dy.double().sum(0), 1e-5, "dbias")


@pytest.mark.parametrize("shape,momentum", [((5, 3, 4, 6), 0.1), ((9, 6), None)])
def test_module_matches_torch_over_steps(shape, momentum):
    torch.manual_seed(5)
    C = shape[1]
    ours = bt.BatchNorm2d(C, momentum=momentum).to(DEVICE)
    theirs = (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d)(
        C, momentum=momentum).to(DEVICE)
    theirs.load_state_dict(ours.state_dict())
    for step in range(3):
        x = (torch.randn(shape) * (step + 1) + step).to(DEVICE)
        dy = torch.randn(shape, device=DEVICE)
        outs = []
        for m in (ours, theirs):
            m.zero_grad()
            xi = x.clone().requires_grad_()
            y = m(xi)
            y.backward(dy)
            outs.append((y.detach(), xi.grad, m.weight.grad, m.bias.grad))
            with torch.no_grad():
                m.weight -= 0.1 * m.weight.grad
        for got, want, what in zip(outs[0], outs[1], ("y", "dx", "dweight", "dbias")):
            close(got, want, 5e-5, f"step {step} {what}")
    for key, value in theirs.state_dict().items():
        close(ours.state_dict()[key], value, 5e-5, key)
    ours.eval(), theirs.eval()
    x = torch.randn(shape, device=DEVICE, requires_grad=True)
    y = ours(x)
    y.backward(torch.ones_like(y))
    y_ref = theirs(x.detach())
    close(y, y_ref, 5e-5, "eval y")
    close(x.grad, (theirs.weight / (theirs.running_var + theirs.eps).sqrt()).detach()
          .view((1, -1) + (1,) * (len(shape) - 2)).expand(shape), 5e-5, "eval dx")


@pytest.mark.parametrize("kwargs", [dict(affine=False), dict(track_running_stats=False)])
def test_module_options_match_torch(kwargs):
    ours = bt.BatchNorm2d(4, **kwargs).to(DEVICE)
    theirs = torch.nn.BatchNorm2d(4, **kwargs).to(DEVICE)
    x = torch.randn(3, 4, 5, 2, device=DEVICE) * 2 + 1
    for train in (True, False):
        ours.train(train), theirs.train(train)
        close(ours(x), theirs(x), 5e-5, f"y (train={train})")
    assert ours.state_dict().keys() == theirs.state_dict().keys()


def test_bad_input_raises_clear_errors(monkeypatch):
    x, w, b, dy = make((4, 3, 2, 2), torch.float32)
    cases = [
        (lambda: bt.batch_norm_train(x[0]), "x must have shape"),
        (lambda: bt.batch_norm_train(x.long()), "x must be float32"),
        (lambda: bt.batch_norm_train(x.double()), "got torch.float64"),
        (lambda: bt.batch_norm_train(x, torch.ones(4)), r"weight must be a tensor of shape \(3,\)"),
        (lambda: bt.batch_norm_train(x, None, torch.ones(3, dtype=torch.int32)),
         "bias must be floating"),
        (lambda: bt.batch_norm_train(x[:1, :, :1, :1]), "more than 1 value per channel"),
        (lambda: bt.batch_norm_train(x, running_mean=torch.zeros(3)), "both be tensors"),
        (lambda: bt.batch_norm_train(x, momentum=1.5), "momentum must be"),
        (lambda: bt.batch_norm_train(x, eps=0.0), "eps must be"),
        (lambda: bt.batch_norm_eval(x, w, b), "needs running_mean"),
        (lambda: bt.batch_norm_backward(dy[:2], x, w, w, w), "dy must be a tensor of x's shape"),
        (lambda: bt.BatchNorm2d(3)(x[0]), "expected 2D"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match="power of two"):
        with bt.tiling(block_r=3):
            pass
    monkeypatch.setattr(bt.ops, "MODE", "gpu")
    if not x.is_cuda:
        with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
            bt.batch_norm_train(x)


def test_benchmark_bookkeeping():
    """benchmarks/gpu_bn.py's byte accounting, file naming and table, checked by hand."""
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_bn.py"
    spec = importlib.util.spec_from_file_location("gpu_bn", path)
    gpu_bn = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_bn)
    # bf16 (2 bytes), 1000 elements: forward reads x and writes y, backward also reads dy.
    assert gpu_bn.pass_bytes(1000, 2, "forward") == 4000
    assert gpu_bn.pass_bytes(1000, 2, "backward") == 6000
    assert gpu_bn.gbps(3e9, 1000.0) == pytest.approx(3.0)
    assert gpu_bn.device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    row = {"shape": [2, 3], "format": "nchw", "dtype": "float32", "pass": "eval",
           "copy_gbps": 2000.0, "torch_ms": 2.0, "torch_gbps": 500.0, "torch_pct_copy": 25.0,
           "compile_ms": None, "bnref_ms": 1.0, "bnref_gbps": 1000.0, "bnref_pct_copy": 50.0,
           "speedup_vs_torch": 2.0}
    table = gpu_bn.format_table([row], markdown=True).splitlines()
    assert table[2] == ("| 2x3 | nchw | float32 | eval | 2000 | 500 (25%) | - | 1000 (50%) "
                        "| 2.00x | - |")


def _gpu_bn():
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_bn.py"
    spec = importlib.util.spec_from_file_location("gpu_bn", path)
    gpu_bn = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_bn)
    return gpu_bn


def test_benchmark_sweep_dry_run(tmp_path):
    """--sweep tries every candidate tiling, checks each against torch and keeps the fastest."""
    import json
    gpu_bn = _gpu_bn()
    grid = dict(tiles={"NCHW": [(2, 8), (4, 4)], "channels-last": [(4, 4)]}, warps=(2, 4),
                programs_per_sm=(4,))
    configs = gpu_bn.sweep_configs("NCHW", True, **grid)
    assert configs[0] is None and configs[1:3] == [{"num_warps": 2}, {"num_warps": 4}]
    assert {"block_r": 4, "block_k": 4, "num_warps": 4, "programs_per_sm": 4} in configs
    assert len(configs) == 1 + 2 + 2 * 2 and len(gpu_bn.sweep_configs("channels-last", False,
                                                                     **grid)) == 1 + 2
    # Tiles over 32 values per thread (they spilled registers on sm_90) are not tried.
    big = dict(tiles={"NCHW": [(8, 1024)]}, warps=(4, 8), programs_per_sm=(4,))
    assert [c["num_warps"] for c in gpu_bn.sweep_configs("NCHW", False, **big)[1:]] == [8]
    out = tmp_path / "sweep.json"
    gpu_bn.main(["--dry-run", "--sweep", "--shapes", "2", "--out", str(out)])
    record = json.loads(out.read_text())
    assert record["sweep"] and record["dry_run"] and len(record["results"]) == 2  # fp32, bf16
    for case in record["results"]:
        assert case["format"] == "channels_last" and case["layout"] == "channels-last"
        assert [t["config"] for t in case["trials"]][0] == "default"
        for which in ("forward", "backward", "eval"):
            fastest = min(t[which]["ms"] for t in case["trials"])
            assert case["best"][which]["ms"] == fastest
    with pytest.raises(SystemExit, match="--shapes takes indices 0..2"):
        gpu_bn.main(["--dry-run", "--sweep", "--shapes", "7"])
    # A candidate that cannot run (here: a tile tiling() rejects) is recorded and skipped.
    bad = dict(tiles={"NCHW": [(3, 8), (2, 8)], "channels-last": [(4, 4)]}, warps=(4,),
               programs_per_sm=(4,))
    case = gpu_bn.sweep_case(bt, (2, 3, 5, 7), "nchw", "float32", DEVICE, gpu_bn.cpu_timer, bad)
    errors = [t for t in case["trials"] if "error" in t]
    assert [t["config"]["block_r"] for t in errors] == [3]
    assert "block_r must be a power of two, got 3" in errors[0]["error"]
    assert all(b["config"] == "default" or b["config"].get("block_r") != 3
               for b in case["best"].values())


def test_benchmark_records_merge(tmp_path):
    """Runs over parts of the shape list merge into one record; mismatched runs are refused."""
    import json
    gpu_bn = _gpu_bn()
    parts = []
    for i in ("0", "1,2"):
        out = tmp_path / f"part{i}.json"
        gpu_bn.main(["--dry-run", "--shapes", i, "--out", str(out)])
        parts.append(out)
    merged_path = tmp_path / "merged.json"
    merged = gpu_bn.main(["--merge", *map(str, parts), "--out", str(merged_path)])
    records = [json.loads(p.read_text()) for p in parts]
    assert json.loads(merged_path.read_text()) == merged
    assert merged["results"] == records[0]["results"] + records[1]["results"]
    assert len(merged["results"]) == 3 * 2 * 3  # 3 shapes x 2 dtypes x 3 passes
    assert merged["date"] == max(r["date"] for r in records) and merged["merged_from"] == 2
    with pytest.raises(ValueError, match="appears in more than one record"):
        gpu_bn.merge_records([records[0], records[0]])
    with pytest.raises(ValueError, match=r"records differ in \['triton'\]"):
        gpu_bn.merge_records([records[0], dict(records[1], triton="0.0")])


def test_importing_triton_first_is_reported(tmp_path):
    """The interpreter must be on before triton is imported; if not, MODE and calls say so."""
    import subprocess
    import sys
    script = (
        "import os, torch\n"
        "os.environ.pop('TRITON_INTERPRET', None)\n"
        "import triton\n"
        "if not torch.cuda.is_available():\n"
        "    import bnref.triton as bt\n"
        "    print(bt.MODE)\n"
        "    try:\n"
        "        bt.batch_norm_train(torch.randn(4, 3))\n"
        "    except RuntimeError as e:\n"
        "        print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    if torch.cuda.is_available():
        assert out.stdout == ""  # with a GPU there is nothing to report
    else:
        mode, message = out.stdout.splitlines()[:2]
        assert mode == "unavailable"
        assert "triton was imported before TRITON_INTERPRET=1" in message


@pytest.mark.parametrize("shape,channels_last", [
    ((8192, 1024), False), ((65536, 256), False), ((256, 64, 56, 56), False),
    ((64, 256, 28, 28), False), ((64, 256, 28, 28), True), ((1, 3, 1024, 1024), False),
])
def test_gpu_plans_cover_the_input_and_fill_an_h100(shape, channels_last, monkeypatch):
    """The split plan for the benchmark shapes, with an H100's 132 SMs (no kernel runs)."""
    monkeypatch.setattr(bt.ops, "_target_programs", lambda device: 4 * 132)
    x = torch.empty(shape, device="meta")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    layout, _ = bt.ops._layout(x)
    t = bt.ops._plan(layout, x.device)
    G, n_r, n_k = t.grid
    # The program rectangles tile each plane exactly: none missing, none empty.
    assert (n_r - 1) * t.rows_per_prog < layout.R <= n_r * t.rows_per_prog
    assert (n_k - 1) * t.cols_per_prog < layout.K <= n_k * t.cols_per_prog
    assert G * n_r * n_k >= 132 and max(n_r, n_k) <= 65535
    assert t.block_r * t.block_k <= 4096


class _GridRecorder:
    """Stands in for a kernel: records each launch's grid, then launches the real kernel."""

    def __init__(self, kernel, name, log):
        self.kernel, self.name, self.log = kernel, name, log

    def __getitem__(self, grid):
        self.log.append((self.name, tuple(grid)))
        return self.kernel[grid]


@pytest.mark.parametrize("shape,channels_last,forced", [
    ((7, 5), False, False), ((3, 5, 7, 9), False, False), ((3, 5, 7, 9), True, False),
    ((3, 5, 7, 9), False, True), ((40, 6, 3, 3), True, True), ((13, 5), False, True),
])
def test_plan_is_what_the_launchers_launch(shape, channels_last, forced, monkeypatch):
    """bt.plan's path and grids are the grids the kernels are actually launched with."""
    x, w, b, dy = make(shape, torch.float32, channels_last)
    log = []
    for name in ("_train_single_pass_kernel", "_stats_kernel", "_normalize_kernel",
                 "_backward_single_pass_kernel", "_grad_sums_kernel", "_grad_input_kernel"):
        monkeypatch.setattr(bt.ops.kernels, name,
                            _GridRecorder(getattr(bt.ops.kernels, name), name, log))
    with split(x) if forced else bt.tiling(single_pass=None):
        p = bt.plan(x)
        y, mean, invstd = bt.batch_norm_train(x, w, b)
        bt.batch_norm_backward(dy, x, w, mean, invstd)
        bt.batch_norm_eval(x, w, b, mean, 1.0 / invstd**2)
    assert p.layout == ("channels-last" if channels_last or x.dim() == 2 else "NCHW")
    if p.single_pass:
        assert log == [("_train_single_pass_kernel", p.grid),
                       ("_backward_single_pass_kernel", p.grid), ("_normalize_kernel", p.eval_grid)]
        assert p.passes == {"forward": 2, "backward": 3, "eval": 2} and p.partials == 0
    else:
        assert log == [("_stats_kernel", p.grid), ("_normalize_kernel", p.grid),
                       ("_grad_sums_kernel", p.grid), ("_grad_input_kernel", p.grid),
                       ("_normalize_kernel", p.eval_grid)]
        assert p.passes == {"forward": 3, "backward": 5, "eval": 2}
        # One partial summary per program that touches a channel.
        G, n_r, n_k = p.grid
        assert p.partials == (n_r if p.layout == "channels-last" else n_r * n_k)
    assert forced is not p.single_pass  # the small inputs fit one tile unless forced to split
    assert p.programs == p.grid[0] * p.grid[1] * p.grid[2]


def test_plan_for_a_gpu_without_one():
    """sm_count plans as on a GPU: more SMs, more programs per channel, never fewer than asked."""
    x = torch.empty((256, 64, 56, 56), device="meta")  # 51 M values, nothing allocated
    small, big = bt.plan(x, sm_count=8), bt.plan(x, sm_count=132)
    assert not big.single_pass and big.layout == "NCHW" and big.planes == 64
    assert big.rows == 256 and big.cols == 56 * 56
    assert small.programs >= 8 and big.programs >= 132 and big.programs > small.programs
    assert big.partials > small.partials >= 1
    assert "split reduction" in bt.explain(x, sm_count=132)
    assert bt.MIN_PASSES == {"forward": 2, "backward": 3, "eval": 2}
    for bad in (0, -3, 2.5, True, "132"):
        with pytest.raises(ValueError, match=rf"sm_count must be a positive int or None, got {bad!r}"):
            bt.plan(x, sm_count=bad)
    with pytest.raises(ValueError, match=r"x must be a tensor of shape \(N, C\) or \(N, C, H, W\), got \(3,\)"):
        bt.plan(torch.empty(3))


def test_tuning_knobs_change_the_launch_not_the_result(monkeypatch):
    """tiling(num_warps=..., programs_per_sm=...) reach the launches; results still match torch."""
    big = torch.empty((256, 64, 56, 56), device="meta")
    small = torch.empty((32, 512, 14, 14), device="meta")  # a channel fits one tile
    default = bt.plan(big, sm_count=132)
    with bt.tiling(programs_per_sm=8):
        more = bt.plan(big, sm_count=132)
        assert bt.plan(small, sm_count=132).single_pass  # the knob leaves the path alone
    assert more.programs == 2 * default.programs and more.partials == 2 * default.partials
    x, w, b, dy = make((5, 6, 7, 3), torch.float32)
    launches = []

    class Recorder:
        def __init__(self, kernel, name):
            self.kernel, self.name = kernel, name

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launches.append((self.name, kwargs.get("num_warps")))
                return self.kernel[grid](*args, **kwargs)
            return launch

    for name in ("_stats_kernel", "_normalize_kernel", "_finalize_stats_kernel"):
        monkeypatch.setattr(bt.ops.kernels, name, Recorder(getattr(bt.ops.kernels, name), name))
    with split(x), bt.tiling(num_warps=2):
        y, _, _ = bt.batch_norm_train(x, w, b)
    # The streaming kernels take the forced warps; the tiny merge kernel keeps its own.
    assert ("_stats_kernel", 2) in launches and ("_normalize_kernel", 2) in launches
    assert [n for n, warps in launches if n == "_finalize_stats_kernel" and warps == 2] == []
    close(y, reference(x, w, b, dy)[0], TOL[torch.float32], "y with forced warps")
    for bad, message in ((3, "num_warps must be a power of two from 1 to 32, got 3"),
                         (64, "num_warps must be a power of two from 1 to 32, got 64"),
                         (0, "num_warps must be a positive int, got 0")):
        with pytest.raises(ValueError, match=message):
            with bt.tiling(num_warps=bad):
                pass
    with pytest.raises(ValueError, match="programs_per_sm must be a positive int, got 1.5"):
        with bt.tiling(programs_per_sm=1.5):
            pass


def test_interpreter_version_problem_is_named():
    """Triton < 3.7's interpreter with NumPy >= 2.4 is refused with the reason, not a crash."""
    problem = bt.ops._interpreter_problem
    assert problem("3.7.1", "2.4.6") == "" and problem("3.7.0", "2.4.0") == ""
    assert problem("3.6.0", "2.3.5") == "" and problem("3.5.1", "1.26.4") == ""
    message = problem("3.6.0", "2.4.6")
    assert message.startswith("Triton 3.6.0's interpreter cannot run with NumPy 2.4.6")
    assert message.endswith("install triton>=3.7 or numpy<2.4")
    assert problem("3.6.0+git2f3e", "2.5.0rc1") != ""  # local and pre-release tags

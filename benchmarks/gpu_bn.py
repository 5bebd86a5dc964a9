"""Batch norm on the GPU: bnref.triton against PyTorch and the copy bandwidth.

For every shape, dtype and memory format, one run times

* ``copy``: ``out.copy_(x)``, the bandwidth ceiling (read x, write out);
* ``torch``: ``torch.nn.functional.batch_norm`` (cuDNN or PyTorch's native kernels);
* ``compile``: ``torch.compile`` of the same call;
* ``bnref``: :mod:`bnref.triton`;

for three passes: forward in training mode, backward, and eval. Times are
medians from ``triton.testing.do_bench`` (L2 cache flushed before each run).
Effective bandwidth counts the bytes a pass must move at least: forward and
eval read x and write y, backward reads x and dy and writes dx. Before timing,
bnref.triton's result is checked against ``F.batch_norm`` (as in llm.c's
dev/cuda: check, then time).

    python benchmarks/gpu_bn.py                # GPU: table + benchmarks/results/<device>.json
    python benchmarks/gpu_bn.py --markdown     # the table as Markdown (for a report)
    python benchmarks/gpu_bn.py --dry-run      # no GPU: tiny CPU shapes through the interpreter
    python benchmarks/gpu_bn.py --compile-only # no GPU: compile every kernel for sm_90
    python benchmarks/gpu_bn.py --sweep        # GPU: try tile sizes, warps and programs per SM

The dry run exercises everything but the timing (wall-clock of interpreted
kernels means nothing) and writes no file unless ``--out`` is given.
"""

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import sys
import time

import torch
import torch.nn.functional as F

SHAPES = [  # (shape, memory format)
    ((8192, 1024), "nchw"),
    ((65536, 256), "nchw"),
    ((256, 64, 56, 56), "nchw"),
    ((64, 256, 28, 28), "nchw"),
    ((32, 512, 14, 14), "nchw"),
    ((256, 64, 56, 56), "channels_last"),
    ((64, 256, 28, 28), "channels_last"),
    ((32, 512, 14, 14), "channels_last"),
]
DRY_SHAPES = [((6, 5), "nchw"), ((2, 3, 5, 7), "nchw"), ((2, 3, 5, 7), "channels_last")]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
PASSES = ("forward", "backward", "eval")
IMPLS = ("torch", "compile", "bnref")
# Tolerance of bnref.triton against F.batch_norm on the same input.
TOL = {torch.float32: 1e-4, torch.bfloat16: 4e-2}

# --sweep: bnref.triton.tiling() settings to try, per layout (see bt.plan):
# "NCHW" tiles are a few rows of many pixels, "channels-last" tiles are rows x
# a block of channels. Each is tried with several warp counts and programs per
# SM; the defaults of bnref.triton are timed too, as the baseline.
SWEEP_TILES = {
    "NCHW": [(4, 1024), (8, 1024), (2, 2048), (8, 512), (16, 256)],
    "channels-last": [(64, 64), (128, 32), (32, 128), (128, 64), (256, 16)],
}
SWEEP_WARPS = (4, 8, 16)
SWEEP_PROGRAMS_PER_SM = (4, 8)
DRY_SWEEP = dict(tiles={"NCHW": [(2, 8)], "channels-last": [(4, 4)]}, warps=(4,),
                 programs_per_sm=(4,))


def pass_bytes(numel, element_size, which):
    """Bytes a pass must move: forward/eval read x, write y; backward reads x and dy, writes dx."""
    tensors = {"forward": 2, "eval": 2, "backward": 3, "copy": 2}[which]
    return tensors * numel * element_size


def gbps(nbytes, ms):
    return None if ms is None else nbytes / (ms * 1e-3) / 1e9


def device_slug(name):
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (the results file name)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def make_inputs(shape, fmt, dtype, device):
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(shape, generator=g).mul_(2.0).add_(0.5).to(device=device, dtype=dtype)
    dy = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    if fmt == "channels_last":
        x, dy = (t.contiguous(memory_format=torch.channels_last) for t in (x, dy))
    C = shape[1]
    params = dict(weight=torch.rand(C, generator=g).add_(0.5).to(device),
                  bias=torch.randn(C, generator=g).to(device),
                  running_mean=torch.zeros(C, device=device),
                  running_var=torch.ones(C, device=device))
    return x, dy, params


def torch_calls(x, dy, p, compiled):
    """forward, backward and eval closures for F.batch_norm (eager or compiled)."""
    def train(x_, w, b):
        return F.batch_norm(x_, p["running_mean"], p["running_var"], w, b, True, 0.1, 1e-5)

    def infer(x_):
        return F.batch_norm(x_, p["running_mean"], p["running_var"], p["weight"], p["bias"],
                            False, 0.1, 1e-5)

    if compiled:
        torch._dynamo.reset()  # fresh cache: no recompile limit, no stale guards
        train, infer = torch.compile(train, dynamic=False), torch.compile(infer, dynamic=False)
    leaves = [t.detach().clone().requires_grad_() for t in (x, p["weight"], p["bias"])]
    y = train(*leaves)
    return {
        "forward": lambda: train(x, p["weight"], p["bias"]),
        "backward": lambda: torch.autograd.grad(y, leaves, dy, retain_graph=True),
        "eval": lambda: infer(x),
    }


def bnref_calls(bt, x, dy, p):
    w, b = p["weight"], p["bias"]
    _, mean, invstd = bt.batch_norm_train(x, w, b)
    return {
        "forward": lambda: bt.batch_norm_train(x, w, b, p["running_mean"], p["running_var"]),
        "backward": lambda: bt.batch_norm_backward(dy, x, w, mean, invstd),
        "eval": lambda: bt.batch_norm_eval(x, w, b, p["running_mean"], p["running_var"]),
    }


def check(bt_calls, torch_eager, dtype):
    """Max error of bnref.triton against eager PyTorch, per pass; raises past tolerance."""
    errors = {}
    for which in PASSES:
        ours, ref = bt_calls[which](), torch_eager[which]()
        ours = ours[0] if isinstance(ours, tuple) else ours
        ref = ref[0] if isinstance(ref, tuple) else ref
        err = (ours.float() - ref.float()).abs().max().item()
        if not err <= TOL[dtype] * max(1.0, ref.float().abs().max().item()):
            raise AssertionError(f"bnref.triton {which} differs from F.batch_norm by {err:.3g}")
        errors[which] = err
    return errors


def torch_backend(fn):
    """'cuDNN' or 'native', from the names of the kernels the call launches."""
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        names = sorted({e.name for e in prof.events()
                        if e.device_type == torch.autograd.DeviceType.CUDA})
    except Exception as e:  # the profiler is optional; say why it is missing
        return f"unknown ({type(e).__name__})", []
    return ("cuDNN" if any("cudnn" in n.lower() for n in names) else "native"), names


def gpu_timer(fn):
    """Median ms of do_bench: L2 flushed before each call, so every pass starts from DRAM."""
    import triton.testing
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def graph_timer(fn):
    """Median ms per call replayed from a CUDA graph: no launch overhead, but no L2 flush either
    (tensors under the 50 MB of an H100's L2 stay cached between calls)."""
    import triton.testing
    return triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")


def cpu_timer(fn, repeats=3):
    """Dry run only: wall-clock milliseconds of interpreted kernels (meaningless as a speed)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run_case(bt, shape, fmt, dtype_name, device, timer, with_compile):
    dtype = DTYPES[dtype_name]
    x, dy, p = make_inputs(shape, fmt, dtype, device)
    out = torch.empty_like(x)
    calls = {"torch": torch_calls(x, dy, p, compiled=False), "bnref": bnref_calls(bt, x, dy, p)}
    if with_compile:
        calls["compile"] = torch_calls(x, dy, p, compiled=True)
    errors = check(calls["bnref"], calls["torch"], dtype)
    copy_ms = timer(lambda: out.copy_(x))
    copy_gbps = gbps(pass_bytes(x.numel(), x.element_size(), "copy"), copy_ms)
    rows = []
    for which in PASSES:
        nbytes = pass_bytes(x.numel(), x.element_size(), which)
        row = {"shape": list(shape), "format": fmt, "dtype": dtype_name, "pass": which}
        row.update(bytes=nbytes, copy_ms=copy_ms, copy_gbps=copy_gbps,
                   bnref_max_error=errors[which])
        for impl in IMPLS:
            ms = timer(calls[impl][which]) if impl in calls else None
            row[f"{impl}_ms"], row[f"{impl}_gbps"] = ms, gbps(nbytes, ms)
            row[f"{impl}_pct_copy"] = None if ms is None else 100 * gbps(nbytes, ms) / copy_gbps
        row["speedup_vs_torch"] = row["torch_ms"] / row["bnref_ms"]
        if device == "cuda":
            row["torch_backend"], row["torch_kernels"] = torch_backend(calls["torch"][which])
        rows.append(row)
    return rows


def _num(v):
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def _cell(row, impl):
    if row[f"{impl}_ms"] is None:
        return "-"
    return f"{_num(row[f'{impl}_gbps'])} ({row[f'{impl}_pct_copy']:.0f}%)"


def format_table(rows, markdown=False):
    """One line per (shape, format, dtype, pass): GB/s and % of copy per implementation."""
    head = ["shape", "format", "dtype", "pass", "copy GB/s", "torch", "compile", "bnref",
            "speedup", "torch backend"]
    lines = []
    for r in rows:
        lines.append(["x".join(map(str, r["shape"])), r["format"], r["dtype"], r["pass"],
                      _num(r["copy_gbps"]), _cell(r, "torch"), _cell(r, "compile"),
                      _cell(r, "bnref"), f"{r['speedup_vs_torch']:.2f}x",
                      r.get("torch_backend", "-")])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(out + ["| " + " | ".join(line) + " |" for line in lines])
    widths = [max(len(str(c)) for c in col) for col in zip(head, *lines)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths))
                     for line in [head] + lines)


def environment(bt, device):
    info = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                python=platform.python_version(), torch=torch.__version__,
                triton=__import__("triton").__version__, bnref_triton_mode=bt.MODE,
                cuda=torch.version.cuda)
    if device == "cuda":
        info.update(device=torch.cuda.get_device_name(),
                    cudnn=torch.backends.cudnn.version(),
                    cudnn_enabled=torch.backends.cudnn.enabled)
    else:
        info.update(device=f"CPU ({platform.processor() or platform.machine()}), dry run")
    return info


def compile_check(arch=90, sweep=False):
    """Compile every kernel for a CUDA target without a GPU; registers and spills per kernel.

    Triton's wheel ships ptxas, so the whole pipeline down to a cubin runs on
    any machine: a kernel that only the interpreter accepts fails here. With
    ``sweep``, also every tile and warp count that ``--sweep`` would try.
    """
    from bnref.triton import kernels, ops
    cases = [(fn, consts, None) for fn, consts in _compile_cases(kernels)]
    if sweep:
        cases += list(_sweep_compile_cases(kernels))
    for fn, consts, warps in cases:
        for dtype in ("fp32", "bf16"):
            tile = consts.get("BLOCK_R", consts.get("BLOCK_P", 1)) * consts.get(
                "BLOCK_K", consts.get("BLOCK_C", 1))
            warps = warps or ops._num_warps(tile)
            regs, stack = _compile_one(fn, consts, dtype, warps, arch)
            flags = ", ".join(f"{k}={v}" for k, v in consts.items())
            print(f"sm_{arch} {fn.__name__:32s} {dtype} warps={warps:2d} registers={regs:>3s} "
                  f"stack={stack} ({flags})", flush=True)


def _compile_one(fn, consts, dtype, warps, arch):
    """Compile one specialization to a cubin; returns (registers, stack bytes) as strings."""
    import subprocess
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")
    floats = {"eps", "momentum", "count"}
    sig = {n: "constexpr" if n in consts else "fp32" if n in floats
           else (f"*{dtype}" if n[:2] in ("x_", "y_", "dy", "dx") else "*fp32")
           if n.endswith("_ptr") else "i32" for n in fn.arg_names}
    src = ASTSource(fn=fn, signature=sig,
                    constexprs={(fn.arg_names.index(n),): v for n, v in consts.items()})
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                              options=dict(num_warps=warps))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        usage = subprocess.run([cuobjdump, "--dump-resource-usage", f.name],
                               capture_output=True, text=True).stdout
    found = re.search(r"REG:(\d+).*?STACK:(\d+)", usage)
    return found.groups() if found else ("?", "?")


def _sweep_compile_cases(kernels):
    """The streaming kernels at every tile and warp count of the sweep."""
    for layout, tiles in SWEEP_TILES.items():
        cic = layout == "channels-last"
        for block_r, block_k in tiles:
            tile = dict(CHANNELS_IN_COLS=cic, BLOCK_R=block_r, BLOCK_K=block_k)
            for warps in (w for w in SWEEP_WARPS if _fits_registers(block_r * block_k, w)):
                yield kernels._stats_kernel, tile, warps
                yield kernels._grad_sums_kernel, tile, warps
                yield kernels._normalize_kernel, dict(tile, FROM_VAR=False, HAS_WEIGHT=True,
                                                      HAS_BIAS=True), warps
                yield kernels._grad_input_kernel, dict(tile, HAS_WEIGHT=True), warps


def _compile_cases(kernels):
    """Each kernel with the constexprs of both layouts at the launcher's default tile sizes."""
    for cic, (block_r, block_k) in ((True, (64, 64)), (False, (4, 1024))):
        tile = dict(CHANNELS_IN_COLS=cic, BLOCK_R=block_r, BLOCK_K=block_k)
        yield kernels._stats_kernel, tile
        yield kernels._grad_sums_kernel, tile
        yield kernels._normalize_kernel, dict(tile, FROM_VAR=not cic, HAS_WEIGHT=True,
                                              HAS_BIAS=True)
        yield kernels._grad_input_kernel, dict(tile, HAS_WEIGHT=True)
        one = dict(CHANNELS_IN_COLS=cic, BLOCK_R=256 if cic else 32, BLOCK_K=32 if cic else 256)
        yield kernels._train_single_pass_kernel, dict(one, HAS_WEIGHT=True, HAS_BIAS=True,
                                                      UPDATE_RUNNING=True)
        yield kernels._backward_single_pass_kernel, dict(one, HAS_WEIGHT=True)
    yield kernels._finalize_stats_kernel, dict(UPDATE_RUNNING=True, BLOCK_P=32, BLOCK_C=128)
    yield kernels._finalize_grads_kernel, dict(BLOCK_P=32, BLOCK_C=128)


def sweep_configs(layout, single_pass, tiles, warps, programs_per_sm):
    """bt.tiling keyword sets to try for one input: None (the defaults) first."""
    configs = [None]
    if single_pass:  # keep the single pass, vary only its warps
        configs += [dict(num_warps=w) for w in warps]
    configs += [dict(block_r=r, block_k=k, num_warps=w, programs_per_sm=p)
                for r, k in tiles[layout] for w in warps for p in programs_per_sm
                if _fits_registers(r * k, w)]
    return configs


def _fits_registers(tile_elems, warps):
    """At most 32 values per thread: compiled for sm_90 (--compile-only --sweep), 64 spilled
    registers to the stack in the normalize and dx kernels, 32 did not."""
    return tile_elems <= 32 * 32 * warps


def sweep_case(bt, shape, fmt, dtype_name, device, timer, grid):
    """Time every candidate tiling of one case; returns a record with the best per pass."""
    import contextlib
    dtype = DTYPES[dtype_name]
    x, dy, p = make_inputs(shape, fmt, dtype, device)
    out = torch.empty_like(x)
    copy_ms = timer(lambda: out.copy_(x))
    copy_gbps = gbps(pass_bytes(x.numel(), x.element_size(), "copy"), copy_ms)
    eager = torch_calls(x, dy, p, compiled=False)
    plan = bt.plan(x)
    trials = []
    for cfg in sweep_configs(plan.layout, plan.single_pass, **grid):
        trial = {"config": cfg or "default"}
        try:  # a candidate that fails to compile, run or match is recorded, not fatal
            with bt.tiling(**cfg) if cfg else contextlib.nullcontext():
                calls = bnref_calls(bt, x, dy, p)
                check(calls, eager, dtype)  # every tiling must still be right
                for which in PASSES:
                    ms = timer(calls[which])
                    nbytes = pass_bytes(x.numel(), x.element_size(), which)
                    trial[which] = {"ms": ms, "pct_copy": 100 * gbps(nbytes, ms) / copy_gbps}
        except Exception as e:
            trial = {"config": cfg or "default", "error": f"{type(e).__name__}: {e}"}
            print(f"  {shape} {fmt} {dtype_name} {trial['config']}: {trial['error']}", flush=True)
        trials.append(trial)
    ok = [t for t in trials if "error" not in t]
    if not ok or "error" in trials[0]:
        raise RuntimeError(f"bnref.triton's defaults failed on {shape} {fmt} {dtype_name}: "
                           f"{trials[0].get('error')}")
    best = {which: min(ok, key=lambda t: t[which]["ms"]) for which in PASSES}
    return {"shape": list(shape), "format": fmt, "dtype": dtype_name, "layout": plan.layout,
            "single_pass": plan.single_pass, "copy_ms": copy_ms, "copy_gbps": copy_gbps,
            "default": trials[0],
            "best": {w: {"config": b["config"], **b[w]} for w, b in best.items()},
            "trials": trials}


def format_sweep(cases):
    """One line per case and pass: default and best % of copy, and the best settings."""
    lines = []
    for c in cases:
        for which in PASSES:
            d, b = c["default"][which], c["best"][which]
            cfg = b["config"] if b["config"] == "default" else ", ".join(
                f"{k}={v}" for k, v in b["config"].items())
            lines.append(f"{'x'.join(map(str, c['shape'])):>14s} {c['format']:13s} "
                         f"{c['dtype']:8s} {which:8s} default {d['pct_copy']:5.1f}% "
                         f"best {b['pct_copy']:5.1f}% ({cfg})")
    return "\n".join(lines)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true",
                    help="tiny CPU shapes through Triton's interpreter; checks, no real timing")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--compile-only", type=int, metavar="SM", nargs="?", const=90,
                    help="no GPU needed: compile every kernel for sm_SM (default 90) and "
                         "print registers per thread")
    ap.add_argument("--timer", choices=("do_bench", "cudagraph"), default="do_bench",
                    help="do_bench (default; flushes L2) or CUDA-graph replay (no launch overhead)")
    ap.add_argument("--sweep", action="store_true",
                    help="try bnref.triton tilings (tile, warps, programs per SM) per case and "
                         "write benchmarks/results/<device>-sweep.json")
    ap.add_argument("--shapes", metavar="I,J,...",
                    help="only these cases of the shape list, by index (0-based)")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="merge records of the same device and versions written by runs over "
                         "parts of the shape list (--shapes) into one; writes --out or "
                         "benchmarks/results/<device>.json")
    ap.add_argument("--out",
                    help="JSON path (default on the GPU: benchmarks/results/<device>.json)")
    return ap.parse_args(argv)


SAME_RUN_KEYS = ("device", "torch", "triton", "cuda", "cudnn", "timer", "dry_run")


def merge_records(records):
    """One record from several runs over parts of the shape list (same device and versions)."""
    if not records:
        raise ValueError("merge_records needs at least one record, got none")
    first = records[0]
    for r in records[1:]:
        differ = [k for k in SAME_RUN_KEYS if r.get(k) != first.get(k)]
        if differ:
            raise ValueError(f"records differ in {differ}: "
                             f"{[(first.get(k), r.get(k)) for k in differ]}; merge only runs "
                             "of one machine and software")
    seen, rows = set(), []
    for r in records:
        for row in r["results"]:
            key = (tuple(row["shape"]), row["format"], row["dtype"], row["pass"])
            if key in seen:
                raise ValueError(f"case {key} appears in more than one record")
            seen.add(key)
            rows.append(row)
    merged = dict(first, results=rows)
    merged["date"] = max(r["date"] for r in records)
    merged["merged_from"] = len(records)
    return merged


def main(argv=None):
    args = parse_args(argv)
    if args.merge:
        records = []
        for path in args.merge:
            with open(path) as f:
                records.append(json.load(f))
        record = merge_records(records)
        print(format_table(record["results"], markdown=args.markdown))
        return write_record(record, args.out, dry_run=False, suffix="")
    if args.compile_only:
        os.environ["TRITON_INTERPRET"] = "0"  # compiled kernels, not interpreted ones
        return compile_check(args.compile_only, sweep=args.sweep)
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported
    elif not torch.cuda.is_available():
        sys.exit("benchmarks/gpu_bn.py times CUDA kernels, but torch.cuda.is_available() is False "
                 "here. Run it on a machine with an NVIDIA GPU, or use --dry-run to check the "
                 "script on tiny CPU shapes through Triton's interpreter.")
    import bnref.triton as bt
    print(bt.describe())
    device = "cpu" if args.dry_run else "cuda"
    timers = {"do_bench": gpu_timer, "cudagraph": graph_timer}
    timer = cpu_timer if args.dry_run else timers[args.timer]
    # torch.compile on the CPU needs a C++ toolchain and minutes: GPU runs only.
    with_compile = not (args.dry_run or args.no_compile)
    cases = DRY_SHAPES if args.dry_run else SHAPES
    if args.shapes:
        try:
            cases = [cases[int(i)] for i in args.shapes.split(",")]
        except (ValueError, IndexError):
            sys.exit(f"--shapes takes indices 0..{len(cases) - 1} separated by commas, "
                     f"got {args.shapes!r}")
    if args.sweep:
        return sweep_main(args, bt, device, timer, cases)
    rows = []
    for shape, fmt in cases:
        for dtype_name in DTYPES:
            rows += run_case(bt, shape, fmt, dtype_name, device, timer, with_compile)
    print(format_table(rows, markdown=args.markdown))
    record = dict(environment(bt, device), dry_run=args.dry_run,
                  timer="perf_counter" if args.dry_run else args.timer, results=rows)
    return write_record(record, args.out, args.dry_run, suffix="")


def write_record(record, out, dry_run, suffix):
    """Write ``record`` to ``out``, by default benchmarks/results/<device><suffix>.json.

    A dry run writes only where ``out`` is given (its timings mean nothing).
    """
    if out is None and not dry_run:
        here = os.path.dirname(os.path.abspath(__file__))
        out = os.path.join(here, "results", device_slug(record["device"]) + suffix + ".json")
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(record, f, indent=1)
        print(f"wrote {out}")
    else:
        json.dumps(record)  # the record must serialize even when it is not written
        print("dry run: no file written (pass --out to write one)")
    return record


def sweep_main(args, bt, device, timer, cases):
    grid = DRY_SWEEP if args.dry_run else dict(
        tiles=SWEEP_TILES, warps=SWEEP_WARPS, programs_per_sm=SWEEP_PROGRAMS_PER_SM)
    results = []
    for shape, fmt in cases:
        for dtype_name in DTYPES:
            results.append(sweep_case(bt, shape, fmt, dtype_name, device, timer, grid))
            print(format_sweep(results[-1:]), flush=True)
    record = dict(environment(bt, device), dry_run=args.dry_run, sweep=True,
                  timer="perf_counter" if args.dry_run else args.timer, results=results)
    return write_record(record, args.out, args.dry_run, suffix="-sweep")


if __name__ == "__main__":
    main()

"""The Chapter 10 plotting helpers: roofline, memory order and the benchmark's bars.

Oracles: the roofline formula by hand, torch's own storage order for the
memory layouts, and a real (dry-run) record written by benchmarks/gpu_bn.py
for the bandwidth bars, so the chapter and the benchmark agree on the format.
"""

import json
import os
import pathlib
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from bnref.plotting import (memory_order, plot_bandwidth, plot_memory_order,  # noqa: E402
                            plot_roofline)

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_roofline_is_the_minimum_of_compute_and_bandwidth():
    fig, ax = plt.subplots()
    bw, peaks = 2e12, {"slow": 10e12, "fast": 400e12}
    plot_roofline(ax, bw, peaks, points=[("low", 0.5, "fast"), ("high", 1000.0, "slow", (-5, 5))],
                  intensity_range=(0.1, 1e4))
    for line, peak in zip(ax.lines[:2], peaks.values()):
        inten, flops = line.get_xydata().T
        np.testing.assert_allclose(flops, [min(peak, bw * i) for i in inten])
    # Points: 0.5 FLOP/B is on the slope (1e12), 1000 FLOP/B under the flat 10e12 roof.
    assert ax.lines[3].get_xydata().tolist() == [[0.5, 1e12]]
    assert ax.lines[4].get_xydata().tolist() == [[1000.0, 10e12]]
    assert "ridge at 5 FLOP/B" in ax.get_legend().get_texts()[0].get_text()
    with pytest.raises(ValueError, match="names roof 'tensor', not one of"):
        plot_roofline(ax, bw, peaks, points=[("x", 1.0, "tensor")])
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        plot_roofline(ax, 0, peaks)


@pytest.mark.parametrize("channels_last", [False, True])
def test_memory_order_matches_torch_storage(channels_last):
    shape = (2, 3, 2, 5)
    N, C, H, W = shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    chan = torch.arange(C).view(1, C, 1, 1).expand(shape).contiguous(memory_format=fmt)
    ex = torch.arange(N).view(N, 1, 1, 1).expand(shape).contiguous(memory_format=fmt)
    # The storage itself, read from offset 0 in order.
    stored_c = chan.as_strided((chan.numel(),), (1,)).numpy()
    stored_n = ex.as_strided((ex.numel(),), (1,)).numpy()
    channel, example = memory_order(shape, channels_last)
    np.testing.assert_array_equal(channel, stored_c)
    np.testing.assert_array_equal(example, stored_n)
    fig, ax = plt.subplots()
    plot_memory_order(ax, shape, channels_last, per_row=12)
    faces = [p.get_facecolor() for p in ax.patches]
    assert len(faces) == chan.numel()
    for face, c in zip(faces, stored_c):
        assert face == pytest.approx(to_rgba(f"C{c}", 0.8))
    with pytest.raises(ValueError, match=r"shape must be four positive ints \(N, C, H, W\)"):
        memory_order((2, 3), False)


@pytest.fixture(scope="module")
def dry_record(tmp_path_factory):
    """A real record from the benchmark script (tiny CPU shapes, Triton's interpreter)."""
    out = tmp_path_factory.mktemp("bench") / "dry.json"
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_bn.py"), "--dry-run",
                          "--out", str(out)], capture_output=True, text=True, timeout=300,
                         env=env, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("which", ["forward", "backward", "eval"])
def test_bandwidth_bars_are_the_recorded_percentages(dry_record, which):
    fig, ax = plt.subplots()
    plot_bandwidth(ax, dry_record, which, target=60)
    rows = [r for r in dry_record["results"] if r["pass"] == which]
    assert len(rows) == 6  # 3 dry-run shapes x 2 dtypes
    # No torch.compile in a dry run: its bars are left out, torch and bnref drawn.
    assert [c.get_label() for c in ax.containers] == ["torch", "bnref"]
    for container, impl in zip(ax.containers, ["torch", "bnref"]):
        heights = [bar.get_height() for bar in container]
        assert heights == pytest.approx([r[f"{impl}_pct_copy"] for r in rows])
    assert ax.lines[0].get_ydata()[0] == 60
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "6x5\nNCHW fp32" and labels[-1] == "2x3x5x7\nNHWC bf16"


def test_bandwidth_rejects_what_is_not_a_record(dry_record):
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="which must be one of"):
        plot_bandwidth(ax, dry_record, "train")
    with pytest.raises(ValueError, match="a dict with a 'results' list, got list"):
        plot_bandwidth(ax, [], "eval")
    row = {k: v for k, v in dry_record["results"][0].items() if k != "bnref_pct_copy"}
    with pytest.raises(ValueError, match=r"lacks \['bnref_pct_copy'\]"):
        plot_bandwidth(ax, {"results": [row]}, row["pass"])


def test_roofline_labels_sit_where_asked():
    fig, ax = plt.subplots()
    plot_roofline(ax, 1e12, {"p": 1e13}, points=[("a", 1.0, "p"), ("b", 100.0, "p", (-7, 3))])
    a, b = ax.texts
    assert (a.get_text(), a.xy, a.xyann, a.get_ha()) == ("a", (1.0, 1e12), (6, -12), "left")
    assert (b.get_text(), b.xy, b.xyann, b.get_ha()) == ("b", (100.0, 1e13), (-7, 3), "right")


def _chapter_cell(marker):
    """The source of the Chapter 10 code cell that contains ``marker``."""
    text = (REPO / "book" / "ch10_gpu.md").read_text(encoding="utf-8")
    cells = [c.split("```", 1)[0] for c in text.split("```{code-cell} ipython3")[1:]]
    found = [c for c in cells if marker in c]
    assert len(found) == 1, f"expected one cell with {marker!r}, found {len(found)}"
    return found[0]


def test_chapter_plots_the_newest_benchmark_record(dry_record, tmp_path, monkeypatch):
    """Chapter 10's results cell, run on a results folder like the one a GPU run leaves."""
    cell = _chapter_cell('results = pathlib.Path("..")')
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (tmp_path / "book").mkdir()
    monkeypatch.chdir(tmp_path / "book")  # the chapter runs from book/
    ns = dict(json=json, pathlib=pathlib, plt=plt, plot_bandwidth=plot_bandwidth)
    exec(cell, dict(ns))
    # Nothing but dry runs and sweeps: the cell says there is no record.
    (results / "cpu-dry.json").write_text(json.dumps(dry_record))
    (results / "gpu-sweep.json").write_text(json.dumps(dict(dry_record, dry_run=False,
                                                            sweep=True, results=[])))
    empty = dict(ns)
    exec(cell, empty)
    assert empty["bench_note"].startswith("No GPU record has been committed")
    # Two GPU records: the newer one is drawn, one panel per pass.
    older = dict(dry_record, dry_run=False, device="Old GPU", date="2026-01-01T00:00:00+00:00")
    newer = dict(dry_record, dry_run=False, device="New GPU", date="2026-02-01T00:00:00+00:00",
                 cudnn=91900)
    (results / "old-gpu.json").write_text(json.dumps(older))
    (results / "new-gpu.json").write_text(json.dumps(newer))
    monkeypatch.setattr(plt, "show", lambda: None)
    drawn = dict(ns)
    exec(cell, drawn)
    assert drawn["bench_note"] == "The record is from New GPU on 2026-02-01."
    axes = plt.gcf().axes
    assert [ax.get_title() for ax in axes] == ["forward", "backward", "eval"]
    assert [ax.lines[0].get_ydata()[0] for ax in axes] == [60, 50, 85]  # the targets

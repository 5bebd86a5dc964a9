"""Plotting helpers for the book.

Each helper draws on a matplotlib ``Axes`` it is given (``ax``) and returns
it, so chapters compose figures freely and keep plotting boilerplate out of
the text.
"""


def plot_least_squares_contours(ax, X, y, paths=(), center=None, span=None, levels=15,
                                colors=("C3", "C0", "C2")):
    """Contours of ``mean((X @ w - y)**2) / 2`` over two weights, with optional GD paths.

    Args:
        ax: matplotlib Axes.
        X: (N, 2) inputs; y: (N,) targets.
        paths: sequence of (steps + 1, 2) weight trajectories to draw on top.
        center: (2,) grid centre; the least-squares solution by default.
        span: (2,) half-widths of the grid along w1 and w2; by default large
            enough to hold the paths' starting points.
        levels: number of contour levels (spaced on a square-root scale so the
            valley floor gets lines too).
        colors: line colours of the paths, in order.

    Returns:
        ``ax``.
    """
    import numpy as np

    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]
    center = w_star if center is None else np.asarray(center, dtype=np.float64)
    if span is None:
        starts = [np.abs(np.asarray(p)[0] - center) for p in paths] or [np.ones(2)]
        span = 1.2 * np.max(starts, axis=0) + 1e-9
    w1 = np.linspace(center[0] - span[0], center[0] + span[0], 200)
    w2 = np.linspace(center[1] - span[1], center[1] + span[1], 200)
    W1, W2 = np.meshgrid(w1, w2)
    W = np.stack([W1.ravel(), W2.ravel()])                      # 2, G
    loss = (((X @ W - y[:, None]) ** 2).mean(axis=0) / 2).reshape(W1.shape)
    loss_min = loss.min()
    ax.contour(W1, W2, loss, levels=loss_min + np.linspace(0.03, 1.0, levels) ** 2
               * (loss.max() - loss_min), colors="0.6", linewidths=0.8)
    for path, color in zip(paths, colors):
        path = np.asarray(path)
        ax.plot(path[:, 0], path[:, 1], "-o", color=color, markersize=2.5, linewidth=1)
    ax.plot(*w_star, "k*", markersize=10)
    ax.set_xlim(w1[0], w1[-1])
    ax.set_ylim(w2[0], w2[-1])
    ax.set_xlabel("$w_1$")
    ax.set_ylabel("$w_2$")
    return ax


def plot_layer_histograms(axes, activations, bins=40, value_range=None, color="C0"):
    """One histogram per layer: ``axes[i]`` shows ``activations[i]`` with its mean and std.

    Args:
        axes: sequence of Axes, at least as many as layers.
        activations: sequence of arrays (any shape), one per layer.
        bins: histogram bins.
        value_range: (low, high) of the bins; each layer's own range by default.
        color: bar colour.

    Returns:
        ``axes``.
    """
    import numpy as np

    if len(axes) < len(activations):
        raise ValueError(f"axes must hold at least {len(activations)} Axes, got {len(axes)}")
    for i, (ax, a) in enumerate(zip(axes, activations)):
        a = np.asarray(a).ravel()
        ax.hist(a, bins=bins, range=value_range, color=color)
        ax.set_title(f"layer {i + 1}\nstd {a.std():.2g}", fontsize=8)
        ax.set_yticks([])
        ax.tick_params(axis="x", labelsize=7)
    return axes


def plot_norm_cube(ax, kind, N=6, C=6, HW=5, G=3, color="C0"):
    """The (N, C, H*W) activation cube with the values that share one mean and variance shaded.

    After Figure 2 of Wu & He (2018): batch norm shades one channel over the
    batch and all positions, layer norm one example over all channels and
    positions, instance norm one example and one channel, group norm one
    example and a group of ``C // G`` channels.

    Args:
        ax: matplotlib Axes (2-D; the cube is drawn in oblique projection).
        kind: 'batch', 'layer', 'instance' or 'group'.
        N, C, HW: cells drawn along each axis.
        G: number of groups for ``kind='group'`` (must divide C).
        color: fill colour of the shaded cells.

    Returns:
        ``ax``.
    """
    import numpy as np
    from matplotlib.patches import Polygon

    spans = {"batch": ((0, N), (0, 1)), "layer": ((0, 1), (0, C)),
             "instance": ((0, 1), (0, 1)), "group": ((0, 1), (0, C // G))}
    if kind not in spans:
        raise ValueError(f"kind must be one of {sorted(spans)}, got {kind!r}")
    if kind == "group" and (G < 1 or C % G):
        raise ValueError(f"G must be a positive divisor of C={C}, got {G!r}")
    depth = 0.55 * np.array([np.cos(np.pi / 5), np.sin(np.pi / 5)])

    def P(n, h, c):  # (example, position, channel) -> page coordinates
        return np.array([n, h]) + c * depth

    def face(corners, **kw):
        ax.add_patch(Polygon([P(*p) for p in corners], closed=True, **kw))

    (n0, n1), (c0, c1) = spans[kind]
    fill = dict(facecolor=color, alpha=0.75, edgecolor="none")
    face([(n0, 0, 0), (n1, 0, 0), (n1, HW, 0), (n0, HW, 0)], **fill)          # front
    face([(n0, HW, c0), (n1, HW, c0), (n1, HW, c1), (n0, HW, c1)], **fill)     # top
    if n1 == N:
        face([(N, 0, c0), (N, 0, c1), (N, HW, c1), (N, HW, c0)], **fill)      # right
    grid = dict(color="0.35", linewidth=0.6)
    for n in range(N + 1):
        ax.plot(*np.array([P(n, 0, 0), P(n, HW, 0), P(n, HW, C)]).T, **grid)
    for h in range(HW + 1):
        ax.plot(*np.array([P(0, h, 0), P(N, h, 0), P(N, h, C)]).T, **grid)
    for c in range(C + 1):
        ax.plot(*np.array([P(0, HW, c), P(N, HW, c), P(N, 0, c)]).T, **grid)
    ax.annotate("", P(N, -0.6, 0), P(0, -0.6, 0), arrowprops=dict(arrowstyle="->"))
    ax.text(*P(N / 2, -1.3, 0), "N", ha="center", va="center")
    ax.annotate("", P(-0.6, HW, 0), P(-0.6, 0, 0), arrowprops=dict(arrowstyle="->"))
    ax.text(*P(-1.2, HW / 2, 0), "H, W", ha="center", va="center", rotation=90)
    ax.annotate("", P(N + 0.5, 0, C) + [0.1, -0.3], P(N + 0.5, 0, 0) + [0.1, -0.3],
                arrowprops=dict(arrowstyle="->"))
    ax.text(*(P(N + 0.9, 0, C / 2) + [0.2, -0.5]), "C", ha="center", va="center")
    ax.set_title({"batch": "Batch norm", "layer": "Layer norm", "instance": "Instance norm",
                  "group": f"Group norm (G={G})"}[kind])
    ax.set_aspect("equal")
    far = P(N, HW, C)
    ax.set_xlim(-1.8, far[0] + 1.2)
    ax.set_ylim(-1.9, far[1] + 0.3)
    ax.axis("off")
    return ax


def draw_graph(ax, nodes, edges, fontsize=11, node_color="#eef3fb", edge_color="0.25"):
    """A computational graph as labelled boxes joined by arrows.

    Args:
        ax: the ``Axes`` to draw on; its limits are set to fit the nodes.
        nodes: ``{name: (x, y, label)}`` or ``{name: (x, y, label, facecolor)}``;
            labels may hold mathtext such as ``"$\\hat{x}$"``.
        edges: ``(src, dst)`` or ``(src, dst, label)`` tuples naming nodes.
        fontsize: size of node labels (edge labels are two points smaller).
        node_color: default box fill.
        edge_color: arrow and edge-label colour.

    Returns:
        ax.
    """
    texts = {}
    for name, spec in nodes.items():
        if len(spec) not in (3, 4):
            raise ValueError(f"nodes[{name!r}] must be (x, y, label[, facecolor]), got {spec!r}")
        x, y, label = spec[:3]
        face = spec[3] if len(spec) == 4 else node_color
        texts[name] = ax.text(x, y, label, ha="center", va="center", fontsize=fontsize, zorder=3,
                              bbox=dict(boxstyle="round,pad=0.4", fc=face, ec="0.3"))
    for edge in edges:
        src, dst = edge[0], edge[1]
        for end in (src, dst):
            if end not in texts:
                raise ValueError(f"edge {edge!r} names {end!r}, expected one of {sorted(texts)}")
        # patchA/patchB clip the arrow at the box outlines rather than the centres;
        # drawn after the boxes (higher zorder) so their outlines are placed by then.
        ax.annotate("", xy=texts[dst].get_position(), xytext=texts[src].get_position(),
                    arrowprops=dict(arrowstyle="-|>", color=edge_color, lw=1.2, shrinkA=2,
                                    shrinkB=2, patchA=texts[src].get_bbox_patch(),
                                    patchB=texts[dst].get_bbox_patch()), zorder=4)
        if len(edge) == 3:
            (x0, y0), (x1, y1) = texts[src].get_position(), texts[dst].get_position()
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.15, edge[2], ha="center", va="bottom",
                    fontsize=fontsize - 2, color=edge_color)
    xs = [spec[0] for spec in nodes.values()]
    ys = [spec[1] for spec in nodes.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    ax.axis("off")
    return ax


def plot_roofline(ax, bandwidth, peaks, points=(), intensity_range=(0.05, 2000.0)):
    """The roofline model: attainable FLOP/s = min(peak, bandwidth * intensity), log-log.

    Args:
        ax: matplotlib Axes.
        bandwidth: memory bandwidth in bytes/s.
        peaks: ``{label: FLOP/s}``, one flat roof each (say, FP32 on the CUDA
            cores and BF16 on the tensor cores).
        points: ``(label, intensity, roof)`` triples: a kernel of that
            arithmetic intensity (FLOPs per byte of memory traffic), drawn on
            the roof of ``peaks[roof]``. An optional fourth item ``(dx, dy)``
            places the label that many points from the marker (default
            ``(6, -12)``, below right; a negative ``dx`` right-aligns it).
        intensity_range: x-axis range in FLOPs/byte.

    Returns:
        ``ax``. Roofs are ``ax.lines`` in the order of ``peaks``, then the
        bandwidth diagonal; each point is one more line (a marker).
    """
    import numpy as np

    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive (bytes/s), got {bandwidth!r}")
    if not peaks or any(not v > 0 for v in peaks.values()):
        raise ValueError(f"peaks must map labels to positive FLOP/s, got {peaks!r}")
    lo, hi = intensity_range
    intensity = np.geomspace(lo, hi, 400)
    for i, (label, peak) in enumerate(peaks.items()):
        ridge = peak / bandwidth
        ax.plot(intensity, np.minimum(peak, bandwidth * intensity), color=f"C{i}",
                label=f"{label}: {peak / 1e12:.0f} TFLOP/s, ridge at {ridge:.0f} FLOP/B")
    ax.plot(intensity, bandwidth * intensity, color="0.6", linestyle=":", linewidth=1,
            label=f"memory: {bandwidth / 1e12:.2f} TB/s")
    for point in points:
        label, inten, roof = point[:3]
        dx, dy = point[3] if len(point) > 3 else (6, -12)
        if roof not in peaks:
            raise ValueError(f"point {label!r} names roof {roof!r}, not one of {list(peaks)}")
        attainable = min(peaks[roof], bandwidth * inten)
        ax.plot([inten], [attainable], marker="o", color="k", markersize=5)
        ax.annotate(label, (inten, attainable), textcoords="offset points", xytext=(dx, dy),
                    ha="right" if dx < 0 else "left", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOPs per byte moved)")
    ax.set_ylabel("attainable FLOP/s")
    ax.legend(fontsize=8, loc="upper left")
    return ax


def memory_order(shape, channels_last):
    """Channel and example of each element of an (N, C, H, W) tensor, in memory order.

    Returns two int arrays of length N*C*H*W: ``channel[i]`` and ``example[i]``
    of the element stored at offset ``i``.
    """
    import numpy as np

    if len(shape) != 4 or any(not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(f"shape must be four positive ints (N, C, H, W), got {shape!r}")
    N, C, H, W = shape
    n, c, h, w = np.meshgrid(*(np.arange(d) for d in shape), indexing="ij")
    if channels_last:
        offset = ((n * H + h) * W + w) * C + c
    else:
        offset = ((n * C + c) * H + h) * W + w
    channel = np.empty(N * C * H * W, dtype=int)
    example = np.empty_like(channel)
    channel[offset.ravel()] = c.ravel()
    example[offset.ravel()] = n.ravel()
    return channel, example


def plot_memory_order(ax, shape, channels_last, per_row=None):
    """An (N, C, H, W) tensor's elements in memory order, coloured by channel, labelled by example.

    Args:
        ax: matplotlib Axes.
        shape: (N, C, H, W), small (every element is drawn).
        channels_last: False for NCHW (contiguous), True for NHWC.
        per_row: elements per drawn row (default: all in one row).

    Returns:
        ``ax``; its patches are the elements in memory order.
    """
    from matplotlib.patches import Patch, Rectangle

    channel, example = memory_order(shape, channels_last)
    per_row = per_row or len(channel)
    for i, (c, n) in enumerate(zip(channel, example)):
        x, y = i % per_row, -(i // per_row)
        ax.add_patch(Rectangle((x, y), 0.92, 0.92, facecolor=f"C{c}", alpha=0.8))
        ax.text(x + 0.46, y + 0.46, str(n), ha="center", va="center", fontsize=7)
    rows = -(-len(channel) // per_row)
    ax.set_xlim(-0.2, per_row + 0.2)
    ax.set_ylim(-rows + 0.8, 1.1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.legend(handles=[Patch(facecolor=f"C{c}", alpha=0.8, label=f"channel {c}")
                       for c in range(shape[1])], loc="upper left", bbox_to_anchor=(1.0, 1.0),
              fontsize=8, frameon=False)
    ax.set_title(("channels-last (NHWC)" if channels_last else "contiguous (NCHW)")
                 + ": memory order, digit = example n", fontsize=9)
    return ax


BENCH_PASSES = ("forward", "backward", "eval")


def plot_bandwidth(ax, record, which, impls=("torch", "compile", "bnref"), target=None):
    """Percent of the copy bandwidth per benchmark case, from a ``benchmarks/gpu_bn.py`` record.

    Args:
        ax: matplotlib Axes.
        record: the JSON record the benchmark writes (a dict with ``results``).
        which: ``'forward'``, ``'backward'`` or ``'eval'``.
        impls: implementations to draw, one bar each per case (missing ones,
            such as ``compile`` in a dry run, are left out).
        target: draw a dashed line at this percentage.

    Returns:
        ``ax``; ``ax.containers`` holds one bar container per drawn implementation.
    """
    import numpy as np

    if which not in BENCH_PASSES:
        raise ValueError(f"which must be one of {BENCH_PASSES}, got {which!r}")
    rows = record.get("results") if isinstance(record, dict) else None
    if not isinstance(rows, list):
        raise ValueError("record must be a benchmarks/gpu_bn.py record, a dict with a 'results' "
                         f"list, got {type(record).__name__}")
    rows = [r for r in rows if r.get("pass") == which]
    if not rows:
        raise ValueError(f"record has no results for pass {which!r}")
    needed = ("shape", "format", "dtype", *(f"{i}_pct_copy" for i in impls))
    for r in rows:
        missing = [k for k in needed if k not in r]
        if missing:
            raise ValueError(f"a {which} result lacks {missing}; has {sorted(r)}")
    drawn = [i for i in impls if any(r[f"{i}_pct_copy"] is not None for r in rows)]
    x = np.arange(len(rows))
    width = 0.8 / max(len(drawn), 1)
    for j, impl in enumerate(drawn):
        pct = [np.nan if r[f"{impl}_pct_copy"] is None else r[f"{impl}_pct_copy"] for r in rows]
        ax.bar(x + (j - (len(drawn) - 1) / 2) * width, pct, width, label=impl, color=f"C{j}")
    if target is not None:
        ax.axhline(target, color="k", linestyle="--", linewidth=1, label=f"target {target:g}%")
    ax.set_xticks(x)
    short = {"float32": "fp32", "bfloat16": "bf16", "nchw": "NCHW", "channels_last": "NHWC"}
    ax.set_xticklabels(["x".join(map(str, r["shape"])) + "\n"
                        + f"{short.get(r['format'], r['format'])} "
                        + short.get(r["dtype"], r["dtype"]) for r in rows],
                       fontsize=7, rotation=90)
    ax.set_ylabel("% of copy bandwidth")
    ax.set_title(which)
    ax.legend(fontsize=8)
    return ax

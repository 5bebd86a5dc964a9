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

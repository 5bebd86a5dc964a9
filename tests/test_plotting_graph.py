"""bnref.plotting.draw_graph: one box per node, one arrow per edge, clear errors."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402

from bnref.plotting import draw_graph  # noqa: E402

NODES = {"x": (0, 0, "$x$"), "mu": (1, 1, "$\\mu$", "#e2f0d9"), "y": (2, 0, "$y$")}
EDGES = [("x", "mu"), ("x", "y", "direct"), ("mu", "y")]


def test_one_box_per_node_and_one_arrow_per_edge():
    """Boxes carry the labels given; arrows join the named boxes and stop at their outlines."""
    fig, ax = plt.subplots()
    assert draw_graph(ax, NODES, EDGES) is ax
    fig.canvas.draw()
    arrows = [t for t in ax.texts if isinstance(t, Annotation)]
    boxes = [t for t in ax.texts if not isinstance(t, Annotation) and t.get_bbox_patch()]
    assert len(arrows) == len(EDGES)
    assert sorted(b.get_text() for b in boxes) == sorted(spec[2] for spec in NODES.values())
    assert "direct" in [t.get_text() for t in ax.texts]
    # The arrow into y ends on y's box outline, not at y's centre.
    y_box = next(b for b in boxes if b.get_text() == "$y$")
    centre = ax.transData.transform(NODES["y"][:2])
    for arrow in arrows:
        if arrow.xy == NODES["y"][:2]:
            end = arrow.arrow_patch.get_path().vertices
            tip = arrow.arrow_patch.get_transform().transform(end).max(axis=0)
            left_edge = y_box.get_bbox_patch().get_window_extent().x0
            assert tip[0] <= left_edge + 1.0 < centre[0], "arrow tip should stop at the box outline"
    plt.close(fig)


def test_bad_node_and_edge_raise_valueerror_naming_them():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match=r"nodes\['x'\] must be \(x, y, label"):
        draw_graph(ax, {"x": (0, 0)}, [])
    with pytest.raises(ValueError, match=r"names 'z', expected one of \['mu', 'x', 'y'\]"):
        draw_graph(ax, NODES, [("x", "z")])
    plt.close(fig)

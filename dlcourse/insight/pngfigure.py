"""A matplotlib Figure that shows itself in Jupyter as a PNG, without pyplot or a backend.

dlcourse draws with matplotlib's object-oriented API (no pyplot state, no display), so its
figures are not known to a notebook's matplotlib integration; `_repr_png_` is how IPython
displays any object as a picture. Imported only when a figure is drawn (matplotlib: 0.3 s).
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure


class PngFigure(Figure):
    """A Figure that a notebook displays as its PNG (the last expression of a cell)."""

    def _repr_png_(self) -> bytes:
        return png_bytes(self)


def png_bytes(figure: Figure) -> bytes:
    """The figure rendered as a PNG file's bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()

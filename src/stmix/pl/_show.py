"""Showing, saving or returning a figure, the scanpy way."""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from stmix._io import atomic_file


def finish(fig: Figure, *, show: bool | None, save: str | os.PathLike | None) -> Figure | None:
    """Save when ``save`` is given; return the figure when ``show=False``, else show it."""
    if save is not None:
        with atomic_file(save) as temporary:  # a failed save leaves no half-written file
            fig.savefig(temporary, dpi=150, bbox_inches="tight")
    if show is False:
        return fig
    if show or save is None:
        plt.show()
    plt.close(fig)
    return None

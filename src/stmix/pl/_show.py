"""Showing, saving or returning a figure, the scanpy way."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def finish(fig: Figure, *, show: bool | None, save: str | os.PathLike | None) -> Figure | None:
    """Save when ``save`` is given; return the figure when ``show=False``, else show it."""
    if save is not None:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save, dpi=150, bbox_inches="tight")
    if show is False:
        return fig
    if show or save is None:
        plt.show()
    plt.close(fig)
    return None

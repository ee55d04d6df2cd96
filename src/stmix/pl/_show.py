"""Showing, saving or returning a figure, the scanpy way."""

from __future__ import annotations

import os
import warnings

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from stmix._io import atomic_file


def finish(fig: Figure, *, show: bool | None, save: str | os.PathLike | None) -> Figure | None:
    """Save when ``save`` is given; return the figure when ``show=False``, else show it.

    As in scanpy, a shown figure that was not saved stays the current figure, so a
    ``plt.savefig`` that follows in a script saves it; a saved one is closed.
    """
    if save is not None:
        with atomic_file(save) as temporary:  # a failed save leaves no half-written file
            fig.savefig(temporary, dpi=150, bbox_inches="tight")
    if show is False:
        return fig
    if show or save is None:
        with warnings.catch_warnings():  # Agg (scripts, CI) cannot show: not worth a warning
            warnings.filterwarnings("ignore", message=".*non-interactive.*", category=UserWarning)
            plt.show()
    if save is not None:
        plt.close(fig)
    return None

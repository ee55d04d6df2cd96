from __future__ import annotations

import numpy as np

from stmix.pp import _rings


def test_rings_on_the_three_layouts(her2st, mouse_brain):
    square = _rings.rings(her2st("C2"), 1)
    assert square.grid == "square"
    assert (square.index >= 0).sum(axis=1).max() == 8  # interior spots: 8 around
    knn = _rings.rings(mouse_brain, 2)  # the crop has no array coordinates
    assert knn.grid == "knn" and (knn.ring == 1).sum(axis=1).max() == 6
    # Visium array coordinates from the crop's pixel lattice (rows 119.7 px, half-pitch 68.7 px)
    xy = mouse_brain.obsm["spatial"].astype(float)
    mouse_brain.obs["array_row"] = np.round((xy[:, 1] - xy[:, 1].min()) / 119.7).astype(int)
    mouse_brain.obs["array_col"] = np.round((xy[:, 0] - xy[:, 0].min()) / 68.75).astype(int)
    hexagonal = _rings.rings(mouse_brain, 2)
    assert hexagonal.grid == "hexagonal"
    counts = [(hexagonal.ring[i] == r).sum() for i in range(mouse_brain.n_obs) for r in (1, 2)]
    assert max(counts[0::2]) == 6 and max(counts[1::2]) == 12
    # ring 1 of a Visium spot is at one pitch, ring 2 farther
    spot = int(np.argmax([(hexagonal.ring[i] == 1).sum() for i in range(mouse_brain.n_obs)]))
    near = hexagonal.index[spot][hexagonal.ring[spot] == 1]
    far = hexagonal.index[spot][hexagonal.ring[spot] == 2]
    assert (
        np.linalg.norm(xy[near] - xy[spot], axis=1).max()
        < np.linalg.norm(xy[far] - xy[spot], axis=1).min()
    )
    # KNN rings match the hexagonal ones where the lattice is complete
    assert set(knn.index[spot][knn.ring[spot] == 1]) == set(near)
